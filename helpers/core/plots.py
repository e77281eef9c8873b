"""Figures the notebooks share: image grids with label overlays and small bar charts."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from helpers.core.io import read_jsonl

LABEL_COLOURS = np.array(  # background, then one colour per class: object, part, and more for larger stores
    [[0, 0, 0], [255, 200, 0], [0, 120, 255], [230, 50, 50], [60, 200, 80], [200, 80, 220], [0, 210, 210]]
    + [[255, 140, 0], [150, 100, 50], [255, 255, 255], [128, 128, 0], [0, 0, 160], [255, 160, 200]],
    dtype=np.float32,
)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 RGB image with label colours blended over every non-background pixel."""
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * LABEL_COLOURS[labels[fg]]
    return out.round().astype(np.uint8)


def image_grid(images: np.ndarray, labels: np.ndarray | None = None, ncols: int = 8, scale: float = 1.4) -> Figure:
    """A grid of uint8 images; with labels, each image is followed by its overlay in the next row."""
    rows_per = 1 if labels is None else 2
    nrows = -(-len(images) // ncols) * rows_per
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * scale), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        row, col = (i // ncols) * rows_per, i % ncols
        axes[row, col].imshow(image)
        if labels is not None:
            axes[row + 1, col].imshow(overlay(image, labels[i]))
    fig.subplots_adjust(wspace=0.04, hspace=0.04, left=0, right=1, top=1, bottom=0)
    return fig


def bar_chart(values: dict[str, dict[str, float]], ylabel: str, title: str = "") -> Figure:
    """Grouped bars: one group per outer key, one bar per inner key."""
    groups = list(values)
    keys = list(values[groups[0]])
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3))
    for k, key in enumerate(keys):
        ax.bar(np.arange(len(groups)) + k * width, [values[g][key] for g in groups], width, label=key)
    ax.set_xticks(np.arange(len(groups)) + width * (len(keys) - 1) / 2, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig


NOT_LOSSES = {"step", "epoch", "lr"}  # logged beside the losses, not plotted as one


def loss_curves(log_path: str | Path, smooth: int = 20) -> Figure:
    """Moving averages of every loss in a training run's log.jsonl, each over the rows that hold it (training rows
    and, where a run validates, its validation rows)."""
    rows = read_jsonl(log_path)
    fig, ax = plt.subplots(figsize=(6, 3))
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if k not in NOT_LOSSES and isinstance(v, (int, float)))
    for key in keys:
        steps = np.array([r["step"] for r in rows if key in r])
        values = np.array([r[key] for r in rows if key in r], dtype=float)
        width = max(1, min(smooth, len(values)))
        ax.plot(steps[width - 1 :], np.convolve(values, np.ones(width) / width, mode="valid"), label=key)
    if keys:
        ax.legend(frameon=False)
    ax.set(xlabel="step", title=Path(log_path).parent.name)
    return fig


def metric_vs_k(summary: dict[str, dict[str, dict[str, float]]], ylabel: str = "IoU", title: str = "") -> Figure:
    """Mean ± std against the number of labels k, one line per arm ({arm: {str(k): {mean, std}}})."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, (arm, per_k) in enumerate(summary.items()):
        ks = sorted(per_k, key=int)
        offset = 1 + 0.03 * (i - (len(summary) - 1) / 2)  # keeps overlapping error bars apart on the log axis
        ax.errorbar(
            [int(k) * offset for k in ks],
            [per_k[k]["mean"] for k in ks],
            yerr=[per_k[k]["std"] for k in ks],
            marker="o",
            capsize=3,
            label=arm,
        )
    all_k = sorted({int(k) for per_k in summary.values() for k in per_k})
    ax.set_xscale("log")
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.minorticks_off()
    ax.set(xlabel="labelled images k", ylabel=ylabel, title=title)
    if len(summary) > 4:  # many arms: the legend goes beside the axes instead of over the points
        fig.set_size_inches(8.5, 3.5)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.tight_layout()
    else:
        ax.legend(frameon=False)
    return fig
