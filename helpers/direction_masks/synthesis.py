"""Synthetic (image, mask) pairs from a generator and a background direction, with the reference rules.

A latent ``z`` gives the image ``G(z)`` and the shifted image ``G(z + r h)``, where ``h`` is a latent
direction that darkens the background and lightens the object (BigBiGAN: the released
``bg_direction.pth``, r = 5). The shift is added to the raw latent before any split. The rules follow
the reference mask generator of "Big GANs Are Watching You" (docs/reference.md#mask-synthesis):

* **Gray level** ``gray(x) = 0.2989 R + 0.5870 G + 0.1140 B``, computed on the [-1, 1] images.
* **Mask** (1 = foreground). Rule ``"lighting"`` (the default): pixels that got strictly brighter,
  ``gray(G(z)) < gray(G(z + r h))``. Rule ``"mean_thr"``: pixels of the shifted image strictly above
  that image's mean gray level.
* **Connected components** (on by default): 8-connected components of each mask; a component stays
  iff its area divided by the largest component's area of the same mask is strictly above 0.2.
* **Area filter**: a sample is kept iff the foreground fraction of its (cleaned) mask is strictly
  below 0.5. There is no lower bound, so an empty mask passes.
* **Maxes (bimodality) filter** (on by default), on the shifted image: a 12-bin ``torch.histc`` over
  [-1, 1] of all three channels together, smoothed by window sums of width 3 (zero padding), must
  have at least two local maxima, where bin i counts as a maximum iff it is >= each existing
  neighbour (the end bins have one neighbour). Ties count, so a run of empty bins is a plateau of
  maxima: an image that leaves part of [-1, 1] empty usually passes.
* **Refinement** (off by default; beyond the reference): ``refine="grabcut"`` re-fits each kept mask to
  its own image with GrabCut (the mask as probable foreground, the rest as probable background). The
  filters' verdicts stay those of the reference masks.
* **Consistency filter** (off by default; beyond the reference): ``min_consistency=t`` keeps a sample only
  if its mask and that re-fit agree with IoU >= t: masks that GrabCut would move or empty (and empty masks)
  are dropped rather than trained on.
* **Border filter** (off by default; beyond the reference): ``max_border=t`` keeps a sample only if its mask (the
  one the pair carries, after any refinement) covers at most a fraction t of the image's frame, the ring of
  outermost pixels. It is the boundary prior of salient-object detection: a background region usually runs
  into the frame, an object rarely covers much of it.

`synthesize` applies the rules to a whole batch: one generator forward on ``cat([z, z + r h])`` (``G.pair``),
every rule on the generator's device, and one host round trip for the connected components (all
masks labelled in a single call). `synthesize_per_image` is the literal per-sample procedure, kept as
the correctness and speed baseline (`apply_rules_per_image` is its rules part). `MaskSynthesizer`
draws latents (N(0, I), or rows of an embeddings array plus optional Gaussian noise) and refills
until a batch of survivors is complete.
The batched generator forward rounds differently from per-sample forwards (batch-size dependent
matrix kernels, about 1e-6), so the two paths agree bit for bit on the rules given the same images,
and up to rare near-tie pixels end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from helpers.core.manifest import sha256_file
from helpers.core.modules import weights_fingerprint
from helpers.direction_masks.direction_files import as_direction
from helpers.gans.base import (
    CPU_LATENT_CHUNK,
    Generator,
    forward_chunk,
    prefer_channels_last,
    require_eval,
    to_uint8,
)
from helpers.segmentation.grabcut import grabcut_agreement
from helpers.segmentation.sources import arrays_digest

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
HIST_BINS = 12
HIST_RANGE = (-1.0, 1.0)
MIN_MAXIMA = 2
COMPONENT_RATIO = 0.2
# Latents synthesised between two checks for a full batch on a CPU: a whole number of generator chunks, so that
# stopping early changes no survivor, and enough masks per GrabCut call to keep both of its threads busy.
STOP_CHUNK = 8 * CPU_LATENT_CHUNK
# 8-connectivity inside each plane of a [B, H, W] stack, no connection between planes.
STACK_STRUCTURE = np.pad(np.ones((1, 3, 3), dtype=bool), ((1, 1), (0, 0), (0, 0)))

Rule = Literal["lighting", "mean_thr"]
Refinement = Literal["none", "grabcut"]


@dataclass(frozen=True)
class MaskRules:
    """The synthesis settings: shift magnitude, mask rule and which filters run (reference defaults)."""

    r: float = 5.0
    rule: Rule = "lighting"
    max_fraction: float = 0.5
    maxes_filter: bool = True
    connected_components: bool = True
    refine: Refinement = "none"
    min_consistency: float = 0.0
    max_border: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in ("lighting", "mean_thr"):
            raise ValueError(f"rule must be 'lighting' or 'mean_thr', got {self.rule!r}")
        if self.refine not in ("none", "grabcut"):
            raise ValueError(f"refine must be 'none' or 'grabcut', got {self.refine!r}")
        if not 0.0 <= self.min_consistency <= 1.0:
            raise ValueError(f"min_consistency must lie in [0, 1], got {self.min_consistency}")
        if not 0.0 <= self.max_border <= 1.0:
            raise ValueError(f"max_border must lie in [0, 1], got {self.max_border}")


@dataclass(frozen=True)
class SynthesisResult:
    """Images G(z), masks (long {0, 1}) and per-sample filter verdicts for a batch of latents.

    ``consistent_ok`` is None unless the consistency filter ran (``MaskRules.min_consistency > 0``),
    ``border_ok`` unless the border filter did (``MaskRules.max_border < 1``).
    """

    images: Tensor
    masks: Tensor
    area_ok: Tensor
    maxes_ok: Tensor
    consistent_ok: Tensor | None = None
    border_ok: Tensor | None = None

    @property
    def keep(self) -> Tensor:
        """Samples that pass every filter."""
        keep = self.area_ok & self.maxes_ok
        for verdict in (self.consistent_ok, self.border_ok):
            if verdict is not None:
                keep = keep & verdict
        return keep


class SyntheticBatch(NamedTuple):
    """A training batch: images [b, 3, R, R] in [-1, 1], masks [b, R, R] long {0, 1}, and their latents."""

    images: Tensor
    masks: Tensor
    z: Tensor


def gray(x: Tensor) -> Tensor:
    """Gray level [B, H, W] of RGB images [B, 3, H, W] with the reference weights, on the raw value range."""
    return GRAY_WEIGHTS[0] * x[:, 0] + GRAY_WEIGHTS[1] * x[:, 1] + GRAY_WEIGHTS[2] * x[:, 2]


def raw_masks(images: Tensor, shifted: Tensor, rule: Rule = "lighting") -> Tensor:
    """Boolean masks [B, H, W] before cleaning: brighter after the shift, or above the shifted image's mean."""
    if rule == "lighting":
        return gray(images) < gray(shifted)
    if rule == "mean_thr":
        level = gray(shifted)
        return level > level.mean(dim=(1, 2), keepdim=True)
    raise ValueError(f"rule must be 'lighting' or 'mean_thr', got {rule!r}")


