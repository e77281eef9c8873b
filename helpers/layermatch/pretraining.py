"""LayerMatch pre-training (Galeev et al.), and an autoencoder baseline on the same data.

The authors never released LayerMatch; this is our implementation of the scheme in the paper's figure
(docs/reference.md#layermatch). A frozen generator G makes images x = G(z) on the fly; a backbone B
(helpers.layermatch.backbones)
encodes them; auxiliary heads h_l predict chosen generator feature maps F_l(z); one head's prediction is
re-injected into G in place of F_k and the remaining generator blocks render a reconstruction x̂:

    L = Σ_{l∈layers} λ_l · MSE(h_l(B(x)), F_l(z)) / v_l  +  λ_rec · MSE(x̂, x),
    x̂ = G.synthesis_from(k, h_k(B(x)), z)   (same z; for StyleGAN2 also the same noise maps and truncation).

G is in eval mode with no trainable parameters; gradients of the reconstruction term flow through G's frozen
later blocks into h_k and B. After pre-training the heads are dropped and B initialises a segmentation model.

Established by the paper (figure): heads match *early* generator blocks with L2; the second block's prediction
is re-injected and the reconstruction is compared with L2; G is fixed. Everything else is our choice:

* matched layers ``("res4", "res8", "res16")`` (the first three maps, as in the figure), re-injection at
  ``"res8"`` (the second), λ_l = 1 and λ_rec = 1. Both generator families name their maps ``res4 … resR``;
  BigGAN's ``res4`` is its reshaped first linear, StyleGAN2's the output of the 4 px block.
* per-layer normalisation: v_l is the variance of all elements of F_l (over batch, channels and positions,
  ``unbiased=False``), estimated once, before the first step, on a fixed batch of ``norm_batch`` = 64 latents
  (z from seed ``seed + 10_000``, StyleGAN2 noise maps from the next seed; same truncation as training).
  A head that outputs the layer's global mean everywhere therefore scores about 1 on every layer, whatever
  the layer's scale (the default generators' v_l span 0.005 … 0.6). v_l is stored in the checkpoint and
  reused on resume. The reconstruction term is a plain MSE on images in [-1, 1], not normalised: with the
  default generators it starts near 0.05–0.15 against feature terms of order 1, so λ_rec sets its share.
* re-injection, StyleGAN2: the injected map replaces the block output and goes through that block's ToRGB
  and all later blocks; the RGB skip of the earlier blocks is the generator's own (the figure is ambiguous;
  this is the natural reading). Images are clamped to [-1, 1] in eval mode, so saturated pixels give no gradient.
  BigGAN: the injected map runs through the later GBlocks and the output layer (tanh).
* heads (``AuxHead``): source = the backbone stage whose map size (for the training image size) is nearest to
  the target's in log scale, ties to the deeper stage (``head_source="nearest"``; ``"deepest"`` routes the
  last stage to every head, as drawn in the figure); resize to the target size (adaptive average pooling when
  larger, bilinear when smaller), 1x1 conv → BN → ReLU → 3x3 conv → target channels; hidden width = target
  channels unless ``head_width`` is set. With the ``"small"`` stem at 64 px every target has an exact match.
* backbone ``DEFAULT_BACKBONE``: BasicBlock ResNet-18 layout, width 32, ``"small"`` stem (strides 1…16).
* data: z ~ N(0, I) from a seeded torch generator whose state is checkpointed (resume replays the same
  stream); StyleGAN2 gets fresh noise maps per step from a seed drawn from the same stream and truncation
  ψ = 1 (diversity); BigGAN uses plain N(0, I) z. Images are fed at the generator's resolution unless
  ``input_size`` is set (bilinear, antialiased).
* optimisation: Adam (lr 1e-3, betas (0.9, 0.999); on an 80-step probe it cut the loss far faster than
  1e-4), batch 16, 2000 steps (about 0.5–0.7 s per step for the default 64 px generators on one CPU thread),
  BN of backbone and heads in training mode; checkpoint every 100 steps, log every 10 (means over the interval).

Autoencoder baseline (``AutoencoderTrainer``): the same backbone, a light decoder from its *deepest* stage only
(no skips, which would let it copy the input), [bilinear ×2, 3x3 conv-BN-ReLU] per halving, then a 1x1 conv to
RGB (no output activation); a denoising objective MSE(D(B(x + σε)), x) with σ = 0.1, ε from its own seeded
stream (``seed + 1``, checkpointed). It is trained on the very same generated images
(same generator, seed, truncation, batch size), optimiser and step budget as LayerMatch, so the two pre-trainings
differ only in their objective.

A run lives in one folder: ``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps and when
training stops), ``log.jsonl`` (``step``, ``loss`` and each term, plotted by ``helpers.core.plots.loss_curves``)
and ``backbone.pt`` (helpers.layermatch.backbones format, written when training stops). Calling ``train`` again resumes;
a run folder made with another configuration, or from another file under the same generator name (its
sha256 is in the checkpoint), is refused rather than continued.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from helpers.core import distributed
from helpers.core.manifest import sha256_file
from helpers.core.runs import RunFolder, deadline
from helpers.core.runtime import amp_dtype, autocast
from helpers.gans.base import Generator
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import load, resolve_checkpoint
from helpers.gans.stylegan2 import StyleGAN2
from helpers.layermatch.backbones import (
    DEFAULT_BACKBONE,
    STAGES,
    ResNetBackbone,
    save_backbone,
)

RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "amp"}  # may differ when resuming
NORM_SEED_OFFSET = 10_000


# ----------------------------------------------------------------------------------------------- heads


def resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """x at spatial ``size``: unchanged, adaptive average pooling when no side grows, else bilinear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AuxHead(nn.Module):
    """Backbone map → one generator map's shape: resize, 1x1 conv, BN, ReLU, 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], hidden: int | None = None):
        super().__init__()
        hidden = hidden or c_out
        self.size = tuple(size)
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c_out, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(resize_map(x, self.size))


def head_sources(
    backbone: ResNetBackbone, image_size: int, targets: Mapping[str, tuple[int, int, int]], mode: str = "nearest"
) -> dict[str, str]:
    """The backbone stage feeding each target: nearest map size in log scale (ties: deeper), or the deepest."""
    if mode not in ("nearest", "deepest"):
        raise ValueError(f"head_source must be 'nearest' or 'deepest', got {mode!r}")
    sizes = backbone.stage_sizes(image_size)
    sources = {}
    for name, (_, h, _) in targets.items():
        if mode == "deepest":
            sources[name] = STAGES[-1]
        else:
            distance = [Fraction(max(s, h), min(s, h)) for s in sizes]  # exact log-scale distance
            sources[name] = STAGES[max(i for i, d in enumerate(distance) if d == min(distance))]
    return sources


class LayerMatchNet(nn.Module):
    """Backbone plus one auxiliary head per matched generator map; ``forward`` gives the predicted maps."""

    def __init__(
        self,
        backbone: ResNetBackbone,
        targets: Mapping[str, tuple[int, int, int]],
        image_size: int,
        head_source: str = "nearest",
        head_width: int | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.sources = head_sources(backbone, image_size, targets, head_source)
        channels = dict(zip(STAGES, backbone.channels))
        self.heads = nn.ModuleDict(
            {name: AuxHead(channels[self.sources[name]], c, (h, w), head_width) for name, (c, h, w) in targets.items()}
        )

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        features = self.backbone(images)
        return OrderedDict((name, head(features[self.sources[name]])) for name, head in self.heads.items())


# ------------------------------------------------------------------------------------ generator access


def generator_kwargs(G: Generator, batch: int, noise_seed: int, truncation: float) -> dict[str, Any]:
    """Extra arguments of G.features / G.synthesis_from that fix a batch: StyleGAN2 noise maps and truncation."""
    if isinstance(G, StyleGAN2):
        return {"noise": G.make_noise(batch, noise_seed), "truncation": truncation}
    if isinstance(G, BigGAN):
        return {}
    raise TypeError(f"LayerMatch supports BigGAN and StyleGAN2 generators, not {type(G).__name__}")


def matchable_layers(G: Generator) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of every feature map of G that a head can match and re-inject (all but the image)."""
    with torch.no_grad():
        z = G.sample_z(1, seed=0)
        features = G.features(z, **generator_kwargs(G, 1, 0, 1.0))
    return {k: tuple(v.shape[1:]) for k, v in features.items() if k != "image"}


