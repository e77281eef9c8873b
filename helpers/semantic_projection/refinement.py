"""Learned refinement of the decoder's masks (beyond the papers), trained on the same annotations.

The semantic-projection decoder draws masks that are rounder and smoother than the objects
(docs/semantic_projection.md#the-learned-refiner):
it sees the generator's feature maps, not the image's edges. The refiner is a small U-Net on the image
plus the decoder's class probabilities that predicts the classes again. What it learns from are
*held-out* predictions: the annotations are split into folds, a decoder fitted on the other folds
predicts each fold, so every input shows the decoder's errors on an image it never trained on, and the
target is that image's annotation (unannotated pixels ignored). Batches are augmented with the eight
flips and quarter turns. Twenty images are few for an image-space network, so single refiners vary with
their seed; the refiner is an ensemble of ``members`` U-Nets (`RefinerConfig.member_seed`) whose softmax
probabilities are averaged. Dataset generation then passes each new image and the full decoder's
probabilities through the refiner. No label beyond the annotations is used.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from helpers.core.modules import weights_fingerprint
from helpers.core.runs import RunFolder
from helpers.gans.base import Generator
from helpers.segmentation import (
    SegmentationSettings,
    SegmentationTrainer,
    UNet,
    dihedral_pairs,
    images_to_input,
    predict_softmax,
)
from helpers.segmentation.sources import arrays_digest
from helpers.semantic_projection.decoder import predict
from helpers.semantic_projection.fitting import IGNORE_INDEX, FitConfig, LabelledLatent, fit, samples_fingerprint


@dataclass
class RefinerConfig:
    """Folds of the held-out predictions and the refiner's U-Net and training recipe."""

    folds: int = 4
    members: int = 3
    width: int = 16
    steps: int = 750
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(
                f"folds must be at least 2 (each fold is predicted by a decoder fitted on the others); got {self.folds}"
            )
        if self.members < 1:
            raise ValueError(f"members must be at least 1; got {self.members}")

    def member_seed(self, member: int) -> int:
        """Seed of ensemble member ``member``: seed * members + member (0, 1, 2 for seed 0), so ensembles of
        different seeds share no member."""
        return self.seed * self.members + member


@dataclass
class HeldOut:
    """Each annotated image with the probabilities of a decoder that did not train on it, and its labels."""

    images: np.ndarray  # uint8 [N, R, R, 3]
    probs: np.ndarray  # float32 [N, K, R, R]
    labels: np.ndarray  # int64 [N, R, R], IGNORE_INDEX where unannotated


def fold_indices(n: int, folds: int) -> list[list[int]]:
    """Sample i goes to fold i mod folds (at most n folds); every fold is non-empty."""
    folds = min(folds, n)
    return [list(range(f, n, folds)) for f in range(folds)]


def held_out_predictions(
    G: Generator,
    samples: list[LabelledLatent],
    run_dir: str | os.PathLike,
    fit_config: FitConfig,
    folds: int = 4,
    progress: bool = True,
) -> HeldOut:
    """Fits one decoder per fold on the other folds (in ``run_dir/fold_f``, resumable) and predicts the fold."""
    if len(samples) < 2:
        raise ValueError(f"held-out predictions need at least 2 annotations; got {len(samples)}")
    if folds < 2:
        raise ValueError(f"held-out predictions need at least 2 folds; got {folds}")
    images, probs = [None] * len(samples), [None] * len(samples)
    for f, held in enumerate(fold_indices(len(samples), folds)):
        rest = [s for i, s in enumerate(samples) if i not in held]
        decoder = fit(G, rest, Path(run_dir) / f"fold_{f}", fit_config, progress=progress).decoder
        for i in held:
            s = samples[i]
            pred = predict(G, decoder, s.z, None if s.noise_seed is None else [s.noise_seed], s.truncation)
            images[i], probs[i] = pred.images[0], pred.probs[0]
    return HeldOut(np.stack(images), np.stack(probs), np.stack([np.asarray(s.labels, np.int64) for s in samples]))


def refiner_input(images: np.ndarray, probs: np.ndarray) -> Tensor:
    """[N, 3 + K, H, W]: the images as the U-Nets see them ([-1, 1]) and the probabilities mapped to [-1, 1]."""
    return torch.cat([images_to_input(images), torch.as_tensor(np.asarray(probs, np.float32)) * 2 - 1], 1)


