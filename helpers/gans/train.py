"""Trains the embedded-default generators on the procedural domain: hinge loss, SN discriminator, EMA of G.

A run lives in one folder: ``checkpoint.pt`` (everything needed to resume, written atomically every
``checkpoint_every`` steps and on interruption), ``log.jsonl`` (losses), ``samples/step_NNNNNN.png``
and, after ``export``, the EMA generator in our checkpoint format. Calling ``train`` again on the same
folder resumes where it stopped. ``python -m helpers.gans.train RUN_DIR --generator biggan`` runs it
from a shell; ``notebooks/training/train_default_gans.ipynb`` runs it from a notebook.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm.auto import tqdm

from helpers.core.io import save_figure
from helpers.core.plots import image_grid
from helpers.core.runs import RunFolder, deadline
from helpers.data.splits import ProceduralSplits, load_split
from helpers.gans.base import Generator, to_uint8
from helpers.gans.biggan import BigGAN, recompute_bn_stats
from helpers.gans.checkpoints import CLASSES, save_model

# The shipped defaults: small configurations of the same classes as the released generators.
DEFAULT_GENERATORS: dict[str, dict[str, Any]] = {
    "biggan": dict(resolution=64, ch=8, dim_z=60, shared_dim=16, n_classes=1, attention=[]),
    "stylegan2": dict(resolution=64, dim_z=64, n_mlp=4, fmap_base=1024, fmap_max=128, truncation_psi=1.0),
}
# Optimiser settings per class; StyleGAN2's equalized learning rate needs a 10x larger G step.
RECIPES: dict[str, dict[str, Any]] = {
    "biggan": dict(lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.999)),
    "stylegan2": dict(lr_g=2e-3, lr_d=2e-4, betas=(0.0, 0.99)),
}
CLASS_NAMES = {"biggan": "BigGAN", "stylegan2": "StyleGAN2"}
RESUMABLE_CHANGES = {"steps", "sample_every", "checkpoint_every", "threads"}  # may differ when resuming


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in its checkpoint and in the exported weights)."""

    generator: str = "biggan"
    generator_config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=lambda: asdict(ProceduralSplits()))
    steps: int = 2500
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    d_ch: int = 32
    ema_decay: float = 0.999
    ema_start: int = 500
    sample_every: int = 250
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 2

    @classmethod
    def for_generator(cls, generator: str, **overrides: Any) -> TrainConfig:
        """The recipe of a generator class with overrides (e.g. steps, data, generator_config)."""
        if generator not in RECIPES:
            raise ValueError(f"generator must be one of {sorted(RECIPES)}, got {generator!r}")
        return cls(generator=generator, **{**RECIPES[generator], **overrides})

    def __post_init__(self) -> None:
        if self.generator not in DEFAULT_GENERATORS:
            raise ValueError(f"generator must be one of {sorted(DEFAULT_GENERATORS)}, got {self.generator!r}")
        self.generator_config = {**DEFAULT_GENERATORS[self.generator], **self.generator_config}
        self.betas = tuple(self.betas)


