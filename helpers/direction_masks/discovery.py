"""Unsupervised discovery of latent directions (Voynov & Babenko) and a GANSpace-style PCA baseline.

Discovery trains a deformator A (K directions -> latent shifts) and a reconstructor R together, both
minimising ``label_weight * CE(R_k, k) + shift_weight * |R_eps - eps|`` on pairs (G(z), G(z + A(eps e_k))),
with k uniform over the K directions and eps = shift_scale * U(-1, 1) pushed away from 0 to at least
``min_shift`` (reference values 6.0 and 0.5). G is frozen in eval mode; gradients flow through it into A.
Deformators: ``ortho`` (A = expm(L - L^T), directions are its unit columns; the reference default),
``linear`` (identity-initialised linear map with bias) and ``proj`` (the linear map rescaled to the input
norm). ``random_init=False`` starts from the coordinate axes, which the original author recommends for
BigBiGAN. The reference reconstructor is a ResNet-18 on 6-channel pairs; here it is a small residual
conv net of the same role, sized for 64-128 px images on a CPU (``Reconstructor``).

Under torchrun, discovery is data-parallel (DistributedDataParallel over deformator and reconstructor, batch norm
synchronised): each rank generates batch_size / world_size pairs per step from a (seed, step, rank, world size)
stream instead of the one-process stream; rank 0 writes the checkpoint and the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from helpers.core import distributed
from helpers.core.modules import weights_fingerprint
from helpers.core.runs import RunFolder, deadline
from helpers.core.runtime import amp_dtype, autocast
from helpers.gans.base import Generator

DEFORMATOR_KINDS = ("ortho", "linear", "proj")


class Deformator(nn.Module):
    """Maps a shift vector over K directions (eps * one-hot) to a latent shift of dimension ``dim_z``."""

    def __init__(self, dim_z: int, n_directions: int | None = None, kind: str = "ortho", random_init: bool = False):
        super().__init__()
        if kind not in DEFORMATOR_KINDS:
            raise ValueError(f"deformator kind must be one of {DEFORMATOR_KINDS}, got {kind!r}")
        self.dim_z, self.kind = dim_z, kind
        self.n_directions = n_directions or dim_z
        if self.n_directions > dim_z:
            raise ValueError(f"at most dim_z = {dim_z} directions, got {self.n_directions}")
        if kind == "ortho":
            scale = 1.0 if random_init else 1e-3
            self.log_mat_half = nn.Parameter(scale * torch.randn(dim_z, dim_z))
        else:
            self.linear = nn.Linear(self.n_directions, dim_z)
            with torch.no_grad():
                if random_init:
                    self.linear.weight.normal_(0, 0.1)
                else:
                    self.linear.weight.copy_(torch.eye(dim_z, self.n_directions))

    def matrix(self) -> Tensor:
        """The [dim_z, K] matrix whose column k is direction k (unit columns for ``ortho``)."""
        if self.kind == "ortho":
            return torch.linalg.matrix_exp(self.log_mat_half - self.log_mat_half.T)[:, : self.n_directions]
        return self.linear.weight

    def forward(self, shift: Tensor) -> Tensor:
        if self.kind == "ortho":
            return shift @ self.matrix().T
        out = self.linear(shift)
        if self.kind == "proj":
            out = out * (shift.norm(dim=1, keepdim=True) / out.norm(dim=1, keepdim=True).clamp_min(1e-8))
        return out

    def directions(self) -> Tensor:
        """The K directions as unit rows [K, dim_z], for ranking and export."""
        with torch.no_grad():
            return F.normalize(self.matrix().T, dim=1).detach().clone()


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        # Subsampling before a 1x1 conv equals a strided 1x1 conv and avoids a CPU channels-last backward crash.
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x[:, :, ::2, ::2]))


class Reconstructor(nn.Module):
    """Predicts (direction logits [B, K], shift [B]) from an image pair concatenated to 6 channels."""

    def __init__(self, n_directions: int, width: int = 32, n_blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(6, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        chans = [width * min(2**i, 8) for i in range(n_blocks + 1)]
        self.blocks = nn.Sequential(*(_ResBlock(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.direction_head = nn.Linear(chans[-1], n_directions)
        self.shift_head = nn.Linear(chans[-1], 1)

    def forward(self, image: Tensor, shifted: Tensor) -> tuple[Tensor, Tensor]:
        h = self.blocks(self.stem(torch.cat([image, shifted], 1))).mean((2, 3))
        return self.direction_head(h), self.shift_head(h).squeeze(1)


@dataclass
class DiscoveryConfig:
    """Everything that determines a discovery run (stored in its checkpoint)."""

    n_directions: int | None = None  # None: one per latent dimension
    deformator: str = "ortho"
    random_init: bool = False
    shift_scale: float = 6.0
    min_shift: float = 0.5
    label_weight: float = 1.0
    shift_weight: float = 0.25
    lr: float = 1e-4
    batch_size: int = 32
    steps: int = 2000
    reconstructor_width: int = 32
    seed: int = 0
    checkpoint_every: int = 100
    amp: str = "auto"  # the reconstructor's autocast (`helpers.core.runtime.amp_dtype`); G runs in full precision


RESUMABLE_CHANGES = {"steps", "checkpoint_every", "amp"}


def sample_shifts(
    n: int, n_directions: int, scale: float, min_shift: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Direction indices uniform over K and magnitudes scale * U(-1, 1) with |eps| >= min_shift."""
    k = torch.randint(n_directions, (n,), generator=gen)
    eps = scale * (2 * torch.rand(n, generator=gen) - 1)
    small = eps.abs() < min_shift
    eps[small] = torch.where(eps[small] < 0, -min_shift, min_shift)
    return k, eps


