"""Self-training (beyond the paper): a U-Net trained on synthetic pairs labels fresh generated images, the
synthetic-mask filters keep the labels they trust, and a new U-Net of the same size learns from those pairs.

The background direction gives usable masks on few images (on the default StyleGAN2 about 15 % pass every filter),
and those are biased towards plain backgrounds; a trained U-Net gives a mask for every image, so its filtered masks
cover more of the generator's images. Labels still come from no annotation: the teacher saw synthetic pairs only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from helpers.direction_masks.synthesis import MaskRules, SynthesisResult, filter_masks
from helpers.gans.base import CPU_LATENT_CHUNK, Generator, forward_chunk, require_eval, to_uint8
from helpers.segmentation import images_to_input, predict_proba

TEACHER_BATCH = 4 * CPU_LATENT_CHUNK  # images per teacher forward; also the parts labelled between checks on a CPU


class TeacherPairs:
    """(image, mask) pairs from a teacher U-Net: mask = teacher probability >= 0.5 on a fresh G(z), filtered by
    ``rules``.

    Of the rules, the connected-components cleaning, the area filter, GrabCut refinement and the consistency and
    border filters apply (the maxes filter needs a shifted image and does not). With ``min_consistency = 0`` an
    empty teacher mask passes, as an empty reference mask does. ``shard(i, n)`` depends on (seed, i, n) only, so
    `helpers.segmentation.write_shards` can resume it.
    """

    def __init__(
        self,
        G: Generator,
        teacher: nn.Module,
        rules: MaskRules = MaskRules(),
        seed: int = 0,
        draw: int = 256,
        max_tries: int = 100,
    ):
        require_eval(G)
        self.G, self.teacher, self.rules, self.seed = G, teacher, rules, seed
        self.draw, self.max_tries = draw, max_tries
        self.n_generated = self.n_kept = 0

    @torch.no_grad()
    def label(self, z: Tensor, noise_seeds: list[int]) -> SynthesisResult:
        """G(z) and the filtered teacher masks of latents z [B, dim_z] (sample i's generator noise from
        noise_seeds[i])."""
        z = z.to(self.G.device)
        chunk = forward_chunk(self.G, len(z))
        images = torch.cat(
            [
                self.G.render(part, noise_seeds[i : i + chunk])
                for i, part in zip(range(0, len(z), chunk), z.split(chunk))
            ]
        )
        # the teacher sees the images as stored in the shards (uint8), as it saw its own training pairs
        masks = predict_proba(self.teacher, images_to_input(to_uint8(images)), batch_size=TEACHER_BATCH) >= 0.5
        return filter_masks(images, masks.to(images.device), self.rules)

    def _draws(self, gen: torch.Generator) -> Iterator[tuple[Tensor, list[int]]]:
        """Up to ``max_tries`` draws of ``draw`` latents and noise seeds, each labelled in parts between two checks
        for a full shard: on a CPU `TEACHER_BATCH` latents, a whole number of generator chunks and one teacher
        batch, so the labels are those of the whole draw; elsewhere the whole draw."""
        for _ in range(self.max_tries):
            z = torch.randn(self.draw, self.G.dim_z, generator=gen)
            seeds = torch.randint(2**31, (self.draw,), generator=gen).tolist()
            part = max(forward_chunk(self.G, self.draw), TEACHER_BATCH)
            for start in range(0, self.draw, part):
                yield z[start : start + part], seeds[start : start + part]

    def shard(self, shard_index: int, n: int) -> dict[str, np.ndarray]:
        """``n`` kept pairs for HDF5 shard ``shard_index`` (uint8 images and masks, float32 z), drawing until enough
        pass; the latents after the one that completes the shard are not labelled."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + shard_index)
        images, masks, latents = [], [], []
        count = generated = 0
        for z, seeds in self._draws(gen):
            result = self.label(z, seeds)
            keep = result.keep.cpu()
            images.append(to_uint8(result.images[keep]))
            masks.append(result.masks[keep].byte().cpu().numpy())
            latents.append(z[keep].numpy())
            generated += len(z)
            count += int(keep.sum())
            if count >= n:
                break
        self.n_generated += generated
        self.n_kept += count
        if count < n:
            raise RuntimeError(
                f"self-training kept {count} of the {n} pairs needed after {generated} generated images: "
                f"the teacher's masks fail the filters ({self.rules})"
            )
        return {
            "images": np.concatenate(images)[:n],
            "masks": np.concatenate(masks)[:n],
            "z": np.concatenate(latents)[:n].astype(np.float32),
        }
