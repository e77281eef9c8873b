"""Sample quality without pretrained networks: ProGAN's multi-scale sliced Wasserstein distance (SWD).

Both image sets are decomposed into Laplacian pyramids (5x5 binomial filter) down to 16 px. At each
level, 7x7x3 patches are drawn at random positions (128 per image), normalised per channel within the
set, and compared with the sliced Wasserstein distance over random unit directions (4 repeats of 128).
Values are reported x1e3 as in ProGAN; lower is closer, and real-vs-real gives the noise floor.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from helpers.gans.base import Generator

PATCH, PATCHES_PER_IMAGE, MIN_LEVEL = 7, 128, 16
DIRECTIONS, REPEATS = 128, 4


def _binomial_kernel(channels: int) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k2 = torch.outer(k, k) / 256
    return k2.expand(channels, 1, 5, 5).contiguous()


def laplacian_pyramid(x: Tensor) -> list[Tensor]:
    """Levels from full resolution down to MIN_LEVEL; the last one is the blurred image itself."""
    kernel = _binomial_kernel(x.size(1))
    levels = []
    while x.size(-1) > MIN_LEVEL:
        small = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.size(1))[..., ::2, ::2]
        up = F.interpolate(small, scale_factor=2, mode="nearest")
        up = F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.size(1))
        levels.append(x - up)
        x = small
    return levels + [x]


def _patches(level: Tensor, gen: torch.Generator) -> Tensor:
    """PATCHES_PER_IMAGE random 7x7 patches per image, flattened: [N * P, 3 * 49]."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=gen)
    xs = torch.randint(0, w - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=gen)
    offsets = torch.arange(PATCH)
    rows = (ys[..., None] + offsets)[..., :, None].expand(-1, -1, PATCH, PATCH)
    cols = (xs[..., None] + offsets)[..., None, :].expand(-1, -1, PATCH, PATCH)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # [N, P, 7, 7, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(n * PATCHES_PER_IMAGE, -1)


def _normalise(desc: Tensor) -> Tensor:
    per_channel = desc.view(len(desc), 3, -1)
    mean = per_channel.mean(dim=(0, 2), keepdim=True)
    std = per_channel.std(dim=(0, 2), keepdim=True)
    return ((per_channel - mean) / std).view(len(desc), -1)


def _sliced_wasserstein(a: Tensor, b: Tensor, gen: torch.Generator) -> float:
    results = []
    for _ in range(REPEATS):
        dirs = torch.randn(a.size(1), DIRECTIONS, generator=gen)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values
        results.append((pa - pb).abs().mean().item())
    return float(np.mean(results))


def to_float_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 NHWC (as stored in the splits) or float NCHW in [-1, 1] → float NCHW in [-1, 1] on CPU."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return images.detach().float().cpu()


def swd(images_a: np.ndarray | Tensor, images_b: np.ndarray | Tensor, seed: int = 0) -> dict[str, float]:
    """SWD x1e3 per pyramid level (``"64px"``, ``"32px"``, ...) and their mean ``"mean"``; sets of equal size."""
    a, b = to_float_images(images_a), to_float_images(images_b)
    if a.shape != b.shape:
        raise ValueError(f"both sets need the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for la, lb in zip(laplacian_pyramid(a), laplacian_pyramid(b)):
        da, db = _normalise(_patches(la, gen)), _normalise(_patches(lb, gen))
        out[f"{la.size(-1)}px"] = 1e3 * _sliced_wasserstein(da, db, gen)
    out["mean"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def generate(model: Generator, n: int, seed: int = 0, batch_size: int = 64) -> Tensor:
    """n images of an eval-mode generator as float NCHW in [-1, 1] on CPU (deterministic for a seed)."""
    z = model.sample_z(n, seed)
    with torch.random.fork_rng(devices=[]):  # StyleGAN2 noise comes from the global generator
        torch.manual_seed(seed)
        return torch.cat([model(chunk).clamp(-1, 1).cpu() for chunk in _chunks(z, batch_size)])


def _chunks(x: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, len(x), size):
        yield x[start : start + size]


def swd_table(
    generators: dict[str, Generator], real: np.ndarray, reference: np.ndarray, seed: int = 0
) -> dict[str, dict[str, float]]:
    """SWD of each generator's samples, and of ``reference`` real images, against ``real`` (same count)."""
    table = {"real vs real": swd(reference, real, seed)}
    for name, model in generators.items():
        table[name] = swd(generate(model, len(real), seed), real, seed)
    return table