class _PairModel(nn.Module):
    """Deformator and reconstructor as one module, so that one DistributedDataParallel wrapper reduces the
    gradients of both; G is an argument, not a submodule (frozen, nothing to reduce)."""

    def __init__(self, deformator: Deformator, reconstructor: Reconstructor, amp: torch.dtype | None):
        super().__init__()
        self.deformator, self.reconstructor, self.amp = deformator, reconstructor, amp

    def forward(self, G: Generator, z: Tensor, k: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        shift = self.deformator(F.one_hot(k, self.deformator.n_directions).float() * eps[:, None])
        image, shifted = G.pair(z, shift)
        with autocast(self.amp, z.device):
            logits, eps_hat = self.reconstructor(image, shifted)
        return logits.float(), eps_hat.float()


class DirectionDiscovery:
    """One resumable discovery run in ``run_dir``: checkpoint.pt, log.jsonl; ``train`` resumes."""

    def __init__(self, run_dir: str | Path, G: Generator, config: DiscoveryConfig, device: torch.device | str = "cpu"):
        self.run_dir, self.config, self.device = Path(run_dir), config, torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        torch.manual_seed(config.seed)
        self.deformator = Deformator(G.dim_z, config.n_directions, config.deformator, config.random_init).to(
            self.device
        )
        self.K = self.deformator.n_directions
        self.reconstructor = Reconstructor(self.K, config.reconstructor_width).to(self.device)
        self.reconstructor.to(memory_format=torch.channels_last)
        self.amp_dtype = amp_dtype(config.amp, self.device)
        self.model: nn.Module = _PairModel(self.deformator, self.reconstructor, self.amp_dtype)
        if distributed.active():
            if config.batch_size % distributed.world_size():
                raise ValueError(
                    f"batch_size {config.batch_size} cannot be split evenly over {distributed.world_size()} processes"
                )
            distributed.sync_batch_norm(self.reconstructor)
            on_gpu = self.device.type == "cuda"
            self.model = DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
        self.opt_a = torch.optim.Adam(self.deformator.parameters(), lr=config.lr)
        self.opt_r = torch.optim.Adam(self.reconstructor.parameters(), lr=config.lr)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.generator = weights_fingerprint(self.G)  # a run folder serves one generator
        self.run = RunFolder(self.run_dir, RESUMABLE_CHANGES)
        if self.run.has_checkpoint():
            self._resume()

    def _state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "step": self.step,
            "deformator": self.deformator.state_dict(),
            "reconstructor": self.reconstructor.state_dict(),
            "opt_a": self.opt_a.state_dict(),
            "opt_r": self.opt_r.state_dict(),
            "rng": self.rng.get_state(),
            "generator": self.generator,
        }

    def save_checkpoint(self) -> None:
        """Writes everything needed to resume, atomically."""
        self.run.save(self._state())

    def _resume(self) -> None:
        state = self.run.resume(asdict(self.config))
        if state.get("generator", self.generator) != self.generator:
            raise ValueError(
                f"{self.run.checkpoint_path} was written with a different generator (weights "
                f"{state['generator']}, now {self.generator}); use a new run folder or the same generator"
            )
        for name in ("deformator", "reconstructor", "opt_a", "opt_r"):
            getattr(self, name).load_state_dict(state[name])
        self.rng.set_state(state["rng"])
        self.step = state["step"]

    def train_step(self) -> dict[str, float]:
        """One cooperative update of deformator and reconstructor; one batched G forward for both images."""
        cfg, B, rng = self.config, self.config.batch_size, self.rng
        if distributed.active():  # this rank's share of the step's batch, from its own stream
            B, rng = B // distributed.world_size(), distributed.step_generator(cfg.seed, self.step)
        z = torch.randn(B, self.G.dim_z, generator=rng).to(self.device)
        k, eps = sample_shifts(B, self.K, cfg.shift_scale, cfg.min_shift, rng)
        k, eps = k.to(self.device), eps.to(self.device)
        logits, eps_hat = self.model(self.G, z, k, eps)
        ce, l1 = F.cross_entropy(logits, k), (eps_hat - eps).abs().mean()
        loss = cfg.label_weight * ce + cfg.shift_weight * l1
        self.opt_a.zero_grad(set_to_none=True)
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_a.step()
        self.opt_r.step()
        self.step += 1
        accuracy = (logits.argmax(1) == k).float().mean()
        return {"loss": loss.item(), "direction_ce": ce.item(), "shift_l1": l1.item(), "accuracy": accuracy.item()}

    def train(self, steps: int | None = None, max_minutes: float | None = None, progress: bool = True) -> int:
        """Trains until ``steps`` (default config.steps) or the time limit; returns the step reached."""
        steps = self.config.steps if steps is None else steps
        self.deformator.train()
        self.reconstructor.train()
        stop_at = deadline(max_minutes)
        bar = tqdm(
            total=steps, initial=self.step, desc="direction discovery", disable=not (progress and distributed.is_main())
        )
        window: list[dict[str, float]] = []
        try:
            with self.run.log() as log:
                while self.step < steps and not distributed.past(stop_at):
                    window.append(self.train_step())
                    bar.update(1)
                    if self.step % 10 == 0:
                        mean = {
                            key: distributed.all_mean(sum(w[key] for w in window) / len(window)) for key in window[0]
                        }
                        bar.set_postfix(mean, refresh=False)
                        log({"step": self.step, **mean})
                        window = []
                    if self.step % self.config.checkpoint_every == 0:
                        self.save_checkpoint()
        finally:
            bar.close()
            self.save_checkpoint()
        distributed.barrier()  # the checkpoint is there for every rank
        return self.step

    def directions(self) -> Tensor:
        """The deformator's K unit directions [K, dim_z]."""
        return self.deformator.directions()


