"""Which trimap thresholds should the GrabCut re-fit of a U-Net's masks use? Chosen on the val split.

Loads a trained 3-class U-Net from its run folder (``checkpoint.pt`` of `SegmentationTrainer`, e.g. one of
notebook 05's ``results/05_semantic_projection/unets/<run>``), computes its class probabilities on the
procedural **val** images (mean of the eight views by default) and scores the binary object mask (class >= 1)
as the U-Net draws it, after notebook 04's re-fit (`helpers.segmentation.grabcut.grabcut_refine`, every pixel may
change)
and after `helpers.segmentation.grabcut.TrimapGrabCut` for a grid of (sure_foreground, sure_background). IoU per image
(the
metric's) and over all pixels. The test split is not touched.

    python -m experiments.grabcut_thresholds results/05_semantic_projection/unets/<run> [--views 8] [--threads 2]
        [--width 16] [--out results/grabcut_thresholds.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from helpers.core.io import write_json
from helpers.data.splits import ProceduralSplits, load_split
from helpers.metrics import MASK_THRESHOLD, evaluate_saliency
from helpers.segmentation import DihedralAverage, UNet, class_probabilities
from helpers.segmentation.grabcut import TrimapGrabCut, grabcut_refine

GRID = [
    (0.8, 0.2),
    (0.9, 0.1),
    (0.95, 0.05),
    (0.9, 0.03),
    (0.9, 0.01),
    (0.8, 0.01),
    (0.95, 0.01),
    (0.9, 0.003),
    (0.9, 0.0),
]


def load_unet(run_dir: Path, width: int, n_classes: int = 3) -> UNet:
    """The U-Net of a `SegmentationTrainer` run folder, in eval mode."""
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint; pass a SegmentationTrainer run folder")
    model = UNet(n_classes=n_classes, width=width)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    return model.eval()


def scores(masks: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Binary IoU of bool masks [N, H, W] against gt: the mean per image (as the metrics score it) and pooled."""
    per_image = evaluate_saliency(zip(masks.astype(np.float32), gt))["iou"]
    return {"iou_per_image": per_image, "iou_pooled": float((masks & gt).sum() / (masks | gt).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--views", type=int, choices=(1, 8), default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/grabcut_thresholds.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_unet(args.run_dir, args.width)
    images, labels = load_split(ProceduralSplits(64, 20000, 1000, 1000, 0), "val", progress=False)
    gt = labels > 0
    probs = class_probabilities(DihedralAverage(model) if args.views == 8 else model, images)
    foreground = 1 - probs[:, 0]
    own = foreground >= MASK_THRESHOLD
    rows = {
        "own masks": scores(own, gt),
        "grabcut_refine (every pixel may change)": scores(grabcut_refine(images, own), gt),
    }
    for sure_fg, sure_bg in GRID:
        start = time.perf_counter()
        refit = TrimapGrabCut(sure_foreground=sure_fg, sure_background=sure_bg)
        rows[f"trimap {sure_fg} / {sure_bg}"] = {
            **scores(refit.masks(images, foreground), gt),
            "seconds": time.perf_counter() - start,
        }
    print(f"{args.run_dir}, {args.views} view(s), val split ({len(images)} images): IoU per image / pooled")
    for name, row in rows.items():
        print(f"  {name:42s} {row['iou_per_image']:.4f} / {row['iou_pooled']:.4f}")
    write_json(args.out, {"run_dir": str(args.run_dir), "views": args.views, "rows": rows})
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
