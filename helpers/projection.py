"""Semantic projection: a lightweight decoder from a frozen generator's feature maps to K-class masks.

The decoder follows the released semantic-projection code (Galeev et al.): a "lateral" block
(3x3 conv → LeakyReLU(0.2) → Dropout(0.1)) turns each generator map of increasing resolution into
``width`` (128) channels; a main chain upsamples bilinearly (align_corners=True), convolves
(3x3 → LeakyReLU(0.2)) and concatenates the next lateral output, prev first; after the finest map, tail
stages upsample up to ``out_resolution`` (the last one with ``width // 2`` channels) and a 3x3 conv gives
the logits, resized bilinearly to the image resolution if they are smaller. Convolutions use the
reference's equalized learning rate (weights stored ~N(0, 1), scaled by 1/sqrt(fan_in) at run time,
biases 0), so Adam at lr 1e-3 behaves as in the reference.

Defaults, chosen to reproduce the reference where it is defined:

* maps: every ``resN`` map with N <= 128 (the reference feeds StyleGAN2's 4…128 px maps; 64 px generators
  give all their maps);
* ``out_resolution = min(image resolution, 4 x finest map)``: 512 for FFHQ (two tail stages 128 → 512,
  then logits resized to 1024, as in the reference); 64 px generators get one tail stage without upsampling;
* training (`fit`): a fresh decoder every call, cross-entropy with ``ignore_index = -1``, Adam lr 1e-3
  (default betas, no weight decay, no schedule), batch 1, 24 epochs of ``max(5, N)`` samples
  (fewer than 5 samples are drawn at random with replacement), no augmentation.

Beyond the reference: ``class_weight_power = p > 0`` weights the cross-entropy of class c by
(f_c)^-p, f_c being its share of the labelled pixels of the training samples (normalised so background-like
majority classes get about 1). With few annotations, mostly background, plain cross-entropy (p = 0, the
reference) can end with a decoder that predicts background everywhere; p = 0.5 avoids that.

Training samples are stored as generator inputs (z, noise seed, truncation): their features are
recomputed with the frozen generator at every step (nothing cached, as the reference re-reads its
feature files every step). Unlike the reference, which never calls ``eval()`` and so keeps dropout on
while predicting, `predict` and dataset generation put the decoder (and generator) in eval mode.

`generate_dataset` writes synthetic (image, mask, z, noise seed) pairs into HDF5 shards with
`helpers.segmentation.shards.write_shards`; masks hold class indices (0/1 for binary): the decoder's
arg-max, or what a refiner (`helpers.refinement`) makes of the image and the decoder's probabilities.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.gans.base import Generator, load_strict, to_uint8
from helpers.io import atomic_path, load_checkpoint, save_torch
from helpers.segmentation.shards import write_shards

IGNORE_INDEX = -1  # label of unannotated pixels in training targets (the reference's value)
MAX_FEATURE_RES = 128  # default: use generator maps up to this resolution (the reference's choice)
DECODER_FORMAT = "gan-seg-notebooks/projection-decoder-v1"
FIT_FORMAT = "gan-seg-notebooks/projection-fit-v1"

NoiseSeeds = int | Sequence[int] | None


# ----------------------------------------------------------------------------------------------- decoder


class EqualizedConv2d(nn.Module):
    """A same-padded conv with equalized learning rate: weight ~N(0, 1), scaled by 1/sqrt(fan_in) when used."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = 1 / math.sqrt(c_in * kernel_size * kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)


