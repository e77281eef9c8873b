"""Simulated annotator: multi-class annotations of generated images, made without a person.

A 3-class U-Net (background / object / part) is trained on the ground truth of the procedural train
split (the *labeller*), applied to generator images drawn from fixed seeds exactly as
`helpers.widgets.annotator.Annotator` draws them (``draw_inputs(G, image_seed, [i])``, the generator's
configured truncation), and its confident pixels become the annotation: a pixel gets the arg-max class
where the top softmax probability is at least ``threshold`` and stays *ignore* (255) elsewhere, which
leaves an ignore band along class boundaries and wherever the network hesitates. Generated images lie
outside the labeller's training domain and it is rarely very sure of the object class there, so the
default threshold is 0.6: on the 64-px default StyleGAN2, 0.9 labelled 1.6 % of the pixels as object
(0.6: about 7 %, close to the 9 % the arg-max gives), and a short run of notebook 05's pipeline (20
annotations, 1000 synthetic pairs, 200 U-Net steps) reached a binary test IoU of 0.31 with 0.9 and 0.48
with 0.6. Samples are written
with `AnnotationStore` in multiclass mode (classes background, object, part), so the files are exactly
those a person produces with the annotator. The settings, the labeller's scores on the procedural val
split and the labelled fraction of every class per sample go to ``simulated_annotator.json`` beside the
store's ``store.json``.

Labeller training runs through `SegmentationTrainer` in ``run_dir`` and resumes there; a run folder made
with other training settings is refused. Writing resumes too: sample ``i`` gets id ``i``, samples already
in the store are checked (same latent) and kept.

Command line::

    python -m helpers.semantic_projection.simulated_annotator OUT_FOLDER --n 20 [--generator default-stylegan2]
        [--run-dir RUN_DIR] [--threshold 0.6] [--image-seed 0] [--steps 600] [--batch-size 32]
        [--lr-step 400] [--width 16] [--seed 0] [--image-size 64] [--n-train 20000] [--n-val 1000]
        [--n-test 1000] [--split-seed 0] [--device cpu]

``RUN_DIR`` defaults to ``OUT_FOLDER/../simulated_annotator_run`` (keep it out of a shipped folder).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.core.io import write_json
from helpers.core.runs import RunFolder
from helpers.data.splits import ProceduralSplits, load_split
from helpers.gans import load
from helpers.segmentation import (
    ArrayBatches,
    SegmentationSettings,
    SegmentationTrainer,
    UNet,
    class_probabilities,
    multiclass_scores,
)
from helpers.semantic_projection.annotations import MULTICLASS_IGNORE, AnnotationStore
from helpers.semantic_projection.dataset import draw_inputs
from helpers.semantic_projection.decoder import accepts, generate_images

CLASSES = ["background", "object", "part"]
REPORT_NAME = "simulated_annotator.json"


@dataclass
class LabellerConfig:
    """What determines the labeller: U-Net width, training recipe and the procedural splits it learns from."""

    width: int = 16
    steps: int = 600
    batch_size: int = 32
    lr_step: int = 400
    seed: int = 0
    image_size: int = 64
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 1000
    split_seed: int = 0

    @property
    def splits(self) -> ProceduralSplits:
        """The procedural splits the labeller is trained and validated on."""
        return ProceduralSplits(self.image_size, self.n_train, self.n_val, self.n_test, self.split_seed)


def train_labeller(
    run_dir: str | os.PathLike, config: LabellerConfig | None = None, device: str = "cpu", progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Trains (or resumes, or just loads) the 3-class U-Net on the procedural train split; returns it and its log.

    The log holds the step reached, the training seconds summed over all calls (kept in ``run_dir``) and the
    labeller's scores on the val split.
    """
    config = config or LabellerConfig()
    run_dir = Path(run_dir)
    RunFolder(run_dir).claim_record("labeller.json", asdict(config), "a labeller trained with other settings")
    images, labels = load_split(config.splits, "train", progress)
    settings = SegmentationSettings(steps=config.steps, lr_step=config.lr_step, checkpoint_every=100, seed=config.seed)
    torch.manual_seed(config.seed)  # the U-Net's initial weights
    trainer = SegmentationTrainer(run_dir, UNet(n_classes=len(CLASSES), width=config.width), settings, device)
    start = time.monotonic()
    step = trainer.train(ArrayBatches(images, labels, config.batch_size, seed=config.seed), progress=progress)
    seconds_path = run_dir / "train_seconds.json"
    seconds = time.monotonic() - start + (json.loads(seconds_path.read_text()) if seconds_path.exists() else 0.0)
    write_json(seconds_path, seconds)
    model = trainer.model.eval()
    val_images, val_labels = load_split(config.splits, "val", progress)
    return model, {"step": step, "train_seconds": seconds, "val": labeller_scores(model, val_images, val_labels)}


