"""Image → latent encoder for a generator, trained by regression on (G(z), z) pairs.

The default BigGAN has no BigBiGAN encoder, so embedding extraction uses this one: a small ResNet-like
CNN trained on generated images to predict the z that made them (MSE in z space). It generalises to
real domain images to the extent that the generator covers them; ``reconstruction_error`` measures
that on real images through G(E(x)).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.core.io import load_checkpoint, save_torch
from helpers.gans.base import Generator, weights_fingerprint


class _DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.norm1, self.norm2 = nn.GroupNorm(8, c_out), nn.GroupNorm(8, c_out)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        h = F.leaky_relu(self.norm2(self.conv2(h)), 0.2)
        return F.avg_pool2d(h + self.skip(x), 2)


class LatentEncoder(nn.Module):
    """CNN from images in [-1, 1] (any size, resized to ``resolution``) to latent codes of size ``dim_z``."""

    def __init__(self, dim_z: int, resolution: int = 64, ch: int = 16, max_ch: int = 128):
        super().__init__()
        self.config: dict[str, Any] = dict(dim_z=dim_z, resolution=resolution, ch=ch, max_ch=max_ch)
        self.dim_z, self.resolution = dim_z, resolution
        n_down = int(math.log2(resolution)) - 2
        widths = [min(ch * 2**i, max_ch) for i in range(n_down + 1)]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.blocks = nn.Sequential(*[_DownBlock(a, b) for a, b in zip(widths, widths[1:])])
        self.head = nn.Linear(widths[-1] * 16, dim_z)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False
            )
        return self.head(self.blocks(self.stem(x)).flatten(1))


def train_encoder(
    generator: Generator,
    encoder: LatentEncoder,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> list[float]:
    """Fits the encoder to predict z from G(z) (G frozen, eval mode); returns the loss per step.

    With ``run_dir``, the state is checkpointed atomically every ``checkpoint_every`` steps to
    ``run_dir/encoder_<key>.pt``, the key a hash of the settings and the generator's weights: a call with the same
    ones continues (bit-exactly on a CPU) or, when finished, returns at once; other settings or a retrained
    generator start a new file and leave the old one.
    """
    generator.eval().requires_grad_(False)
    encoder.train()
    opt = torch.optim.Adam(encoder.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "encoder": encoder.config,
        "generator": weights_fingerprint(generator),
    }
    losses: list[float] = []
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    checkpoint = None if run_dir is None else Path(run_dir) / f"encoder_{key}.pt"
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["rng"])
        losses = state["losses"]

    def save() -> None:
        if checkpoint is not None:
            save_torch(
                {
                    "settings": settings,
                    "encoder": encoder.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": gen.get_state(),
                    "losses": losses,
                },
                checkpoint,
            )

    for _ in tqdm(
        range(len(losses), steps), desc="training encoder", initial=len(losses), total=steps, disable=not progress
    ):
        z = torch.randn(batch_size, generator.dim_z, generator=gen).to(generator.device)
        with torch.no_grad():
            x = generator(z)
        loss = F.mse_loss(encoder(x), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if len(losses) % checkpoint_every == 0 or len(losses) == steps:
            save()
    return losses


@torch.no_grad()
def reconstruction_error(generator: Generator, encoder: LatentEncoder, images: Tensor, batch_size: int = 64) -> float:
    """Mean squared error between images in [-1, 1] and G(E(images))."""
    encoder.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(generator.device)
        total += F.mse_loss(generator(encoder(x)), x, reduction="sum").item()
    return total / images.numel()