class DihedralBatches:
    """Seeded batches of refiner inputs and labels, each sample under one of the 8 flips and quarter turns."""

    def __init__(self, held_out: HeldOut, batch_size: int, seed: int = 0):
        self.x, self.y = refiner_input(held_out.images, held_out.probs), torch.from_numpy(held_out.labels)
        self.batch_size, self.seed = batch_size, seed

    def record(self) -> dict:
        """What determines the batches (`helpers.segmentation.sources.source_record`)."""
        return {
            "held_out": arrays_digest(self.x.numpy(), self.y.numpy()),
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def __call__(self, step: int) -> tuple[Tensor, Tensor]:
        """Batch number ``step`` (the same for the same seed and step)."""
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(len(self.x), size=self.batch_size)
        turns, flips = rng.integers(4, size=self.batch_size), rng.integers(2, size=self.batch_size)
        return dihedral_pairs(self.x[idx], self.y[idx], turns + 4 * flips)


class MaskRefiner:
    """Trained refiner U-Nets: ``refiner(images, probs)`` gives the arg-max of their mean softmax as uint8
    class maps; ``fingerprint`` names the weights of all members."""

    def __init__(self, models: list[nn.Module], batch_size: int = 64):
        if not models:
            raise ValueError("a refiner needs at least one model")
        self.models, self.batch_size = [m.eval() for m in models], batch_size
        digest = hashlib.sha256("".join(weights_fingerprint(m) for m in models).encode())
        self.fingerprint = digest.hexdigest()[:16]

    def probabilities(self, images: np.ndarray, probs: np.ndarray) -> Tensor:
        """Mean softmax [N, K, H, W] of the members for uint8 images [N, H, W, 3] and decoder probabilities
        (`predict_softmax`: the precision the members trained in)."""
        x = refiner_input(images, probs)
        return torch.stack([predict_softmax(m, x, self.batch_size) for m in self.models]).mean(0)

    def __call__(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Refined classes uint8 [N, H, W]."""
        return self.probabilities(images, probs).argmax(1).numpy().astype(np.uint8)


def train_refiner(
    held_out: HeldOut,
    run_dir: str | os.PathLike,
    config: RefinerConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> MaskRefiner:
    """The refiner's U-Nets (``run_dir/member_m``) trained on held-out predictions; resumable, finished ones load.

    A member's folder resumes whatever data it is given: `fit_refiner` guards it against other annotations
    and settings.
    """
    config = config or RefinerConfig()
    num_classes = held_out.probs.shape[1]
    models = []
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG as it was
        for member in range(config.members):
            seed = config.member_seed(member)
            torch.manual_seed(seed)  # the U-Net's initial weights
            model = UNet(n_channels=3 + num_classes, n_classes=num_classes, width=config.width)
            settings = SegmentationSettings(
                steps=config.steps,
                lr=config.lr,
                lr_step=config.steps,  # no decay
                checkpoint_every=500,
                seed=seed,
                ignore_index=IGNORE_INDEX,
            )
            trainer = SegmentationTrainer(Path(run_dir) / f"member_{member}", model, settings, device)
            trainer.train(DihedralBatches(held_out, config.batch_size, seed), progress=progress)
            models.append(trainer.model)
    return MaskRefiner(models)


def refiner_record(samples: list[LabelledLatent], fit_config: FitConfig, config: RefinerConfig) -> dict[str, Any]:
    """What determines a refiner: the annotations' fingerprint and both configs (kept in ``refiner.json``)."""
    return {"samples": samples_fingerprint(samples), "refiner": asdict(config), "decoder": asdict(fit_config)}


def fit_refiner(
    G: Generator,
    samples: list[LabelledLatent],
    run_dir: str | os.PathLike,
    fit_config: FitConfig,
    config: RefinerConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> MaskRefiner:
    """Held-out decoder predictions (``run_dir/decoders``), then the refiner (``run_dir/refiner``); resumable.

    ``run_dir/refiner.json`` records the samples' fingerprint and both configs: a folder made from other
    annotations or settings is refused.
    """
    config = config or RefinerConfig()
    run_dir = Path(run_dir)
    RunFolder(run_dir).claim_record(
        "refiner.json", refiner_record(samples, fit_config, config), "a refiner of other annotations or settings"
    )
    held_out = held_out_predictions(G, samples, run_dir / "decoders", fit_config, config.folds, progress)
    return train_refiner(held_out, run_dir / "refiner", config, device, progress)
