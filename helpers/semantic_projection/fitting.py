"""Fitting the semantic-projection decoder on a few annotated generated images; resumable in a run folder.

Reference settings: a fresh decoder every call, cross-entropy with ``ignore_index = -1``, Adam lr 1e-3
(default betas, no weight decay, no schedule), batch 1, 24 epochs of ``max(5, N)`` samples
(fewer than 5 samples are drawn at random with replacement), no augmentation.

Beyond the reference: ``class_weight_power = p > 0`` weights the cross-entropy of class c by
(f_c)^-p, f_c being its share of the labelled pixels of the training samples (normalised so background-like
majority classes get about 1). With few annotations, mostly background, plain cross-entropy (p = 0, the
reference) can end with a decoder that predicts background everywhere; p = 0.5 avoids that.

Training samples are stored as generator inputs (z, noise seed, truncation). The frozen generator is
deterministic, so each sample's feature maps (those the decoder reads) are computed once per fit and kept for
its later epochs: the same inputs the reference re-reads from its feature files every step, without the
generator call of each step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from helpers.core.runs import RunFolder
from helpers.core.runtime import eval_mode
from helpers.gans.base import Generator
from helpers.semantic_projection.decoder import (
    SemanticDecoder,
    _as_z,
    accepts,
    build_decoder,
    generator_features,
    save_decoder,
)

IGNORE_INDEX = -1  # label of unannotated pixels in training targets (the reference's value)


FIT_FORMAT = "gan-seg-notebooks/projection-fit-v1"


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


def segmentation_loss(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, class_weights: Tensor | None = None
) -> Tensor:
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


class FeatureCache:
    """The feature maps named ``names`` of each training sample, computed by the generator on first use (one call
    per sample, so truncations may differ) and kept: a fit reads every sample once per epoch."""

    def __init__(self, G: Generator, samples: Sequence[LabelledLatent], names: Sequence[str]):
        self.G, self.samples, self.names = G, samples, list(names)
        self.features: dict[int, OrderedDict[str, Tensor]] = {}

    def __getitem__(self, index: int) -> OrderedDict[str, Tensor]:
        if index not in self.features:
            s = self.samples[index]
            maps = generator_features(
                self.G, _as_z(self.G, s.z), None if s.noise_seed is None else [s.noise_seed], s.truncation
            )
            self.features[index] = OrderedDict((n, maps[n]) for n in self.names)
        return self.features[index]

    def batch(self, indices: Sequence[int]) -> tuple[OrderedDict[str, Tensor], Tensor]:
        """Features [B, C, h, w] per name and labels [B, R, R] of samples ``indices``."""
        per_sample = [self[i] for i in indices]
        features = OrderedDict((n, torch.cat([f[n] for f in per_sample])) for n in self.names)
        labels = np.stack([np.asarray(self.samples[i].labels, dtype=np.int64) for i in indices])
        return features, torch.from_numpy(labels).to(self.G.device)


def fit(
    G: Generator,
    samples: Sequence[LabelledLatent],
    run_dir: str | os.PathLike,
    config: FitConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, SemanticDecoder], None] | None = None,
    stop_after: int | None = None,
) -> FitResult:
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
    run = RunFolder(run_dir)
    steps_per_epoch = max(config.min_epoch_size, len(samples)) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the epoch size {max(config.min_epoch_size, len(samples))}"
        )
    total = config.epochs * steps_per_epoch
    fingerprint, losses = samples_fingerprint(samples), []
    weights = class_weights(samples, config.num_classes, config.class_weight_power)
    weights = None if weights is None else weights.to(G.device)
    with torch.random.fork_rng(devices=[]), eval_mode(G):
        torch.manual_seed(config.seed)
        decoder = build_decoder(G, config.num_classes, config.feature_names, config.width, config.dropout).to(G.device)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
        step = 0
        if run.has_checkpoint():
            state = run.resume(
                asdict(config),
                clash="belongs to other samples or settings",
                remedy="",
                expect={"fingerprint": fingerprint},
            )
            decoder.load_state_dict(state["decoder"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            step = state["step"]
        start, rng_state = step, torch.get_rng_state()  # RNG as of the last finished step
        cache = FeatureCache(G, samples, decoder.names)

        def save_checkpoint() -> None:
            state = {
                "format": FIT_FORMAT,
                "config": asdict(config),
                "fingerprint": fingerprint,
                "step": step,
                "total_steps": total,
                "decoder": decoder.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": rng_state,
            }
            run.save(state)

        end = total if stop_after is None else min(total, stop_after)
        decoder.train()
        bar = tqdm(total=total, initial=step, desc="training decoder", disable=not progress)
        try:
            with run.log() as log:
                while step < end:
                    epoch, position = divmod(step, steps_per_epoch)
                    order = _epoch_order(config.seed, epoch, len(samples), steps_per_epoch * config.batch_size)
                    batch = order[position * config.batch_size : (position + 1) * config.batch_size]
                    features, labels = cache.batch(batch)
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
                    log(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracy:.3f}", refresh=False)
                    if step % config.checkpoint_every == 0:
                        save_checkpoint()
                    if on_epoch is not None and step % steps_per_epoch == 0:
                        on_epoch(step // steps_per_epoch, decoder)
        finally:  # done, stopped or interrupted: keep the progress
            bar.close()
            if step > start or not run.has_checkpoint():
                save_checkpoint()
        if step >= total and (step > start or not (run_dir / "decoder.pt").exists()):
            save_decoder(
                decoder,
                run_dir / "decoder.pt",
                {"fit_config": asdict(config), "fingerprint": fingerprint, "steps": step},
            )
    return FitResult(decoder.eval(), step, total, run_dir, losses)


def read_log(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The per-step records of a fit's log.jsonl."""
    return RunFolder(run_dir).read_log()
