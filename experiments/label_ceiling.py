"""What do a generator's images allow, and what do its synthetic labels cost? A U-Net trained on generated
images with (a) the simulated annotator's labeller as the labels, the best labels this project can give a
generated image without a person, or (b) notebook 05's decoder fitted on an annotation store, each scored
on the real procedural test split.

(a) bounds every method that learns from the generator's images alone (notebook 04's direction masks,
notebook 05's projected masks); the gap from (a) to (b) is what the decoder's labels cost. The labeller is
the U-Net of ``helpers.semantic_projection.simulated_annotator``, trained on the procedural train split; labels never
touch
the test split. (b) also reports how often the decoder agrees with the labeller on new generated images.

    python -m experiments.label_ceiling --generator default-biggan --labeller-run results/labeller
    python -m experiments.label_ceiling --generator default-stylegan2 --labeller-run results/labeller \
        --annotations annotations/default_stylegan2 --class-weight-power 0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.core.io import write_json
from helpers.data.splits import ProceduralSplits, load_split
from helpers.gans import load
from helpers.gans.base import Generator
from helpers.metrics import class_iou, confusion_matrix, evaluate_saliency
from helpers.segmentation import (
    ArrayBatches,
    SegmentationSettings,
    SegmentationTrainer,
    UNet,
    class_probabilities,
    evaluate_arrays,
    evaluate_labels,
)
from helpers.semantic_projection.annotations import AnnotationStore
from helpers.semantic_projection.dataset import SyntheticBatches, draw_inputs
from helpers.semantic_projection.decoder import SemanticDecoder, generate_images
from helpers.semantic_projection.fitting import FitConfig, fit
from helpers.semantic_projection.simulated_annotator import CLASSES, train_labeller

BATCH = 64


def labelled_by_labeller(
    G: Generator, labeller: nn.Module, z: np.ndarray, seeds: list[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Generated uint8 images and the labeller's arg-max classes for them."""
    images = np.concatenate(
        [
            generate_images(G, z[i : i + BATCH], None if seeds is None else seeds[i : i + BATCH])
            for i in range(0, len(z), BATCH)
        ]
    )
    return images, class_probabilities(labeller, images).argmax(1).astype(np.uint8)


def labelled_by_decoder(
    G: Generator, decoder: SemanticDecoder, z: np.ndarray, seeds: list[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Generated uint8 images and the decoder's arg-max classes for them: notebook 05's synthetic pairs."""
    pairs = SyntheticBatches(G, decoder, len(z), BATCH, latents=z, noise_seeds=seeds)(0, len(z))
    return pairs["images"], pairs["masks"]


def binary_agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Object-mask (class >= 1) IoU of two label stacks: the mean per image and pooled over all pixels."""
    pred, ref = pred > 0, ref > 0
    per_image = evaluate_saliency(zip(pred.astype(np.float32), ref))["iou"]
    pooled = class_iou(confusion_matrix(ref, pred, 2))[1]
    return {"per_image_iou": round(float(per_image), 4), "pooled_iou": round(float(pooled), 4)}


def train_and_score(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    run_dir: Path,
    steps: int,
    width: int,
    test: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Notebook 05's U-Net recipe on (images, labels); binary and per-class scores on the test split."""
    if n_classes == 2:
        labels = (labels > 0).astype(np.uint8)
    torch.manual_seed(0)
    settings = SegmentationSettings(steps=steps, lr_step=2 * steps // 3, checkpoint_every=100, seed=0)
    trainer = SegmentationTrainer(run_dir, UNet(n_classes=n_classes, width=width), settings)
    trainer.train(ArrayBatches(images, labels, 32, seed=0, augment="none"))
    test_images, test_labels = test
    binary = evaluate_arrays(trainer.model, test_images, test_labels > 0)
    scores = {key: round(binary[key], 4) for key in ("iou", "f_max", "accuracy")}
    if n_classes == len(CLASSES):
        class_iou = evaluate_labels(trainer.model, test_images, test_labels, n_classes)["class_iou"]
        scores["class_iou"] = {name: round(v, 4) for name, v in zip(CLASSES, class_iou)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="default-stylegan2")
    parser.add_argument(
        "--labeller-run", required=True, help="simulated annotator's labeller folder (trained if empty)"
    )
    parser.add_argument("--annotations", help="annotation store for row (b): notebook 05's decoder is fitted on it")
    parser.add_argument("--class-weight-power", type=float, default=0.0, help="the decoder's (notebook 05's)")
    parser.add_argument("--decoder-width", type=int, default=32)
    parser.add_argument(
        "--classes",
        type=int,
        choices=(2, 3),
        default=None,
        help="U-Net classes: 3 (background/object/part, notebook 05) or 2 (notebook 04); "
        "default 3 with --annotations, else 2",
    )
    parser.add_argument("--n", type=int, default=5000, help="generated training images")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--unet-width", type=int, default=16)
    parser.add_argument("--agreement-images", type=int, default=200)
    parser.add_argument("--out", default="results/label_ceiling")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_classes = args.classes or (3 if args.annotations else 2)
    out = Path(args.out)
    G = load(args.generator).eval()
    labeller, log = train_labeller(args.labeller_run)
    test = load_split(ProceduralSplits(64, 20000, 1000, 1000, 0), "test")
    z, seeds = draw_inputs(G, 101, range(args.n))
    results: dict[str, Any] = {
        "generator": args.generator,
        "n": args.n,
        "steps": args.steps,
        "unet_width": args.unet_width,
        "classes": n_classes,
        "labeller_val_binary_iou": log["val"]["binary_iou"],
        "rows": {},
    }

    sources = {"labeller": lambda: labelled_by_labeller(G, labeller, z, seeds)}
    if args.annotations:
        store = AnnotationStore(args.annotations)
        samples = store.training_samples()
        config = FitConfig(
            num_classes=store.num_classes, width=args.decoder_width, seed=0, class_weight_power=args.class_weight_power
        )
        decoder = fit(G, samples, out / "decoder", config).decoder
        z_new, seeds_new = draw_inputs(G, 777, range(args.agreement_images))
        _, by_decoder = labelled_by_decoder(G, decoder, z_new, seeds_new)
        _, by_labeller = labelled_by_labeller(G, labeller, z_new, seeds_new)
        results["decoder"] = {
            "annotations": str(args.annotations),
            "n_annotations": len(samples),
            "class_weight_power": args.class_weight_power,
            "agreement_with_labeller": binary_agreement(by_decoder, by_labeller),
        }
        print(
            f"decoder vs labeller on {args.agreement_images} new images: "
            f"{results['decoder']['agreement_with_labeller']}"
        )
        sources["decoder"] = lambda: labelled_by_decoder(G, decoder, z, seeds)

    for name, make in sources.items():
        start = time.monotonic()
        images, labels = make()
        scores = train_and_score(images, labels, n_classes, out / f"unet_{name}", args.steps, args.unet_width, test)
        results["rows"][name] = scores | {
            "label_object_fraction": round(float((labels > 0).mean()), 4),
            "seconds": round(time.monotonic() - start),
        }
        print(f"{name:>9}: {results['rows'][name]}", flush=True)
    write_json(out / "results.json", results)


if __name__ == "__main__":
    main()
