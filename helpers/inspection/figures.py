"""Figures of notebook 07: per-image IoU histogram, best and worst cases, error maps, scores per attribute."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from helpers.core.plots import overlay
from helpers.inspection.datasets import InspectionSet, Predictions
from helpers.metrics import MASK_THRESHOLD

ERROR_COLOURS = {"missed": (0, 120, 255), "extra": (255, 60, 60), "right": (255, 200, 0)}


def error_map(image: np.ndarray, prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image dimmed, with object pixels found (yellow), missed (blue) and wrongly added (red)."""
    pred = prob >= MASK_THRESHOLD
    out = image.astype(np.float32) * 0.4
    for name, where in (("right", pred & mask), ("missed", ~pred & mask), ("extra", pred & ~mask)):
        out[where] = 0.3 * out[where] + 0.7 * np.array(ERROR_COLOURS[name], np.float32)
    return out.round().astype(np.uint8)


def case_panels(dataset: InspectionSet, preds: Predictions, i: int) -> list[tuple[str, np.ndarray]]:
    """Titled panels of image ``i``: the image, the prediction, and with a mask the truth and the error map."""
    image, prob = dataset.images[i], preds.probs[i]
    panels = [("image", image), ("prediction", overlay(image, (prob >= MASK_THRESHOLD).astype(np.uint8)))]
    if dataset.masks is not None:
        mask = dataset.masks[i]
        panels += [("ground truth", overlay(image, mask.astype(np.uint8))), ("errors", error_map(image, prob, mask))]
    return panels


def cases(dataset: InspectionSet, preds: Predictions, indices: list[int], title: str) -> Figure:
    """One column per image (its name and IoU on top), one row per panel of `case_panels`."""
    columns = [case_panels(dataset, preds, i) for i in indices]
    nrows = len(columns[0])
    fig, axes = plt.subplots(nrows, len(indices), figsize=(1.6 * len(indices), 1.6 * nrows + 0.4), squeeze=False)
    for c, (i, panels) in enumerate(zip(indices, columns)):
        for r, (label, picture) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
        score = "" if preds.iou is None else f"\nIoU {preds.iou[i]:.2f}"
        axes[0, c].set_title(f"{dataset.names[i]}{score}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def iou_histogram(iou: np.ndarray, title: str) -> Figure:
    """Distribution of the per-image IoU, with its mean."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(iou, bins=np.linspace(0, 1, 21), color="C0", edgecolor="white")
    ax.axvline(float(np.mean(iou)), color="C3", label=f"mean {np.mean(iou):.3f}")
    ax.set_xlabel("IoU per image")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def attribute_chart(table: dict[str, dict[str, dict[str, float]]], title: str) -> Figure:
    """Mean IoU per value of each attribute (`helpers.inspection.datasets.attribute_scores`), one panel each."""
    fig, axes = plt.subplots(1, len(table), figsize=(4 * len(table), 3), squeeze=False)
    for ax, (attribute, rows) in zip(axes[0], table.items()):
        ax.barh(list(rows), [r["iou"] for r in rows.values()], color="C0")
        for y, r in enumerate(rows.values()):
            ax.text(r["iou"], y, f" {r['iou']:.2f} (n {r['n']})", va="center", fontsize=7)
        ax.invert_yaxis()  # the worst on top
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("mean IoU")
        ax.set_title(attribute, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