def confident_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 masks [N, H, W]: the arg-max class where its probability >= threshold, else 255 (ignore)."""
    labels = probs.argmax(1).astype(np.uint8)
    labels[probs.max(1) < threshold] = MULTICLASS_IGNORE
    return labels


def label_fractions(masks: np.ndarray) -> dict[str, float]:
    """Fraction of pixels given each class and left ignore, over all masks."""
    masks = np.asarray(masks)
    fractions = {name: float((masks == k).mean()) for k, name in enumerate(CLASSES)}
    return {**fractions, "ignore": float((masks == MULTICLASS_IGNORE).mean())}


def labeller_scores(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, thresholds: tuple[float, ...] = (0.6, 0.8, 0.9)
) -> dict[str, Any]:
    """Per-class and binary (class >= 1) IoU on labelled images, and the coverage/accuracy of confident labels."""
    probs = class_probabilities(model, images)
    scores = multiclass_scores(probs, labels, len(CLASSES))
    binary = scores["binary"]
    confident = {}
    for threshold in thresholds:
        masks = confident_labels(probs, threshold)
        labelled = masks != MULTICLASS_IGNORE
        confident[str(threshold)] = {
            "labelled_fraction": float(labelled.mean()),
            "accuracy": float((masks[labelled] == labels[labelled]).mean()) if labelled.any() else None,
        }
    return {
        "class_iou": dict(zip(CLASSES, scores["class_iou"])),
        "mean_iou": scores["mean_iou"],
        "binary_iou": binary["iou"],
        "binary_f_max": binary["f_max"],
        "confident_labels": confident,
    }


def write_annotations(
    store_dir: str | os.PathLike,
    model: nn.Module,
    n: int,
    generator: str = "default-stylegan2",
    threshold: float = 0.6,
    image_seed: int = 0,
    device: str = "cpu",
) -> AnnotationStore:
    """Annotates images 0..n-1 of the seeded sequence with the labeller's confident labels (module docstring)."""
    G = load(generator, device).eval()
    store = AnnotationStore.open_or_create(store_dir, generator, "multiclass", CLASSES)
    if store.classes != CLASSES:
        raise ValueError(f"{store.index_path} has classes {store.classes}, not {CLASSES}")
    truncation = float(G.config.get("truncation_psi", 1.0)) if accepts(G, "truncation") else None
    z, seeds = draw_inputs(G, image_seed, range(n))
    images = generate_images(G, z, seeds, truncation)
    masks = confident_labels(class_probabilities(model, images), threshold)
    existing = set(store.ids())
    for i in range(n):
        if i in existing:
            if not np.array_equal(store.load(i).z, z[i]):
                raise ValueError(
                    f"sample {i} in {store.samples_dir} is not image {i} of seed {image_seed}; use an empty folder"
                )
            continue
        store.save(masks[i], z[i], None if seeds is None else seeds[i], truncation, sample_id=i)
    return store


def simulate(
    store_dir: str | os.PathLike,
    n: int = 20,
    run_dir: str | os.PathLike | None = None,
    generator: str = "default-stylegan2",
    threshold: float = 0.6,
    image_seed: int = 0,
    config: LabellerConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the labeller, writes n annotations and the report ``simulated_annotator.json``; returns the report."""
    config = config or LabellerConfig()
    store_dir = Path(store_dir)
    run_dir = Path(run_dir) if run_dir is not None else store_dir.parent / "simulated_annotator_run"
    model, log = train_labeller(run_dir, config, device, progress)
    store = write_annotations(store_dir, model, n, generator, threshold, image_seed, device)
    masks = np.stack([a.mask for a in store.load_all()])
    report = {
        "description": "annotations made by a 3-class U-Net trained on the procedural train split's ground truth: "
        "a pixel is labelled with the arg-max class where its softmax probability >= threshold, "
        f"else ignore ({MULTICLASS_IGNORE})",
        "generator": generator,
        "n": n,
        "threshold": threshold,
        "image_seed": image_seed,
        "classes": CLASSES,
        "labeller": {
            **asdict(config),
            "steps_reached": log["step"],
            "run_dir": str(run_dir.resolve()),
            "train_seconds": round(log["train_seconds"], 1),
        },
        "labeller_val_scores": log["val"],
        "label_fractions": label_fractions(masks),
        "per_sample_label_fractions": [label_fractions(m) for m in masks],
    }
    write_json(store_dir / REPORT_NAME, report)
    return report


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_folder", help="annotation store folder (created if missing)")
    parser.add_argument("--n", type=int, default=20, help="number of annotated images")
    parser.add_argument("--generator", default="default-stylegan2")
    parser.add_argument("--run-dir", default=None, help="labeller training folder (resumable)")
    parser.add_argument("--threshold", type=float, default=0.6, help="minimum top-class probability to label a pixel")
    parser.add_argument("--image-seed", type=int, default=0, help="seed of the generated image sequence")
    parser.add_argument("--device", default="cpu")
    defaults = LabellerConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args(argv)
    config = LabellerConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    start = time.monotonic()
    report = simulate(
        args.out_folder, args.n, args.run_dir, args.generator, args.threshold, args.image_seed, config, args.device
    )
    val = report["labeller_val_scores"]
    print(
        f"{args.n} annotations in {args.out_folder} ({time.monotonic() - start:.0f} s); labeller val: "
        f"binary IoU {val['binary_iou']:.3f}, class IoU "
        + ", ".join(f"{k} {v:.3f}" for k, v in val["class_iou"].items())
    )
    print("labelled fractions:", {k: round(v, 3) for k, v in report["label_fractions"].items()})


if __name__ == "__main__":
    main()
