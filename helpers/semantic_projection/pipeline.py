"""Notebook 05's pipeline as one call: annotations -> decoder (-> refiner) -> synthetic shards -> U-Net, and the
test protocols it is scored with.

Each stage lives in a folder under ``out`` named after the annotations' fingerprint and the stage's settings, so a
stage resumes when interrupted, is reused when complete, and other settings make a new folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from helpers.core.distributed import on_ranks
from helpers.core.runs import settings_tag
from helpers.gans.base import Generator
from helpers.segmentation import (
    DihedralAverage,
    SegmentationSettings,
    SegmentationTrainer,
    ShardBatches,
    UNet,
    class_probabilities,
    multiclass_scores,
    train_job,
)
from helpers.segmentation.grabcut import TrimapGrabCut
from helpers.semantic_projection.dataset import generate_dataset
from helpers.semantic_projection.fitting import FitConfig, FitResult, LabelledLatent, fit, samples_fingerprint
from helpers.semantic_projection.refinement import MaskRefiner, RefinerConfig, fit_refiner


@dataclass(frozen=True)
class UNetRecipe:
    """How the U-Net of the main run trains; shorter runs (the learning curve) scale the learning-rate drop."""

    steps: int
    lr_step: int
    batch: int
    width: int
    augment: str = "dihedral"
    seed: int = 0

    def settings(self, steps: int) -> SegmentationSettings:
        """The trainer settings of a run of ``steps`` steps: the drop at the same fraction of the run."""
        return SegmentationSettings(
            steps=steps, lr_step=max(1, steps * self.lr_step // self.steps), checkpoint_every=100, seed=self.seed
        )


class ProjectionRun(NamedTuple):
    """The stages of one pipeline run."""

    fitted: FitResult
    refiner: MaskRefiner | None
    shards: Path
    unet: SegmentationTrainer


@dataclass
class ProjectionPipeline:
    """Runs the semantic-projection pipeline on a frozen generator for any subset of the annotations; with
    ``gpus`` > 1 the synthetic dataset and the U-Net are made by that many torchrun processes."""

    generator: Generator
    out: Path
    fit_config: FitConfig
    refiner_config: RefinerConfig
    unet: UNetRecipe
    num_classes: int
    shard_size: int = 1000
    device: str | torch.device = "cpu"
    gpus: int = 1
    _datasets: dict[str, tuple[int, Path]] = field(default_factory=dict, init=False, repr=False)

    def run(self, samples: list[LabelledLatent], n_synthetic: int, steps: int | None = None) -> ProjectionRun:
        """Decoder (and refiner, from two annotations on) fitted on ``samples``, ``n_synthetic`` generated pairs,
        and a U-Net trained on them for ``steps`` steps (default: the recipe's). Seeds torch's global RNG with the
        recipe's seed before building the U-Net, so its initial weights depend on the seed alone. A dataset of the
        same decoder and refiner made earlier by this pipeline (the main run's, for the curve's last point) lends its
        shards: the first 1,000 pairs of a larger run are the 1,000 pairs of a smaller one."""
        steps = self.unet.steps if steps is None else steps
        seed = self.unet.seed
        tag = f"k{len(samples)}_{samples_fingerprint(samples)[:10]}_{settings_tag(self.fit_config)}"
        fitted = fit(self.generator, samples, self.out / "decoders" / tag, self.fit_config)
        refiner = None
        if self.refiner_config.steps > 0 and len(samples) >= 2:  # held-out predictions need two annotations
            refiner = fit_refiner(
                self.generator,
                samples,
                self.out / "refiners" / f"{tag}_{settings_tag(self.refiner_config)}",
                self.fit_config,
                self.refiner_config,
                self.device,
            )
        suffix = f"_r{refiner.fingerprint[:8]}" if refiner else ""
        data_tag = f"{tag}_n{n_synthetic}{suffix}"
        donor = self._datasets.get(tag + suffix)  # the same pairs at another size: its shards are linked, not redone
        shards = on_ranks(
            partial(
                generate_dataset,
                self.generator,
                fitted.decoder,
                self.out / "synthetic" / data_tag,
                n_synthetic,
                shard_size=min(self.shard_size, n_synthetic),
                seed=seed + 1,
                attrs={"annotations": tag},
                refiner=refiner,
                donor=None if donor is None else donor[1],
            ),
            self.gpus,
            self.out / "jobs",
            self.device,
        )
        if donor is None or n_synthetic > donor[0]:
            self._datasets[tag + suffix] = n_synthetic, shards
        settings = self.unet.settings(steps)
        batches = ShardBatches(shards, self.unet.batch, seed=seed, augment=self.unet.augment)
        torch.manual_seed(seed)
        unet = UNet(n_classes=self.num_classes, width=self.unet.width)
        unet_tag = settings_tag(
            settings, {"batch": self.unet.batch, "width": self.unet.width, "augment": self.unet.augment}
        )
        run_dir = self.out / "unets" / f"{data_tag}_s{steps}_{unet_tag}"
        trainer = on_ranks(
            partial(train_job, run_dir, unet, settings, batches, self.device), self.gpus, self.out / "jobs", self.device
        )
        return ProjectionRun(fitted, refiner, shards, trainer)


class ScoredProtocols(NamedTuple):
    """`ScoringProtocols.score_all`'s result: scores by protocol key, and the configured views' probabilities."""

    scores: dict[str, dict[str, Any]]
    probs: np.ndarray
    refined: np.ndarray


@dataclass
class ScoringProtocols:
    """Scores a 3-class model on labelled test images: the configured protocol (eight-view average if
    ``dihedral_tta``, GrabCut re-fit if ``refit``) and each of those steps left out."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    dihedral_tta: bool = True
    refit: TrimapGrabCut | None = None
    name: str = "procedural_test"

    def probabilities(self, model: torch.nn.Module, tta: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The model's class probabilities (view-averaged if ``tta``), and the same after the re-fit if any."""
        tta = self.dihedral_tta if tta is None else tta
        probs = class_probabilities(DihedralAverage(model) if tta else model, self.images)
        return probs, (self.refit(self.images, probs) if self.refit else probs)

    def scores(self, probs: np.ndarray) -> dict[str, Any]:
        """Binary object scores (class >= 1) and per-class IoU of class probabilities."""
        s = multiclass_scores(probs, self.labels, len(self.classes))
        return {
            "binary": s["binary"],
            "class_iou": dict(zip(self.classes, s["class_iou"])),
            "mean_iou": s["mean_iou"],
            "pixel_accuracy": s["pixel_accuracy"],
        }

    def key(self, tta: bool, grabcut: bool) -> str:
        """The metrics key of a protocol: the configured one is ``name``; each step left out adds a suffix."""
        return (
            self.name
            + ("" if tta == self.dihedral_tta else "_single_view")
            + ("" if grabcut == (self.refit is not None) else "_without_grabcut")
        )

    def score_all(self, model: torch.nn.Module) -> ScoredProtocols:
        """Every protocol's scores, the configured one first (one forward pass per view setting), and the
        configured views' probabilities without and with the re-fit (for figures)."""
        results, configured = {}, None
        for tta in dict.fromkeys([self.dihedral_tta, False]):
            own, refined = self.probabilities(model, tta)
            if configured is None:
                configured = own, refined
            for grabcut, probs in {self.refit is not None: refined, False: own}.items():
                results[self.key(tta, grabcut)] = self.scores(probs)
        return ScoredProtocols(results, *configured)


def format_scores(scores: dict[str, Any]) -> str:
    """One line of the binary and per-class scores."""
    return (
        f"binary object IoU {scores['binary']['iou']:.3f}, F_max {scores['binary']['f_max']:.3f}; class IoU "
        + ", ".join(f"{k} {v:.3f}" for k, v in scores["class_iou"].items())
    )


def curve_point(protocols: ScoringProtocols, model: torch.nn.Module, k: int) -> dict[str, int | float]:
    """One point of the IoU-against-annotations curve, scored with the configured protocol (and without the
    re-fit when there is one)."""
    own, refined = protocols.probabilities(model)
    s = protocols.scores(refined)
    point = {
        "k": k,
        "binary_iou": s["binary"]["iou"],
        "f_max": s["binary"]["f_max"],
        **{f"{name}_iou": v for name, v in s["class_iou"].items()},
    }
    if protocols.refit is not None:
        point["binary_iou_without_grabcut"] = protocols.scores(own)["binary"]["iou"]
    return point
