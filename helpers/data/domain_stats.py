"""Statistics of a labelled domain: class balance, and how far colour alone gets (a per-pixel baseline)."""

from __future__ import annotations

import numpy as np

from helpers.data.procedural import LABEL_NAMES


def class_fractions(labels: np.ndarray) -> dict[str, float]:
    """Share of pixels per label over a stack of label maps [N, H, W]."""
    counts = np.bincount(labels.ravel(), minlength=len(LABEL_NAMES))
    return {name: float(c / labels.size) for name, c in zip(LABEL_NAMES, counts)}


def _colour_bins(images: np.ndarray, levels: int) -> np.ndarray:
    q = (images.astype(np.int64) * levels) // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


class ColourBaseline:
    """Per-pixel foreground probability from RGB alone: a smoothed colour histogram fit on labelled images.

    It is the best any colour lookup (threshold, colour key) can learn on the training distribution,
    so its score bounds what segmentation by colour achieves on the domain.
    """

    def __init__(self, levels: int = 16):
        self.levels = levels
        self.p_fg: np.ndarray | None = None

    def fit(self, images: np.ndarray, masks: np.ndarray) -> ColourBaseline:
        """Counts foreground / background pixels per colour bin (Laplace-smoothed)."""
        bins = _colour_bins(images, self.levels).ravel()
        n = self.levels**3
        fg = np.bincount(bins, weights=masks.ravel().astype(np.float64), minlength=n)
        total = np.bincount(bins, minlength=n)
        self.fg_hist, self.bg_hist = fg, total - fg
        self.p_fg = (fg + 1) / (total + 2)
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Foreground probability maps [N, H, W] in [0, 1]."""
        if self.p_fg is None:
            raise RuntimeError("ColourBaseline.predict called before fit")
        return self.p_fg[_colour_bins(images, self.levels)]

    def overlap(self) -> float:
        """Histogram intersection of the fg and bg colour distributions: 0 = separable, 1 = identical."""
        if self.p_fg is None:
            raise RuntimeError("ColourBaseline.overlap called before fit")
        return float(np.minimum(self.fg_hist / self.fg_hist.sum(), self.bg_hist / self.bg_hist.sum()).sum())