def components_filter(masks: Tensor) -> Tensor:
    """Drops small 8-connected components of every mask (area / largest area <= 0.2), one CPU round trip."""
    stack = masks.to("cpu", torch.bool).numpy()
    labels, n = ndimage.label(stack, structure=STACK_STRUCTURE)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    image_of = np.zeros(n + 1, dtype=np.int64)
    image_of[labels] = np.arange(len(stack))[:, None, None]
    largest = np.zeros(len(stack), dtype=np.int64)
    np.maximum.at(largest, image_of[1:], areas[1:])
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = areas[1:] / largest[image_of[1:]] > COMPONENT_RATIO
    return torch.from_numpy(keep[labels]).to(masks.device)


def refine_kept(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """GrabCut on the masks of the samples that pass the reference filters, when the rules ask for it.

    ``refine="grabcut"`` replaces those masks by their re-fits; ``min_consistency > 0`` also drops the samples
    whose mask and re-fit agree with IoU below it (the consistency filter). The reference verdicts stay.
    """
    if rules.refine == "none" and rules.min_consistency == 0:
        return result
    keep = result.keep
    masks = result.masks.clone()
    consistent = torch.ones_like(keep) if rules.min_consistency > 0 else None
    if keep.any():
        refined, agreement = grabcut_agreement(to_uint8(result.images[keep]), masks[keep].bool().cpu().numpy())
        if rules.refine == "grabcut":
            masks[keep] = torch.from_numpy(refined).to(masks)
        if consistent is not None:
            consistent[keep] = torch.from_numpy(agreement >= rules.min_consistency).to(keep.device)
    return replace(result, masks=masks, consistent_ok=consistent)


def border_fraction(masks: Tensor) -> Tensor:
    """Per-mask fraction [B] of the image frame (the ring of outermost pixels) that the mask covers."""
    m = masks.bool()
    frame = torch.cat([m[:, 0], m[:, -1], m[:, 1:-1, 0], m[:, 1:-1, -1]], dim=1)
    return frame.float().mean(1)


def check_border(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """The border filter on the masks the samples carry (after any refinement), when the rules ask for it."""
    if rules.max_border >= 1:
        return result
    return replace(result, border_ok=border_fraction(result.masks) <= rules.max_border)


def beyond_reference(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """The steps after the reference filters, in order: refinement and the consistency filter, then the border
    filter on the masks the samples then carry."""
    return check_border(refine_kept(result, rules), rules)


def area_ok(masks: Tensor, max_fraction: float = 0.5) -> Tensor:
    """Per-mask verdict [B]: foreground fraction strictly below ``max_fraction`` (no lower bound)."""
    fraction = masks.flatten(1).sum(1).double() / masks[0].numel()
    return fraction < max_fraction


def histogram_counts(images: Tensor) -> Tensor:
    """Per-image 12-bin counts [B, 12] over [-1, 1] of all channels, equal to ``torch.histc`` of each image.

    Same arithmetic as histc: bin = trunc((x - min) * bins / (max - min)) in the input dtype, x == max
    goes to the last bin, values outside [min, max] (and NaN) are not counted.
    """
    low, high = HIST_RANGE
    flat = images.flatten(1)
    inside = (flat >= low) & (flat <= high)
    index = ((flat - low) * HIST_BINS / (high - low)).long().clamp_(max=HIST_BINS - 1)
    index = torch.where(inside, index, HIST_BINS)  # a spare bin for values that are not counted
    counts = torch.zeros(len(flat), HIST_BINS + 1, dtype=torch.long, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts[:, :HIST_BINS]


def count_maxima(counts: Tensor) -> Tensor:
    """Number of non-strict local maxima [B] of the width-3 window sums of integer histograms [B, bins]."""
    padded = F.pad(counts, (1, 1))
    smooth = padded[:, :-2] + counts + padded[:, 2:]
    edged = F.pad(smooth, (1, 1), value=-1)  # an end bin has only one neighbour
    return ((smooth >= edged[:, :-2]) & (smooth >= edged[:, 2:])).sum(1)


def maxes_ok(shifted: Tensor) -> Tensor:
    """Per-image verdict [B]: the smoothed histogram of the shifted image has at least two maxima."""
    return count_maxima(histogram_counts(shifted)) >= MIN_MAXIMA


def apply_rules(images: Tensor, shifted: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """Masks and filter verdicts for a batch of images and their shifted versions, vectorised over the batch."""
    bimodal = maxes_ok(shifted) if rules.maxes_filter else None
    return filter_masks(images, raw_masks(images, shifted, rules.rule), rules, bimodal)


def filter_masks(
    images: Tensor, masks: Tensor, rules: MaskRules = MaskRules(), bimodal: Tensor | None = None
) -> SynthesisResult:
    """The mask filters of ``rules`` on masks [B, H, W] of ``images`` [B, 3, H, W], from a shift or from elsewhere
    (a segmentation model's, for self-training): components, area, then refinement and the consistency and
    border filters. ``bimodal`` is the maxes filter's verdict, which needs the shifted images (None: all pass)."""
    if rules.connected_components:
        masks = components_filter(masks)
    fits = area_ok(masks, rules.max_fraction)
    bimodal = torch.ones_like(fits) if bimodal is None else bimodal
    return beyond_reference(SynthesisResult(images, masks.long(), fits, bimodal), rules)


@torch.no_grad()
def synthesize(G: Generator, z: Tensor, direction: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """Masks and verdicts for latents z [B, dim_z] without refilling: one generator forward for both images
    (in chunks of `CPU_LATENT_CHUNK` latents on a CPU)."""
    require_eval(G)
    z = z.to(G.device)
    shift = rules.r * as_direction(direction, G.dim_z).to(z)
    chunk = forward_chunk(G, len(z))
    images, shifted = (torch.cat(parts) for parts in zip(*(G.pair(part, shift) for part in z.split(chunk))))
    return apply_rules(images, shifted, rules)


def _cpu_generator(rng: int | torch.Generator | None) -> torch.Generator:
    """A CPU torch.Generator: the one given, one seeded with the given int, or one seeded at random."""
    if isinstance(rng, torch.Generator):
        return rng
    gen = torch.Generator()
    if rng is None:
        gen.seed()
    else:
        gen.manual_seed(rng)
    return gen


class _MappedFile(NamedTuple):
    """A memory-mapped .npy file, named rather than copied when a synthesizer is pickled."""

    path: str


class MaskSynthesizer:
    """Batches of (image, mask) pairs that pass the filters, from N(0, I) or from embeddings plus noise.

    ``embeddings`` is an array [N, dim_z] (a memory-mapped ``.npy`` works; only the drawn rows are read):
    z is a row drawn uniformly with replacement, plus ``z_noise`` times N(0, I). ``rng`` (a seed or a CPU
    ``torch.Generator``) makes the latents, and so the batches, repeat.
    """

    def __init__(
        self,
        G: Generator,
        direction: Tensor,
        r: float = 5.0,
        rule: Rule = "lighting",
        max_fraction: float = 0.5,
        maxes_filter: bool = True,
        connected_components: bool = True,
        refine: Refinement = "none",
        min_consistency: float = 0.0,
        max_border: float = 1.0,
        embeddings: np.ndarray | Tensor | None = None,
        z_noise: float = 0.0,
        batch_size: int = 95,
        max_tries: int = 100,
        rng: int | torch.Generator | None = None,
    ):
        require_eval(G)
        prefer_channels_last(G)
        if embeddings is not None and (embeddings.ndim != 2 or embeddings.shape[1] != G.dim_z or len(embeddings) == 0):
            raise ValueError(f"embeddings must have shape [N >= 1, {G.dim_z}], got {list(embeddings.shape)}")
        self.G = G
        self.direction = as_direction(direction, G.dim_z)
        self.rules = MaskRules(
            r, rule, max_fraction, maxes_filter, connected_components, refine, min_consistency, max_border
        )
        self.embeddings = embeddings
        self.z_noise = z_noise
        self.batch_size = batch_size
        self.max_tries = max_tries
        self.seed = rng if isinstance(rng, int) else None
        self.rng = _cpu_generator(rng)
        self.n_generated = 0
        self.n_kept = 0

    def __getstate__(self) -> dict:
        """Pickled for other processes (`helpers.core.distributed.launch`): memory-mapped embeddings by file name."""
        state = self.__dict__.copy()
        if self._mapped_file():
            state["embeddings"] = _MappedFile(str(self.embeddings.filename))
        return state

    def _mapped_file(self) -> bool:
        """Whether the embeddings are a whole memory-mapped .npy file (a slice of one is pickled as its rows)."""
        embeddings = self.embeddings
        if not isinstance(embeddings, np.memmap) or not embeddings.filename:
            return False
        whole = np.load(embeddings.filename, mmap_mode="r")
        return whole.shape == embeddings.shape and whole.offset == embeddings.offset

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["embeddings"], _MappedFile):
            state["embeddings"] = np.load(state["embeddings"].path, mmap_mode="r")
        self.__dict__.update(state)

    def sample_z(self, n: int) -> Tensor:
        """n latents on the generator's device, drawn on the CPU so a seed repeats on any device."""
        if self.embeddings is None:
            return torch.randn(n, self.G.dim_z, generator=self.rng).to(self.G.device)
        index = torch.randint(len(self.embeddings), (n,), generator=self.rng)
        if isinstance(self.embeddings, Tensor):
            rows = self.embeddings[index.to(self.embeddings.device)].cpu()
        else:
            rows = torch.from_numpy(np.asarray(self.embeddings[index.numpy()]))
        rows = rows.float()
        if self.z_noise > 0:
            rows = rows + self.z_noise * torch.randn(rows.shape, generator=self.rng)
        return rows.to(self.G.device)

    def _latent_parts(self, n: int, z: Tensor | None) -> Iterator[Tensor]:
        """Up to ``max_tries`` draws of n latents (``z`` first, if given), each in the parts synthesised between two
        checks for a full batch: on a CPU `STOP_CHUNK` latents, whose generator chunks are those of the whole draw
        (so the first n survivors are the same), elsewhere the whole draw."""
        for attempt in range(self.max_tries):
            latents = z if attempt == 0 and z is not None else self.sample_z(n)
            yield from latents.split(max(forward_chunk(self.G, len(latents)), STOP_CHUNK))

    def batch(self, batch_size: int | None = None, z: Tensor | None = None) -> SyntheticBatch:
        """``batch_size`` survivors, drawing fresh latents until enough pass (``z``, if given, is tried first); the
        latents after the one that completes the batch are not synthesised."""
        n = batch_size or self.batch_size
        kept: list[SyntheticBatch] = []
        count = rejected_area = rejected_maxes = rejected_consistency = rejected_border = generated = 0
        for latents in self._latent_parts(n, z):
            result = synthesize(self.G, latents, self.direction, self.rules)
            keep = result.keep
            kept.append(SyntheticBatch(result.images[keep], result.masks[keep], latents.to(keep.device)[keep]))
            area_out, maxes_out, passed = torch.stack([~result.area_ok, ~result.maxes_ok, keep]).sum(1).tolist()
            generated += len(keep)
            rejected_area += area_out
            rejected_maxes += maxes_out
            if result.consistent_ok is not None:
                rejected_consistency += int((~result.consistent_ok).sum())
            if result.border_ok is not None:
                rejected_border += int((~result.border_ok).sum())
            count += passed
            if count >= n:
                break
        self.n_generated += generated
        self.n_kept += count
        if count < n:
            raise RuntimeError(
                f"mask synthesis kept {count} of the {n} samples needed after {self.max_tries} tries "
                f"({generated} latents): the area filter (foreground fraction < {self.rules.max_fraction}) "
                f"rejected {rejected_area}, the maxes filter (>= {MIN_MAXIMA} histogram maxima) "
                f"rejected {rejected_maxes}"
                + (
                    f", the consistency filter (IoU with the GrabCut re-fit >= {self.rules.min_consistency}) "
                    f"rejected {rejected_consistency}"
                    if self.rules.min_consistency > 0
                    else ""
                )
                + (
                    f", the border filter (mask on <= {self.rules.max_border} of the image frame) "
                    f"rejected {rejected_border}"
                    if self.rules.max_border < 1
                    else ""
                )
            )
        return SyntheticBatch(*(torch.cat(parts)[:n] for parts in zip(*kept)))

    def batch_at(self, step: int, batch_size: int | None = None) -> SyntheticBatch:
        """The batch of training step ``step``, from latents seeded by (seed, step): a resumed run sees the same
        data."""
        return self._seeded(self._seed() * 1_000_003 + step, batch_size)

    def part(self, step: int, rank: int, world_size: int) -> tuple[Tensor, Tensor]:
        """Rank ``rank``'s (images, masks) of training step ``step`` under torchrun: batch_size / world_size pairs
        of its own, from latents seeded by (seed, step, rank, world_size), so each rank synthesises only its share
        of the global batch (other latents than one process draws, from the same distribution)."""
        if self.batch_size % world_size:
            raise ValueError(f"a batch of {self.batch_size} cannot be split evenly over {world_size} processes")
        seed = int(np.random.SeedSequence([self._seed(), step, rank, world_size]).generate_state(1)[0])
        images, masks, _ = self._seeded(seed, self.batch_size // world_size)
        return images, masks

    def _seed(self) -> int:
        if self.seed is None:
            raise ValueError("repeatable batches need a synthesizer created with an integer seed (rng=<int>)")
        return self.seed

    def _seeded(self, seed: int, batch_size: int | None) -> SyntheticBatch:
        """A batch from latents drawn from ``seed``, and with the generator's own randomness (StyleGAN2's noise
        maps) drawn from it too, whatever the global RNG's state: the same in a resumed run or another process."""
        saved, self.rng = self.rng, torch.Generator().manual_seed(seed)
        devices = [self.G.device] if self.G.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                return self.batch(batch_size)
        finally:
            self.rng = saved

    def __call__(self, step: int) -> tuple[Tensor, Tensor]:
        """(images, masks) of training step ``step``: the batch-source protocol of ``helpers.segmentation``."""
        images, masks, _ = self.batch_at(step)
        return images, masks

    def record(self) -> dict:
        """What determines the batches (`helpers.segmentation.sources.source_record`): generator weights, direction,
        rules, latent source, seed and batch size."""
        embeddings = self.embeddings
        if self._mapped_file():  # named and hashed, not held in memory
            path = str(embeddings.filename)
            embeddings = {"file": path, "shape": list(embeddings.shape), "sha256": sha256_file(path)}
        elif embeddings is not None:
            embeddings = arrays_digest(np.asarray(embeddings.cpu() if isinstance(embeddings, Tensor) else embeddings))
        return {
            "generator": weights_fingerprint(self.G),
            "direction": arrays_digest(self.direction.cpu().numpy()),
            "rules": asdict(self.rules),
            "embeddings": embeddings,
            "z_noise": self.z_noise,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def shard(self, shard_index: int, n: int) -> dict[str, np.ndarray]:
        """``n`` pairs for HDF5 shard ``shard_index`` (uint8 images and masks, float32 z), repeatable per shard."""
        images, masks, z = self.batch_at(shard_index, n)
        return {"images": to_uint8(images), "masks": masks.byte().cpu().numpy(), "z": z.float().cpu().numpy()}

    def __iter__(self) -> Iterator[SyntheticBatch]:
        """An endless stream of batches of the default size."""
        while True:
            yield self.batch()