def _conv_block(c_in: int, c_out: int, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv → LeakyReLU(0.2) (→ Dropout)."""
    layers: list[nn.Module] = [EqualizedConv2d(c_in, c_out), nn.LeakyReLU(0.2)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def feature_resolution(name: str) -> int:
    """The resolution encoded in a feature name ``resN`` (the naming of every helpers.gans generator)."""
    match = re.fullmatch(r"res(\d+)", name)
    if not match:
        raise ValueError(f"feature names must look like 'res64'; got {name!r}")
    return int(match.group(1))


def _upsample(x: Tensor, size: int) -> Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


class SemanticDecoder(nn.Module):
    """Lateral conv blocks on generator maps + concatenate-and-upsample chain → K-class logits (module docstring)."""

    def __init__(self, channels: Mapping[str, int], num_classes: int = 2, width: int = 128, dropout: float = 0.1,
                 out_resolution: int | None = None, image_resolution: int | None = None):
        super().__init__()
        names = list(channels)
        if not names:
            raise ValueError("the decoder needs at least one feature map")
        resolutions = [feature_resolution(n) for n in names]
        if any(b <= a for a, b in zip(resolutions, resolutions[1:])):
            raise ValueError(f"feature maps must be ordered by increasing resolution; got {names}")
        out_resolution = out_resolution or 4 * resolutions[-1]
        n_tail = math.log2(out_resolution / resolutions[-1])
        if n_tail < 0 or n_tail != int(n_tail):
            raise ValueError(f"out_resolution {out_resolution} must be the finest map's ({resolutions[-1]}) "
                             "times a power of two")
        self.config = dict(channels=dict(channels), num_classes=num_classes, width=width, dropout=dropout,
                           out_resolution=out_resolution, image_resolution=image_resolution or out_resolution)
        self.names, self.resolutions = names, resolutions
        self.lateral = nn.ModuleList(_conv_block(channels[n], width, dropout) for n in names)
        self.fuse = nn.ModuleList(_conv_block(width if i == 0 else 2 * width, width) for i in range(len(names) - 1))
        c_in = width if len(names) == 1 else 2 * width
        # one upsampling stage per doubling up to out_resolution, or a single plain stage when there is none
        self.tail_upsamples = [True] * int(n_tail) or [False]
        widths = [width] * (len(self.tail_upsamples) - 1) + [width // 2]
        self.tail = nn.ModuleList(_conv_block(a, b) for a, b in zip([c_in] + widths[:-1], widths))
        self.classifier = EqualizedConv2d(width // 2, num_classes)

    @property
    def num_classes(self) -> int:
        """Number of output classes K."""
        return self.config["num_classes"]

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Logits [B, K, R, R] at the image resolution from a generator's feature dict (extra maps are ignored)."""
        missing = [n for n in self.names if n not in features]
        if missing:
            raise KeyError(f"the decoder needs feature maps {missing}; got {list(features)}")
        x = self.lateral[0](features[self.names[0]])
        for i in range(1, len(self.names)):
            x = self.fuse[i - 1](_upsample(x, self.resolutions[i]))
            x = torch.cat([x, self.lateral[i](features[self.names[i]])], dim=1)
        for upsample, block in zip(self.tail_upsamples, self.tail):
            x = block(_upsample(x, 2 * x.shape[-1]) if upsample else x)
        logits = self.classifier(x)
        size = self.config["image_resolution"]
        return logits if logits.shape[-1] == size else _upsample(logits, size)


def accepts(G: Generator, argument: str) -> bool:
    """Whether ``G.features`` takes ``argument`` (StyleGAN2: noise_seed and truncation; BigGAN: neither)."""
    return argument in inspect.signature(G.features).parameters


def generator_features(G: Generator, z: Tensor, noise_seed: NoiseSeeds = None,
                       truncation: float | None = None) -> "OrderedDict[str, Tensor]":
    """G.features(z) with the noise seed(s) and truncation passed to generators that take them (no grad)."""
    kwargs: dict[str, Any] = {}
    for name, value in (("noise_seed", noise_seed), ("truncation", truncation)):
        if value is not None:
            if not accepts(G, name):
                raise ValueError(f"{type(G).__name__}.features takes no {name}; pass None")
            kwargs[name] = value
    with torch.no_grad():
        return G.features(z, **kwargs)


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode for the block and restores their previous modes afterwards."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def feature_channels(G: Generator, names: Sequence[str] | None = None) -> "OrderedDict[str, int]":
    """Channel count of each named map (default: every ``resN`` with N <= 128), from one G.features call."""
    with eval_mode(G):
        features = generator_features(G, G.sample_z(1, seed=0))
    available = [n for n in features if n != "image"]
    if names is None:
        names = [n for n in available if feature_resolution(n) <= MAX_FEATURE_RES]
    unknown = [n for n in names if n not in features]
    if unknown:
        raise KeyError(f"{type(G).__name__} has no feature maps {unknown}; available: {available}")
    return OrderedDict((n, features[n].shape[1]) for n in names)


def build_decoder(G: Generator, num_classes: int = 2, feature_names: Sequence[str] | None = None,
                  width: int = 128, dropout: float = 0.1) -> SemanticDecoder:
    """A fresh decoder for any helpers.gans generator; output at the image resolution (module docstring)."""
    channels = feature_channels(G, feature_names)
    finest = feature_resolution(next(reversed(channels)))
    return SemanticDecoder(channels, num_classes, width, dropout,
                           out_resolution=min(G.resolution, 4 * finest), image_resolution=G.resolution)


def save_decoder(decoder: SemanticDecoder, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Writes the decoder (config + state dict + meta) atomically."""
    obj = {"format": DECODER_FORMAT, "config": decoder.config, "meta": meta or {},
           "state_dict": {k: v.detach().cpu() for k, v in decoder.state_dict().items()}}
    save_torch(obj, path)
    return Path(path)


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> SemanticDecoder:
    """Reads a decoder written by save_decoder (weights only), in eval mode."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != DECODER_FORMAT:
        raise ValueError(f"{path} is not a projection decoder file (format {DECODER_FORMAT})")
    decoder = SemanticDecoder(**obj["config"])
    return load_strict(decoder, obj["state_dict"], str(path)).to(device).eval()


# ------------------------------------------------------------------------------------------- prediction


@dataclass
class Prediction:
    """Generated images with the decoder's class maps and class probabilities."""

    images: np.ndarray  # uint8 [B, R, R, 3]
    labels: np.ndarray  # uint8 [B, R, R], argmax class
    probs: np.ndarray  # float32 [B, K, R, R], softmax


def _as_z(G: Generator, z: Tensor | np.ndarray) -> Tensor:
    z = torch.as_tensor(np.asarray(z, dtype=np.float32) if isinstance(z, np.ndarray) else z)
    return (z.unsqueeze(0) if z.dim() == 1 else z).to(G.device, torch.float32)


def generate_images(G: Generator, z: Tensor | np.ndarray, noise_seed: NoiseSeeds = None,
                    truncation: float | None = None) -> np.ndarray:
    """uint8 [B, R, R, 3] images of the generator in eval mode for the given inputs."""
    with eval_mode(G):
        return to_uint8(generator_features(G, _as_z(G, z), noise_seed, truncation)["image"])


def predict(G: Generator, decoder: SemanticDecoder, z: Tensor | np.ndarray, noise_seed: NoiseSeeds = None,
            truncation: float | None = None) -> Prediction:
    """Images, class maps and probabilities for latents; generator and decoder run in eval mode (dropout off)."""
    with eval_mode(G, decoder), torch.no_grad():
        features = generator_features(G, _as_z(G, z), noise_seed, truncation)
        probs = decoder(features).softmax(1)
    return Prediction(to_uint8(features["image"]), probs.argmax(1).byte().cpu().numpy(),
                      probs.float().cpu().numpy())


# ---------------------------------------------------------------------------------------------- training


@dataclass
class LabelledLatent:
    """One training sample: the generator inputs that regenerate it and labels [R, R] (IGNORE_INDEX = unlabelled)."""

    z: np.ndarray
    labels: np.ndarray
    noise_seed: int | None = None
    truncation: float | None = None
    name: str = "sample"


@dataclass
class FitConfig:
    """Decoder and training settings; defaults are the reference's (see the module docstring)."""

    num_classes: int = 2
    feature_names: list[str] | None = None
    width: int = 128
    dropout: float = 0.1
    epochs: int = 24
    min_epoch_size: int = 5
    batch_size: int = 1
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 50
    class_weight_power: float = 0.0  # 0: plain cross-entropy (reference); p > 0: class c weighted by f_c ** -p


@dataclass
class FitResult:
    """The trained decoder, the step reached out of the total, and the per-step losses of this call."""

    decoder: SemanticDecoder
    step: int
    total_steps: int
    run_dir: Path
    losses: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether training ran to the end (else a later `fit` on the same folder resumes it)."""
        return self.step >= self.total_steps


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
                      class_weights: Tensor | None = None) -> Tensor:
    """(Weighted) mean cross-entropy over labelled pixels; pixels equal to ignore_index contribute nothing."""
    return F.cross_entropy(logits, labels.long(), weight=class_weights, ignore_index=ignore_index)


def class_weights(samples: Sequence[LabelledLatent], num_classes: int, power: float) -> Tensor | None:
    """Per-class loss weights f_c ** -power from the labelled-pixel shares f_c (largest class: weight 1);
    None for power 0. A class with no labelled pixel gets the weight of the rarest present class."""
    if power == 0:
        return None
    counts = np.zeros(num_classes)
    for s in samples:
        labels = np.asarray(s.labels)
        counts += np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=num_classes)[:num_classes]
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = (counts[present] / counts.max()) ** -power
    weights[~present] = weights[present].max()
    return torch.tensor(weights, dtype=torch.float32)


def settings_tag(*configs: Any) -> str:
    """Short sha256 (10 hex digits) of dataclass configs or JSON-able records, for folder names that change
    with the settings."""
    records = [asdict(c) if is_dataclass(c) else c for c in configs]
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:10]


def samples_fingerprint(samples: Sequence[LabelledLatent]) -> str:
    """sha256 (hex) over every sample's inputs and labels, in order: `fit` refuses to resume on other samples."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(np.ascontiguousarray(s.z, dtype=np.float32).tobytes())
        digest.update(json.dumps([s.noise_seed, s.truncation]).encode())
        digest.update(np.ascontiguousarray(s.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _validate(G: Generator, samples: Sequence[LabelledLatent], num_classes: int) -> None:
    """Raises ValueError naming the first sample that cannot be trained on."""
    if not samples:
        raise ValueError("no training samples: annotate at least one image")
    needs_seed = accepts(G, "noise_seed")
    for s in samples:
        labels = np.asarray(s.labels)
        problem = None
        if np.asarray(s.z).shape != (G.dim_z,):
            problem = f"z has shape {np.asarray(s.z).shape}, the generator needs ({G.dim_z},)"
        elif labels.shape != (G.resolution, G.resolution):
            problem = f"labels are {labels.shape}, the generator makes {G.resolution}x{G.resolution} images"
        elif not (labels != IGNORE_INDEX).any():
            problem = "no labelled pixel (everything is ignore); the loss would be NaN"
        elif ((labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))).any():
            problem = f"labels outside 0..{num_classes - 1} and {IGNORE_INDEX}"
        elif needs_seed and s.noise_seed is None:
            problem = "no noise seed: its features could not be recomputed"
        if problem:
            raise ValueError(f"{s.name}: {problem}")


def _epoch_order(seed: int, epoch: int, n: int, size: int) -> np.ndarray:
    """Sample order of one epoch: a permutation, or random draws with replacement when n < size."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n)[:size] if n >= size else rng.integers(n, size=size)


def _batch(G: Generator, samples: Sequence[LabelledLatent]) -> tuple["OrderedDict[str, Tensor]", Tensor]:
    """Recomputed features (one generator call per sample, so truncations may differ) and labels."""
    per_sample = [generator_features(G, _as_z(G, s.z), None if s.noise_seed is None else [s.noise_seed],
                                     s.truncation) for s in samples]
    features = OrderedDict((k, torch.cat([f[k] for f in per_sample])) for k in per_sample[0])
    labels = torch.from_numpy(np.stack([np.asarray(s.labels, dtype=np.int64) for s in samples])).to(G.device)
    return features, labels


def _truncate_log(path: Path, step: int) -> None:
    """Drops log lines written after the checkpoint being resumed, so the log has each step once."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in lines))


def fit(G: Generator, samples: Sequence[LabelledLatent], run_dir: str | os.PathLike,
        config: FitConfig | None = None, progress: bool = True,
        on_epoch: Callable[[int, SemanticDecoder], None] | None = None, stop_after: int | None = None) -> FitResult:
    """Trains a fresh decoder on annotated latents with the generator frozen; resumable in ``run_dir``.

    ``run_dir`` receives ``checkpoint.pt`` (decoder, optimizer, step, RNG; written atomically every
    ``checkpoint_every`` steps and when stopping or interrupted), ``log.jsonl`` (loss and pixel accuracy per
    step) and, once complete, ``decoder.pt``. Calling again with the same samples and config resumes (a
    complete run just loads); other samples or settings are refused. ``stop_after`` stops at that step.
    ``on_epoch(epoch, decoder)`` runs after each epoch (e.g. to preview a prediction). Resuming is exact on
    CPU, even after an interrupt (dropout draws from the CPU RNG saved as of the last finished step).
    """
    config = config or FitConfig()
    _validate(G, samples, config.num_classes)
    run_dir = Path(run_dir)
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    steps_per_epoch = max(config.min_epoch_size, len(samples)) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds the epoch size "
                         f"{max(config.min_epoch_size, len(samples))}")
    total = config.epochs * steps_per_epoch
    fingerprint, losses = samples_fingerprint(samples), []
    weights = class_weights(samples, config.num_classes, config.class_weight_power)
    weights = None if weights is None else weights.to(G.device)
    with torch.random.fork_rng(devices=[]), eval_mode(G):
        torch.manual_seed(config.seed)
        decoder = build_decoder(G, config.num_classes, config.feature_names, config.width, config.dropout).to(G.device)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
        step = 0
        if checkpoint_path.exists():
            state = load_checkpoint(checkpoint_path)
            if state["config"] != asdict(config) or state["fingerprint"] != fingerprint:
                raise ValueError(f"{checkpoint_path} belongs to other samples or settings; use a new run folder.\n"
                                 f"  checkpoint: {state['config']}\n  requested:  {asdict(config)}")
            decoder.load_state_dict(state["decoder"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            step = state["step"]
            _truncate_log(log_path, step)
        start, rng_state = step, torch.get_rng_state()  # RNG as of the last finished step

        def save_checkpoint() -> None:
            state = {"format": FIT_FORMAT, "config": asdict(config), "fingerprint": fingerprint, "step": step,
                     "total_steps": total, "decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                     "torch_rng": rng_state}
            save_torch(state, checkpoint_path)

        run_dir.mkdir(parents=True, exist_ok=True)
        end = total if stop_after is None else min(total, stop_after)
        decoder.train()
        bar = tqdm(total=total, initial=step, desc="training decoder", disable=not progress)
        try:
            with open(log_path, "a") as log:
                while step < end:
                    epoch, position = divmod(step, steps_per_epoch)
                    order = _epoch_order(config.seed, epoch, len(samples), steps_per_epoch * config.batch_size)
                    batch = [samples[i] for i in order[position * config.batch_size:(position + 1) * config.batch_size]]
                    features, labels = _batch(G, batch)
                    logits = decoder(features)
                    loss = segmentation_loss(logits, labels, class_weights=weights)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step, rng_state = step + 1, torch.get_rng_state()
                    labelled = labels != IGNORE_INDEX
                    accuracy = (logits.argmax(1) == labels)[labelled].float().mean().item()
                    losses.append(loss.item())
                    record = {"step": step, "epoch": epoch, "loss": losses[-1], "accuracy": accuracy}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracy:.3f}", refresh=False)
                    if step % config.checkpoint_every == 0:
                        save_checkpoint()
                    if on_epoch is not None and step % steps_per_epoch == 0:
                        on_epoch(step // steps_per_epoch, decoder)
        finally:  # done, stopped or interrupted: keep the progress
            bar.close()
            if step > start or not checkpoint_path.exists():
                save_checkpoint()
        if step >= total and (step > start or not (run_dir / "decoder.pt").exists()):
            save_decoder(decoder, run_dir / "decoder.pt",
                         {"fit_config": asdict(config), "fingerprint": fingerprint, "steps": step})
    return FitResult(decoder.eval(), step, total, run_dir, losses)


def read_log(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The per-step records of a fit's log.jsonl."""
    path = Path(run_dir) / "log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []


# ---------------------------------------------------------------------------------- synthetic datasets


def draw_inputs(G: Generator, seed: int, indices: Sequence[int]) -> tuple[np.ndarray, list[int] | None]:
    """z [n, dim_z] float32 and per-sample noise seeds (None for generators without noise), one RNG per index."""
    rngs = [np.random.default_rng([seed, int(i)]) for i in indices]
    z = np.stack([rng.standard_normal(G.dim_z, dtype=np.float32) for rng in rngs])
    seeds = [int(rng.integers(2**31)) for rng in rngs] if accepts(G, "noise_seed") else None
    return z, seeds


class LabelRefiner(Protocol):
    """Turns images and the decoder's probabilities into class maps (e.g. `helpers.refinement.MaskRefiner`)."""

    fingerprint: str

    def __call__(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray: ...


def _refined(refiner: LabelRefiner, pred: Prediction) -> np.ndarray:
    """The refiner's class maps for a prediction, checked against the decoder's shape, as uint8."""
    labels = np.asarray(refiner(pred.images, pred.probs))
    if labels.shape != pred.labels.shape:
        raise ValueError(f"the refiner returned masks of shape {labels.shape}; expected {pred.labels.shape}")
    return labels.astype(np.uint8)


def synthetic_batch_fn(G: Generator, decoder: SemanticDecoder, shard_size: int, batch_size: int = 16,
                       seed: int = 0, truncation: float | None = None, latents: np.ndarray | None = None,
                       noise_seeds: Sequence[int] | None = None, refiner: LabelRefiner | None = None
                       ) -> Callable[[int, int], dict[str, np.ndarray]]:
    """``make_batch(shard_index, n)`` for write_shards: images, predicted masks, z, noise_seed, truncation.

    Sample i (= shard_index * shard_size + row) uses ``latents[i]`` (and ``noise_seeds[i]`` when given) or
    inputs drawn from (seed, i), so each shard depends only on its index. Features are computed batch by
    batch and dropped. Masks are the decoder's arg-max, or ``refiner(images, probs)`` when one is given.
    ``noise_seed`` is -1 and ``truncation`` NaN where the generator takes none.
    """
    def make_batch(shard_index: int, n: int) -> dict[str, np.ndarray]:
        indices = list(range(shard_index * shard_size, shard_index * shard_size + n))
        z, seeds = draw_inputs(G, seed, indices)
        if latents is not None:
            z = np.asarray(latents[indices[0]:indices[-1] + 1], dtype=np.float32)
        if noise_seeds is not None and seeds is not None:
            seeds = [int(s) for s in noise_seeds[indices[0]:indices[-1] + 1]]
        images, masks = [], []
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            pred = predict(G, decoder, z[part], None if seeds is None else seeds[part], truncation)
            images.append(pred.images)
            masks.append(pred.labels if refiner is None else _refined(refiner, pred))
        return {"images": np.concatenate(images), "masks": np.concatenate(masks), "z": z,
                "noise_seed": np.asarray(seeds if seeds is not None else [-1] * n, dtype=np.int64),
                "truncation": np.full(n, np.nan if truncation is None else truncation, dtype=np.float32)}

    return make_batch


def generate_dataset(G: Generator, decoder: SemanticDecoder, folder: str | os.PathLike, n_total: int,
                     shard_size: int = 1000, batch_size: int = 16, seed: int = 0, truncation: float | None = None,
                     latents: np.ndarray | None = None, noise_seeds: Sequence[int] | None = None,
                     attrs: dict[str, Any] | None = None, progress: bool = True,
                     refiner: LabelRefiner | None = None) -> Path:
    """Writes n_total synthetic (image, mask, z, noise seed) pairs as HDF5 shards; resumes an interrupted run.

    Inputs come from ``latents``/``noise_seeds`` (stored ones) or are drawn from ``seed``; masks from the
    decoder or the ``refiner``; see synthetic_batch_fn. ``attrs`` (e.g. the generator and decoder files) go
    into the shard manifest with the sampling settings and the refiner's fingerprint, so a folder made with
    other settings is refused.
    """
    if latents is not None and len(latents) < n_total:
        raise ValueError(f"{len(latents)} latents for {n_total} samples")
    if noise_seeds is not None and len(noise_seeds) < n_total:
        raise ValueError(f"{len(noise_seeds)} noise seeds for {n_total} samples")
    make_batch = synthetic_batch_fn(G, decoder, shard_size, batch_size, seed, truncation, latents, noise_seeds,
                                    refiner)
    source = "latents" if latents is not None else f"seed {seed}"
    settings = {"source": "semantic projection", "inputs": source, "truncation": truncation,
                "generator": type(G).__name__, "decoder": decoder.config, **(attrs or {})}
    if refiner is not None:
        if "refiner" in settings:
            raise ValueError("attrs must not hold 'refiner': it records the refiner's fingerprint")
        settings["refiner"] = refiner.fingerprint
    return write_shards(folder, n_total, make_batch, shard_size=shard_size, attrs=settings, progress=progress)