def discovery_job(
    run_dir: str | Path, G: Generator, config: DiscoveryConfig, device: torch.device | str = "cpu"
) -> DirectionDiscovery:
    """A finished discovery run, as a job that `helpers.core.distributed.on_ranks` can hand to several processes
    (each on its own device there)."""
    discovery = DirectionDiscovery(run_dir, G, config, distributed.job_device(device))
    discovery.train()
    return discovery


@torch.no_grad()
def pca_directions(
    G: Generator,
    n_components: int,
    layer: str | None = None,
    n_samples: int = 2000,
    batch_size: int = 250,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """GANSpace: PCA of one feature map's activations, transferred to the shift space by least squares
    (z, or w for StyleGAN2 style shifts: ``G.shift_coordinates``).

    Returns unit directions [n_components, dim_z] and the explained-variance ratio of each component.
    ``layer`` defaults to the first (lowest-resolution) feature map.
    """
    G = G.eval()
    z = G.sample_z(n_samples, seed)
    layer = layer or next(iter(G.features(z[:1])))
    acts = torch.cat(
        [G.features(z[i : i + batch_size], until=layer)[layer].flatten(1) for i in range(0, n_samples, batch_size)]
    )
    acts = acts - acts.mean(0)
    _, s, v = torch.pca_lowrank(acts, q=min(n_components + 10, *acts.shape), center=False, niter=4)
    coords = acts @ v[:, :n_components]  # [N, C]
    latents = G.shift_coordinates(z)
    basis = torch.linalg.lstsq(coords, latents - latents.mean(0)).solution  # [C, dim_z]: latent ~ coords @ basis
    total = acts.pow(2).sum()
    return F.normalize(basis, dim=1), (s[:n_components] ** 2 / total).cpu()