class Discriminator(nn.Module):
    """DCGAN-style critic with spectral norm on every layer: stride-2 4x4 convs down to 4x4, then a linear."""

    def __init__(self, resolution: int, ch: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = 3, ch
        for _ in range(int(math.log2(resolution)) - 2):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1)]
            c_in, c_out = c_out, min(c_out * 2, ch * 8)
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(c_in * 16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def build_generator(config: TrainConfig) -> Generator:
    """A fresh generator of the configured class."""
    return CLASSES[CLASS_NAMES[config.generator]](**config.generator_config)


def prepare_for_sampling(model: Generator, n_batches: int = 16, batch_size: int = 64, seed: int = 0) -> Generator:
    """Eval-mode copy ready to sample: BigGAN gets standing BN statistics, StyleGAN2 its mean latent."""
    model = copy.deepcopy(model)
    if isinstance(model, BigGAN):
        recompute_bn_stats(model, lambda i: model.sample_z(batch_size, seed + i), n_batches)
    elif hasattr(model, "estimate_latent_avg"):
        model.estimate_latent_avg(n_batches * batch_size, seed)
    return model.eval()


class Trainer:
    """One resumable GAN training run in ``run_dir``."""

    def __init__(self, run_dir: str | Path, config: TrainConfig, device: torch.device | str = "cpu"):
        self.run_dir, self.config, self.device = Path(run_dir), config, torch.device(device)
        torch.manual_seed(config.seed)
        self.G = build_generator(config).to(self.device)
        self.D = Discriminator(self.G.resolution, config.d_ch).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), config.lr_g, config.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), config.lr_d, config.betas)
        self.step = 0
        self.rng = torch.Generator().manual_seed(config.seed)
        self.fixed_z = self.G.sample_z(64, seed=config.seed + 10_000)
        if self.G.device.type == "cpu":
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.run = RunFolder(self.run_dir, RESUMABLE_CHANGES)
        if self.run.has_checkpoint():
            self._resume()

    def _state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self) -> None:
        """Writes everything needed to resume, atomically."""
        self.run.save(self._state())

    def _resume(self) -> None:
        state = self.run.resume(asdict(self.config))
        for name in ("G", "D", "G_ema", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    def _update_ema(self) -> None:
        decay = 0.0 if self.step < self.config.ema_start else self.config.ema_decay
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - decay)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def _real_batch(self, images: Tensor) -> Tensor:
        idx = torch.randint(len(images), (self.config.batch_size,), generator=self.rng)
        x = images[idx].to(self.device).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        flip = torch.rand(len(x), generator=self.rng) < 0.5
        x[flip] = x[flip].flip(-1)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x

    def train_step(self, real: Tensor) -> dict[str, float]:
        """One D step and one G step with the hinge loss."""
        z = torch.randn(len(real), self.G.dim_z, generator=self.rng).to(self.device)
        with torch.no_grad():
            fake = self.G(z)
        loss_d = F.relu(1 - self.D(real)).mean() + F.relu(1 + self.D(fake)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        z = torch.randn(len(real), self.G.dim_z, generator=self.rng).to(self.device)
        loss_g = -self.D(self.G(z)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        self._update_ema()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}

    def write_samples(self) -> Path:
        """A grid of the EMA generator (prepared for sampling) on fixed latents."""
        model = prepare_for_sampling(self.G_ema, n_batches=4, seed=self.config.seed)
        with torch.no_grad():
            images = to_uint8(model(self.fixed_z))
        fig = image_grid(images, scale=1.0)
        path = save_figure(fig, self.run_dir / "samples" / f"step_{self.step:06d}.png", dpi=self.G.resolution)
        plt.close(fig)
        return path

    def train(self, steps: int | None = None, max_minutes: float | None = None, progress: bool = True) -> int:
        """Trains until ``steps`` (default: config.steps) or the time limit; returns the step reached."""
        steps = self.config.steps if steps is None else steps
        torch.set_num_threads(self.config.threads)
        images = torch.from_numpy(load_split(ProceduralSplits(**self.config.data), "train", progress)[0])
        stop_at = deadline(max_minutes)
        bar = tqdm(total=steps, initial=self.step, desc=f"training {self.config.generator}", disable=not progress)
        try:
            with self.run.log() as log:
                while self.step < steps and time.monotonic() < stop_at:
                    losses = self.train_step(self._real_batch(images))
                    bar.update(1)
                    bar.set_postfix(losses, refresh=False)
                    if self.step % 10 == 0:
                        log({"step": self.step, **losses})
                    if self.step % self.config.checkpoint_every == 0:
                        self.save_checkpoint()
                    if self.step % self.config.sample_every == 0:
                        self.write_samples()
        finally:  # interrupted or done: keep the progress
            bar.close()
            self.save_checkpoint()
        return self.step

    def export(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Saves the EMA generator, ready to sample, with the training configuration in its meta."""
        model = prepare_for_sampling(self.G_ema, seed=self.config.seed).cpu()
        return save_model(model, path, {"train_config": asdict(self.config), "steps": self.step, **(meta or {})})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--generator", default="biggan", choices=sorted(DEFAULT_GENERATORS))
    parser.add_argument("--config", help="JSON file with TrainConfig fields (overrides)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--export", help="write the EMA generator here when done")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    config = TrainConfig.for_generator(args.generator, **overrides)
    if args.steps is not None:
        config.steps = args.steps
    trainer = Trainer(args.run_dir, config, args.device)
    trainer.train(max_minutes=args.max_minutes)
    if args.export:
        print("exported", trainer.export(args.export))


if __name__ == "__main__":
    main()
