"""The generator interface every notebook uses, and the conversion of its images to uint8."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def to_uint8(images: Tensor | np.ndarray) -> np.ndarray:
    """Generator output [B, 3, H, W] in [-1, 1] (tensor or array) -> uint8 [B, H, W, 3], rounded to the nearest
    level."""
    images = torch.as_tensor(images).detach().float().cpu()
    return images.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()


class Generator(nn.Module):
    """A latent-to-image generator: ``G(z)`` gives images in [-1, 1] of shape [B, 3, R, R].

    Subclasses set ``dim_z`` and ``resolution``, keep their constructor arguments in ``config``
    (so a checkpoint can rebuild them) and implement ``forward`` and ``features``.
    """

    dim_z: int
    resolution: int
    config: dict[str, Any]

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def sample_z(self, n: int, seed: int | None = None) -> Tensor:
        """n latent codes from N(0, I) on the model's device; a seed makes them repeatable on any device."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, self.dim_z, generator=gen).to(self.device)

    def features(self, z: Tensor, until: str | None = None) -> OrderedDict[str, Tensor]:
        """Named intermediate maps from low to high resolution, plus the image under ``"image"``; with ``until``
        the maps up to that one only."""
        raise NotImplementedError

    def shifted(self, z: Tensor, shift: Tensor) -> Tensor:
        """G(z + shift): the shift is applied in the raw latent space before any split."""
        return self(z + shift)

    def render(self, z: Tensor, noise_seeds: Sequence[int]) -> Tensor:
        """G(z) with sample i's per-pixel noise drawn from ``noise_seeds[i]``, so that two calls with the same
        seeds differ only through z. Generators without noise (BigGAN) ignore the seeds."""
        return self(z)

    def shift_coordinates(self, z: Tensor) -> Tensor:
        """Where shifts add up for latents z: z itself here; a wrapper that shifts elsewhere maps z there."""
        return z

    def render_shifted(self, z: Tensor, shift: Tensor, noise_seeds: Sequence[int]) -> Tensor:
        """G(z + shift) with sample i's noise drawn from ``noise_seeds[i]``, the shifted twin of ``render``."""
        return self.render(z + shift, noise_seeds)

    def shift_renderer(self, z: Tensor, noise_seeds: Sequence[int]) -> Callable[[Tensor | None], Tensor]:
        """A function of a shift (None: no shift) giving `render_shifted` (`render`) of these latents: for scoring
        many shifts of the same latents, where a subclass can compute what all of them share once."""

        def render(shift: Tensor | None) -> Tensor:
            return self.render(z, noise_seeds) if shift is None else self.render_shifted(z, shift, noise_seeds)

        return render

    def pair(self, z: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and G(z + shift) from one batched forward, each sample with the same noise in both halves,
        so that the difference between them is the effect of the shift alone."""
        return self(torch.cat([z, z + shift])).chunk(2)


# On a CPU the generator forward runs 2-3x faster per image in chunks of 16 latents (32 images) than in
# batches of 128 or more, whose activations outgrow the caches (benchmarks/generator_forward.py --chunks).
CPU_LATENT_CHUNK = 16


def require_eval(G: Generator) -> None:
    """The reference runs G in eval mode only (stored BN statistics, frozen spectral-norm vectors)."""
    if G.training:
        raise ValueError("the generator must be in eval mode: call G.eval() first")


def forward_chunk(G: Generator, n: int) -> int:
    """How many of n latents to put through G in one forward: `CPU_LATENT_CHUNK` on a CPU, all of them elsewhere."""
    return CPU_LATENT_CHUNK if G.device.type == "cpu" else max(n, 1)


def prefer_channels_last(G: Generator) -> Generator:
    """On a CPU, stores G's weights channels-last (in place): its small convolutions then run about 2x faster.

    Outputs change only by float rounding (about 1e-5); on other devices G is returned unchanged.
    """
    if G.device.type == "cpu":
        G.to(memory_format=torch.channels_last)
    return G