@torch.no_grad()
def feature_variances(
    G: Generator,
    layers: tuple[str, ...] | list[str],
    n: int = 64,
    seed: int = NORM_SEED_OFFSET,
    truncation: float = 1.0,
) -> dict[str, float]:
    """Variance of all elements of each map F_l over n seeded samples (the per-layer loss normaliser v_l).

    z comes from ``seed`` and StyleGAN2's noise maps from ``seed + 1`` (one seed for both would correlate them).
    """
    z = G.sample_z(n, seed)
    features = G.features(z, **generator_kwargs(G, n, seed + 1, truncation))
    return {name: features[name].double().var(unbiased=False).item() for name in layers}


# --------------------------------------------------------------------------------------------- configs


@dataclass
class PretrainConfig:
    """What the LayerMatch and autoencoder pre-trainings share: generator, data stream, backbone, optimiser."""

    generator: str = "default-stylegan2"  # a name or path for helpers.gans.checkpoints.load
    truncation: float = 1.0  # StyleGAN2 only
    input_size: int | None = None  # backbone input side; None = the generator's resolution
    backbone: dict[str, Any] = field(default_factory=dict)  # ResNetBackbone arguments over DEFAULT_BACKBONE
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    amp: str = "auto"  # the trained network's autocast (`helpers.core.runtime.amp_dtype`); G runs in full precision

    def __post_init__(self) -> None:
        self.backbone = {**DEFAULT_BACKBONE, **self.backbone}
        self.backbone["depths"] = list(self.backbone["depths"])
        self.betas = tuple(self.betas)


