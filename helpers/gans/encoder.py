"""Image → latent encoder for a generator, trained by regression on (G(z), z) pairs.

The default BigGAN has no BigBiGAN encoder, so embedding extraction uses this one: a small ResNet-like
CNN trained on generated images to predict the z that made them (MSE in z space). It generalises to
real domain images to the extent that the generator covers them; ``reconstruction_error`` measures
that on real images through G(E(x)).
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.core.modules import weights_fingerprint
from helpers.core.runs import RunFolder, settings_tag
from helpers.gans.base import Generator


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

    With ``run_dir``, the run lives in the run folder ``run_dir/encoder_<settings_tag>`` (`helpers.core.runs`),
    named after the settings and the generator's weights: ``checkpoint.pt`` every ``checkpoint_every`` steps and
    when stopping or interrupted, ``log.jsonl`` with the loss of every step. A call with the same ones continues
    (bit-exactly on a CPU) or, when finished, returns at once; other settings or a retrained generator make a
    new folder and leave the old one.
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
    run = None if run_dir is None else RunFolder(Path(run_dir) / f"encoder_{settings_tag(settings)}")
    losses: list[float] = []
    if run is not None and run.has_checkpoint():
        state = run.resume(settings, key="settings")
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["rng"])
        losses = [row["loss"] for row in run.read_log()]

    rng_done = gen.get_state()  # the latent RNG as of the last finished step: a step cut short is redrawn

    def save() -> None:
        run.save(
            {
                "settings": settings,
                "step": len(losses),
                "encoder": encoder.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": rng_done,
            }
        )

    saved_at = len(losses)
    bar = tqdm(total=steps, initial=len(losses), desc="training encoder", disable=not progress)
    with run.log() if run is not None else nullcontext(lambda row: None) as log:
        try:
            while len(losses) < steps:
                z = torch.randn(batch_size, generator.dim_z, generator=gen).to(generator.device)
                with torch.no_grad():
                    x = generator(z)
                loss = F.mse_loss(encoder(x), z)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                rng_done = gen.get_state()
                log({"step": len(losses), "loss": losses[-1]})
                bar.update(1)
                if run is not None and len(losses) % checkpoint_every == 0:
                    save()
                    saved_at = len(losses)
        finally:  # done or interrupted: keep the progress
            bar.close()
            if run is not None and (len(losses) != saved_at or not run.has_checkpoint()):
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
