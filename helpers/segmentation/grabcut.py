"""GrabCut re-fits of masks to their own images (OpenCV), beyond the papers.

GrabCut fits one colour model (a Gaussian mixture) to the foreground and one to the background of an image,
then relabels the pixels it may change by colour and edges. Two ways in:

* `grabcut_refine`: a mask as *probable* foreground, the rest probable background (every pixel may change).
  Notebook 04 uses it on the masks of a latent shift (`helpers.direction_masks.synthesis`, ``refine="grabcut"``).
* `TrimapGrabCut`: a segmentation model's foreground probability as a trimap. Pixels the model is sure of
  (``p > sure_foreground``, ``p < sure_background``) are fixed, the rest start from the model's decision
  (``p >= 0.5``, as the metrics threshold it) and may change. Notebook 05 scores its U-Net's test masks
  after it: the model finds the object, the re-fit snaps the outline to the image's colours.

OpenCV's k-means start is re-seeded before every image (its random generator is per thread), so each result
depends on its image and mask alone. Images are fitted on as many threads as torch uses (OpenCV releases the
GIL), which gives the same masks as one thread in about half the time on two cores.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from helpers.metrics import MASK_THRESHOLD, mask_iou

GRABCUT_ITERATIONS = 5


def _fit(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """Bool mask: GrabCut on an RGB uint8 image [H, W, 3] from OpenCV labels [H, W] (GC_BGD/FGD/PR_BGD/PR_FGD)."""
    labels = labels.astype(np.uint8)  # a copy: GrabCut writes its result into it
    models = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, *models, iterations, cv2.GC_INIT_WITH_MASK)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _fit_all(jobs: Iterable[tuple[int, np.ndarray, np.ndarray]], iterations: int, into: np.ndarray) -> None:
    """Runs `_fit` on each (index, image, labels) job, on torch's number of threads, writing masks into ``into``."""
    jobs = list(jobs)
    images, labels = [job[1] for job in jobs], [job[2] for job in jobs]
    workers = min(torch.get_num_threads(), len(jobs))
    if workers <= 1:
        results = list(map(_fit, images, labels, [iterations] * len(jobs)))
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(_fit, images, labels, [iterations] * len(jobs)))
    for (i, _, _), mask in zip(jobs, results):
        into[i] = mask


def grabcut_refine(images: np.ndarray, masks: np.ndarray, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """Each mask re-fitted to its own image: the mask as probable foreground, the rest as probable background.

    images uint8 [B, H, W, 3] RGB, masks bool [B, H, W]. Empty or full masks stay as they are. About 8 ms
    per 64-px mask on a CPU core.
    """
    refined = masks.copy()
    jobs = (
        (i, image, np.where(mask, cv2.GC_PR_FGD, cv2.GC_PR_BGD))
        for i, (image, mask) in enumerate(zip(images, masks))
        if mask.any() and not mask.all()
    )
    _fit_all(jobs, iterations, refined)
    return refined


@dataclass(frozen=True)
class TrimapGrabCut:
    """Re-fits a segmentation model's masks to their images, keeping the pixels the model is sure of.

    Called on uint8 images [B, H, W, 3] and class probabilities [B, K, H, W] (class 0 = background), it
    returns probabilities of the same shape: one-hot background outside the re-fitted foreground, and inside
    it the model's probabilities of classes 1..K-1 renormalised, so the arg-max keeps the model's choice among
    the foreground classes. The foreground probability ``1 - p_0`` becomes the re-fitted mask (0 or 1). An
    image whose trimap has no foreground or no background keeps the model's decision. Defaults chosen on
    the procedural val split (docs/experiments.md#2026-11-23-grabcut-re-fit-thresholds-on-the-val-split).
    """

    sure_foreground: float = 0.9
    sure_background: float = 0.01
    iterations: int = GRABCUT_ITERATIONS

    def __post_init__(self):
        if not 0 <= self.sure_background <= 0.5 <= self.sure_foreground <= 1:
            raise ValueError(
                "TrimapGrabCut needs 0 <= sure_background <= 0.5 <= sure_foreground <= 1; "
                f"got {self.sure_background} and {self.sure_foreground}"
            )

    def masks(self, images: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        """Bool masks [B, H, W]: GrabCut from the trimap of foreground probabilities [B, H, W]."""
        if images.shape[:3] != foreground.shape:
            raise ValueError(f"images {images.shape} and foreground probabilities {foreground.shape} differ in size")
        decided = foreground >= MASK_THRESHOLD
        refined = decided.copy()
        jobs = []
        for i, (image, p) in enumerate(zip(images, foreground)):
            labels = np.where(decided[i], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
            labels[p > self.sure_foreground] = cv2.GC_FGD
            labels[p < self.sure_background] = cv2.GC_BGD
            foreground_side = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
            if foreground_side.any() and not foreground_side.all():
                jobs.append((i, image, labels))
        _fit_all(jobs, self.iterations, refined)
        return refined

    def __call__(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Class probabilities [B, K, H, W] after the re-fit (class docstring)."""
        if probs.ndim != 4 or probs.shape[1] < 2:
            raise ValueError(f"probs must be [B, K >= 2, H, W]; got {probs.shape}")
        mask = self.masks(images, 1 - probs[:, 0])
        objects = probs[:, 1:] / np.maximum(probs[:, 1:].sum(1, keepdims=True), np.finfo(np.float32).tiny)
        objects[:, 0][objects.sum(1) == 0] = 1  # a pixel the model gave no foreground mass: the first class
        refined = np.zeros_like(probs)
        refined[:, 0] = ~mask
        refined[:, 1:] = objects * mask[:, None]
        return refined


def grabcut_agreement(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each mask's GrabCut re-fit and the per-sample IoU between mask and re-fit (its *consistency*).

    The one definition that the consistency filter and the image-consistency ranking of candidate
    directions share; an empty mask has consistency 0.
    """
    refined = grabcut_refine(images, masks)
    return refined, mask_iou(masks, refined)