@dataclass
class LayerMatchConfig(PretrainConfig):
    """A LayerMatch run (defaults: module docstring)."""

    layers: tuple[str, ...] = ("res4", "res8", "res16")
    layer_weights: tuple[float, ...] | None = None  # λ_l, one per layer; None = all 1
    inject: str | None = "res8"  # None: no reconstruction term
    rec_weight: float = 1.0
    head_source: str = "nearest"
    head_width: int | None = None
    norm_batch: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layers = tuple(self.layers)
        self.layer_weights = tuple(float(w) for w in self.layer_weights or [1.0] * len(self.layers))
        if len(self.layer_weights) != len(self.layers):
            raise ValueError(f"{len(self.layer_weights)} layer weights for {len(self.layers)} layers")
        if self.inject is not None and self.inject not in self.layers:
            raise ValueError(f"the re-injected layer {self.inject!r} must be one of the matched layers {self.layers}")


@dataclass
class AutoencoderConfig(PretrainConfig):
    """A (denoising) autoencoder run on the same generated images (defaults: module docstring)."""

    noise_std: float = 0.1  # σ of the Gaussian input corruption; 0 gives a plain autoencoder


# -------------------------------------------------------------------------------------------- training


class PretrainTrainer:
    """Shared machinery of a resumable pre-training run in ``run_dir``: data stream, checkpoints, log, loop.

    Under torchrun the run is data-parallel (DistributedDataParallel, batch norm synchronised): each rank generates
    batch_size / world_size images per step from latents seeded by (seed, step, rank, world size) instead of the
    one-process stream, rank 0 writes the checkpoint, the log and the backbone.
    """

    config: PretrainConfig
    net: nn.Module
    method: str

    def __init__(self, run_dir: str | os.PathLike, config: PretrainConfig, device: torch.device | str = "cpu"):
        self.run_dir, self.config, self.device = Path(run_dir), config, torch.device(device)
        self.G = load(config.generator, self.device).eval().requires_grad_(False)
        self.generator_sha256 = sha256_file(resolve_checkpoint(config.generator))
        generator_kwargs(self.G, 1, 0, config.truncation)  # fails early for an unsupported generator
        self.image_size = config.input_size or self.G.resolution
        torch.manual_seed(config.seed)
        self.backbone = ResNetBackbone(**config.backbone)
        self.build()
        self.net.to(self.device, memory_format=torch.channels_last)
        self.forward_net: nn.Module = self.net  # what the step runs: the net, or its DistributedDataParallel wrapper
        if distributed.active():
            if config.batch_size % distributed.world_size():
                raise ValueError(
                    f"batch_size {config.batch_size} cannot be split evenly over {distributed.world_size()} processes"
                )
            self.net = distributed.sync_batch_norm(self.net)
            on_gpu = self.device.type == "cuda"
            self.forward_net = DistributedDataParallel(self.net, device_ids=[self.device] if on_gpu else None)
        self.amp_dtype = amp_dtype(config.amp, self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), config.lr, config.betas)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.run = RunFolder(self.run_dir, RESUMABLE_CHANGES)
        if self.run.has_checkpoint():
            self._resume()
        else:
            self.start()

    def build(self) -> None:
        """Sets ``self.net`` (the trained modules, backbone included)."""
        raise NotImplementedError

    def start(self) -> None:
        """Work done once before the first step of a new run."""

    def losses(self, z: Tensor, kwargs: dict[str, Any], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The objective on one batch: ``loss`` (optimised) and its terms."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state stored in the checkpoint."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restores what ``extra_state`` stored."""

    def next_batch(self) -> tuple[Tensor, dict[str, Any]]:
        """The next latents of the seeded stream and the generator arguments (noise) that go with them (under
        torchrun: this rank's share of the step's batch, from its own stream)."""
        rng, n = self.rng, self.config.batch_size
        if distributed.active():
            rng, n = distributed.step_generator(self.config.seed, self.step), n // distributed.world_size()
        z = torch.randn(n, self.G.dim_z, generator=rng).to(self.device)
        noise_seed = int(torch.randint(2**62, (1,), generator=rng))
        return z, generator_kwargs(self.G, len(z), noise_seed, self.config.truncation)

    def backbone_input(self, images: Tensor) -> Tensor:
        """Generated images resized to the backbone input size when it differs."""
        if images.shape[-1] == self.image_size and images.shape[-2] == self.image_size:
            return images
        return F.interpolate(
            images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )

    def run_net(self, images: Tensor) -> Any:
        """``self.net(images)`` under the configured autocast, its output (a tensor or a dict of them) in float32."""
        with autocast(self.amp_dtype, self.device):
            out = self.forward_net(images)
        return {k: v.float() for k, v in out.items()} if isinstance(out, Mapping) else out.float()

    @torch.no_grad()
    def render(self, z: Tensor, kwargs: dict[str, Any]) -> OrderedDict[str, Tensor]:
        """The generator's feature maps and image (``"image"``) for a batch of `next_batch`."""
        return self.G.features(z, **kwargs)

    def step_on(self, z: Tensor, kwargs: dict[str, Any], features: Mapping[str, Tensor]) -> dict[str, float]:
        """One optimiser step on a batch of `next_batch` and its `render`; returns the loss terms."""
        self.net.train()
        losses = self.losses(z, kwargs, features)
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.opt.step()
        self.step += 1
        return {k: v.item() for k, v in losses.items()}

    def _state(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": asdict(self.config),
            "generator_sha256": self.generator_sha256,
            "step": self.step,
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "extra": self.extra_state(),
        }

    def save_checkpoint(self) -> None:
        """Writes everything needed to resume, atomically."""
        self.run.save(self._state())

    def _resume(self) -> None:
        state = self.run.resume(
            asdict(self.config),
            clash=lambda s: f"was written by another run ({s.get('method')})",
            expect={"method": self.method},
        )
        if state.get("generator_sha256", self.generator_sha256) != self.generator_sha256:
            raise ValueError(
                f"{self.run.checkpoint_path} was pre-trained from another {self.config.generator} file (sha256 "
                f"{state['generator_sha256'][:12]}…, now {self.generator_sha256[:12]}…); use a new run folder"
            )
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.load_extra_state(state["extra"])
        self.step = state["step"]

    def export_backbone(self, path: str | os.PathLike | None = None) -> Path:
        """Saves the backbone (helpers.layermatch.backbones format; default ``run_dir/backbone.pt``) with the run in
        its meta."""
        meta = {"method": self.method, "step": self.step, "config": asdict(self.config)}
        path = Path(path or self.run_dir / "backbone.pt")
        return save_backbone(self.backbone, path, meta) if distributed.is_main() else path

    def train(self, steps: int | None = None, max_minutes: float | None = None, progress: bool = True) -> int:
        """Trains until ``steps`` (default: config.steps) or the time limit; returns the step reached."""
        return train_together([self], steps, max_minutes, progress)[0]


def _same_batch(a: tuple[Tensor, dict[str, Any]], b: tuple[Tensor, dict[str, Any]]) -> bool:
    """Whether two (z, generator arguments) batches of `PretrainTrainer.next_batch` are equal."""
    (z_a, kw_a), (z_b, kw_b) = a, b
    if z_a.shape != z_b.shape or not torch.equal(z_a, z_b) or kw_a.keys() != kw_b.keys():
        return False
    for key, value in kw_a.items():
        other = kw_b[key]
        if isinstance(value, list):
            if len(value) != len(other) or not all(torch.equal(x, y) for x, y in zip(value, other)):
                return False
        elif value != other:
            return False
    return True


def _render_of(
    renders: Sequence[tuple[PretrainTrainer, tuple[Tensor, dict[str, Any]], OrderedDict[str, Tensor]]],
    trainer: PretrainTrainer,
    batch: tuple[Tensor, dict[str, Any]],
) -> OrderedDict[str, Tensor] | None:
    """The features of an earlier render of this step that ``trainer``'s batch can reuse: the same batch from the same
    generator file on the same device (None if there is none)."""
    for other, other_batch, features in renders:
        same_generator = other.generator_sha256 == trainer.generator_sha256 and other.device == trainer.device
        if same_generator and _same_batch(other_batch, batch):
            return features
    return None


def train_together(
    trainers: Sequence[PretrainTrainer],
    steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> list[int]:
    """Trains runs step by step side by side until each reaches ``steps`` (default: its config's) or the time limit;
    returns the steps reached.

    A run whose step draws the same batch as an earlier run of the same step, from the same generator file, reuses that
    run's render of it: LayerMatch and its autoencoder baseline (same seed, batch size and truncation) render each batch
    once instead of twice. Every run keeps its own folder, checkpoints and log, and ends with the weights it would have
    trained alone (the steps draw from their own streams only).
    """
    targets = [t.config.steps if steps is None else steps for t in trainers]
    stop_at = deadline(max_minutes)
    bar = tqdm(
        total=sum(targets),
        initial=sum(min(t.step, n) for t, n in zip(trainers, targets)),
        desc=" + ".join(t.method for t in trainers) + " pre-training",
        disable=not (progress and distributed.is_main()),
    )
    sums: list[dict[str, float]] = [{} for _ in trainers]
    counts = [0] * len(trainers)
    try:
        with ExitStack() as stack:
            logs = [stack.enter_context(t.run.log()) for t in trainers]
            while not distributed.past(stop_at):
                running = [i for i, t in enumerate(trainers) if t.step < targets[i]]
                if not running:
                    break
                renders: list[tuple[PretrainTrainer, tuple[Tensor, dict[str, Any]], OrderedDict[str, Tensor]]] = []
                for i in running:
                    t = trainers[i]
                    batch = t.next_batch()
                    features = _render_of(renders, t, batch)
                    if features is None:
                        features = t.render(*batch)
                        renders.append((t, batch, features))
                    losses = t.step_on(*batch, features)
                    sums[i] = {k: sums[i].get(k, 0.0) + v for k, v in losses.items()}
                    counts[i] += 1
                    bar.update(1)
                    bar.set_postfix({t.method: f"{losses['loss']:.4g}"}, refresh=False)
                    if t.step % t.config.log_every == 0:
                        means = {k: distributed.all_mean(v / counts[i]) for k, v in sums[i].items()}
                        logs[i]({"step": t.step, **means})
                        sums[i], counts[i] = {}, 0
                    if t.step % t.config.checkpoint_every == 0:
                        t.save_checkpoint()
    finally:  # interrupted or done: keep the progress
        bar.close()
        for t in trainers:
            t.save_checkpoint()
            t.export_backbone()
    distributed.barrier()  # the checkpoints and the backbones are there for every rank
    return [t.step for t in trainers]


class LayerMatchTrainer(PretrainTrainer):
    """LayerMatch: heads on the backbone regress generator maps; one prediction is rendered by the generator."""

    method = "layermatch"
    config: LayerMatchConfig
    net: LayerMatchNet

    def build(self) -> None:
        """Checks the layers against the generator and builds backbone + heads."""
        available = matchable_layers(self.G)
        unknown = [name for name in self.config.layers if name not in available]
        if unknown:
            raise ValueError(f"{self.config.generator} has no feature maps {unknown}; it has {sorted(available)}")
        targets = {name: available[name] for name in self.config.layers}
        self.net = LayerMatchNet(
            self.backbone, targets, self.image_size, self.config.head_source, self.config.head_width
        )
        self.variances: dict[str, float] = {}

    def start(self) -> None:
        """Estimates the per-layer normalisers v_l on the fixed batch (rank 0's for every rank under torchrun)."""
        self.variances = feature_variances(
            self.G,
            self.config.layers,
            self.config.norm_batch,
            self.config.seed + NORM_SEED_OFFSET,
            self.config.truncation,
        )
        self.variances = distributed.from_main(self.variances)

    def extra_state(self) -> dict[str, Any]:
        """The normalisers v_l, so that a resumed run divides by the same numbers."""
        return {"variances": self.variances}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restores the normalisers v_l."""
        self.variances = dict(state["variances"])

    def losses(self, z: Tensor, kwargs: dict[str, Any], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Normalised feature MSE per layer, weighted, plus the weighted reconstruction MSE."""
        images = features["image"]
        predictions = self.run_net(self.backbone_input(images))
        terms: dict[str, Tensor] = {}
        loss = images.new_zeros(())
        for name, weight in zip(self.config.layers, self.config.layer_weights):
            terms[f"feat_{name}"] = F.mse_loss(predictions[name], features[name]) / self.variances[name]
            loss = loss + weight * terms[f"feat_{name}"]
        if self.config.inject is not None:
            rebuilt = self.G.synthesis_from(self.config.inject, predictions[self.config.inject], z, **kwargs)
            terms["rec"] = F.mse_loss(rebuilt, images)
            loss = loss + self.config.rec_weight * terms["rec"]
        return {"loss": loss, **terms}


class ImageDecoder(nn.Module):
    """The autoencoder's light decoder: deepest map → [bilinear ×2, 3x3 conv-BN-ReLU] per halving → 1x1 → RGB."""

    def __init__(self, backbone: ResNetBackbone, out_channels: int = 3):
        super().__init__()
        c, width = backbone.channels[-1], backbone.config["width"]
        layers: list[nn.Module] = []
        for _ in range(backbone.strides[-1].bit_length() - 1):
            c_out = max(c // 2, width)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, out_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, deepest: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.body(deepest), size=size, mode="bilinear", align_corners=False)


class AutoencoderNet(nn.Module):
    """Backbone + ImageDecoder: the image rebuilt from the deepest backbone map."""

    def __init__(self, backbone: ResNetBackbone):
        super().__init__()
        self.backbone = backbone
        self.decoder = ImageDecoder(backbone)

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.backbone(images)[STAGES[-1]], tuple(images.shape[-2:]))


class AutoencoderTrainer(PretrainTrainer):
    """Denoising-autoencoder pre-training of the same backbone on the same generated images."""

    method = "autoencoder"
    config: AutoencoderConfig
    net: AutoencoderNet

    def build(self) -> None:
        """Backbone + image decoder, and a separate seeded stream for the corruption noise."""
        self.net = AutoencoderNet(self.backbone)
        self.noise_rng = torch.Generator().manual_seed(self.config.seed + 1)

    def extra_state(self) -> dict[str, Any]:
        """The corruption-noise stream, so that a resumed run draws the same noise."""
        return {"noise_rng": self.noise_rng.get_state()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restores the corruption-noise stream."""
        self.noise_rng.set_state(state["noise_rng"])

    def losses(self, z: Tensor, kwargs: dict[str, Any], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """MSE between the decoded corrupted input and the clean input."""
        clean = self.backbone_input(features["image"])
        rng = distributed.step_generator(self.config.seed + 1, self.step) if distributed.active() else self.noise_rng
        noise = torch.randn(clean.shape, generator=rng).to(clean.device)
        return {"loss": F.mse_loss(self.run_net(clean + self.config.noise_std * noise), clean)}


def pretrain_job(
    runs: Sequence[tuple[type[PretrainTrainer], str | os.PathLike, PretrainConfig]], device: torch.device | str
) -> list[PretrainTrainer]:
    """Finished pre-training runs, one per (trainer class, run folder, config), trained side by side
    (`train_together`), as a job that `helpers.core.distributed.on_ranks` can hand to several processes (each on its
    own device there)."""
    trainers = [trainer(run_dir, config, distributed.job_device(device)) for trainer, run_dir, config in runs]
    train_together(trainers)
    return trainers
