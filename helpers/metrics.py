"""Segmentation metrics: binary saliency / object-segmentation metrics and multi-class IoU.

Binary metrics follow the reference evaluation of "Big GANs Are Watching You". Each image gives a
probability map ``prob`` (float, H x W, in [0, 1]) and a boolean ground truth ``gt``:

* **IoU** ``|gt & pred| / |gt | pred|`` and **pixel accuracy** of the mask ``pred = prob >= 0.5``,
  computed per image and averaged over images (sum / number of images, not pooled over pixels).
  Deviation: when gt and pred are both empty the reference IoU is 0/0 = NaN; here it counts as 1.0.
* **F_max** (beta^2 = 0.3): for every threshold t in ``THRESHOLDS = np.arange(0, 1, 1/255)`` (255 values,
  0 ... 254/255) binarize with the strict ``prob > t``; per image P = TP/|pred| (1 if pred is empty),
  R = TP/|gt| (1 if gt is empty), F = (1 + beta^2) P R / (beta^2 P + R) with NaN (P = R = 0) set to 0.
  F is averaged over images at each t, then maximised over t (``f_max``, reached first at
  ``f_max_threshold``). ``f_max_mean_pr`` instead takes F of the image-averaged P and R curves, the
  SOD-benchmark convention, with the same P/R conventions as above.
  The comparison ``prob > t`` is done in the map's own float dtype (float32 or float64; other dtypes
  are cast to float64), with t rounded to that dtype. This is what the reference does: it compares
  float32 torch maps (``ToTensor`` output, u/255 for uint8 u) with NumPy thresholds in float32, so a
  pixel u/255 is positive at t = k/255 exactly when u > k. Upcasting such a map to float64 would
  shift almost every threshold by one grey level, so pass the float32 map to reproduce the reference.
* **MAE, S-measure, E-measure** (mean and max of the 256-threshold E-measure curve) come from
  pysodmetrics (``py_sod_metrics``). Its inputs are uint8 grey images: the map is converted with
  ``round(prob * 255)`` (lossless for maps already on the u/255 grid, unlike truncation) and gt with
  ``gt * 255``. pysodmetrics then min-max stretches each map to [0, 1] (its MATLAB-style
  ``mapminmax``) unless the map is constant, the usual SOD-benchmark protocol. Their values are
  pysodmetrics' own, quirks included: e.g. its S-measure is NaN when the gt centroid falls on the last
  row or column (an empty quadrant, e.g. on tiny images).

Multi-class (part segmentation) metrics use a confusion matrix over labels 0..K-1, optionally
skipping ground-truth pixels equal to ``ignore_index``; per-class IoU is TP / (TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import py_sod_metrics
import torch

ArrayLike = np.ndarray | torch.Tensor

BETA_SQ = 0.3
THRESHOLDS = np.arange(0.0, 1.0, 1.0 / 255)  # 0, 1/255, ..., 254/255 as in the reference
MASK_THRESHOLD = 0.5  # binary mask for IoU / accuracy: prob >= 0.5


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Torch tensors (any device) and array-likes as NumPy arrays."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pair(prob: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates one (prob, gt) pair and returns it as (float32/float64 map, bool mask)."""
    prob, gt = _to_numpy(prob), _to_numpy(gt)
    if prob.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"prob and gt must be 2-D (H, W) arrays; got shapes {prob.shape} and {gt.shape}")
    if prob.shape != gt.shape:
        raise ValueError(f"shape mismatch: prob has shape {prob.shape}, gt has shape {gt.shape}")
    if prob.size == 0:
        raise ValueError(f"empty image of shape {prob.shape}")
    if gt.dtype != bool:
        raise TypeError(f"gt must be a boolean mask; got dtype {gt.dtype}")
    if prob.dtype not in (np.float32, np.float64):
        prob = prob.astype(np.float64)
    if not (prob.min() >= 0 and prob.max() <= 1):  # also rejects NaN
        raise ValueError(f"prob must lie in [0, 1]; got values in [{prob.min()}, {prob.max()}]")
    return prob, gt


def _pr_curves(prob: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P and R of ``prob > t`` for all THRESHOLDS from one histogram instead of 255 full-image passes."""
    n_thr = len(THRESHOLDS)
    # Number of thresholds strictly below each pixel: the pixel is positive exactly for k < n_below.
    n_below = np.searchsorted(THRESHOLDS.astype(prob.dtype), prob.ravel(), side="left")
    hist = np.bincount(n_below, minlength=n_thr + 1)
    fg_hist = np.bincount(n_below[gt.ravel()], minlength=n_thr + 1)
    # Positives at threshold k are the pixels with n_below >= k + 1: suffix sums from k + 1.
    n_pred = np.cumsum(hist[::-1])[::-1][1:]
    tp = np.cumsum(fg_hist[::-1])[::-1][1:].astype(np.float64)
    n_gt = np.count_nonzero(gt)
    precision = np.divide(tp, n_pred, out=np.ones(n_thr), where=n_pred > 0)
    recall = tp / n_gt if n_gt else np.ones(n_thr)
    return precision, recall


def precision_recall_curves(prob: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """One image's precision and recall of ``prob > t`` at each of the 255 THRESHOLDS (reference conventions)."""
    return _pr_curves(*_check_pair(prob, gt))


def f_beta(precision: np.ndarray, recall: np.ndarray, beta_sq: float = BETA_SQ) -> np.ndarray:
    """F-beta of precision/recall values, with the 0/0 case (P = R = 0) set to 0 as in the reference."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        f = (1 + beta_sq) * precision * recall / (beta_sq * precision + recall)
    return np.where(np.isnan(f), 0.0, f)


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (the reference gives NaN)."""
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


class SaliencyMetrics:
    """Accumulates the binary segmentation metrics one image at a time, keeping running sums, not maps.
    ``structure=False`` leaves out the S- and E-measure (about 0.8 ms of the 1.2 ms per 64-px image), for runs
    that report IoU and F_max alone."""

    def __init__(self, structure: bool = True) -> None:
        self.n_images = 0
        self.image_iou: list[float] = []  # per image, in the order added
        self._iou_sum = 0.0
        self._accuracy_sum = 0.0
        self._p_sum = np.zeros(len(THRESHOLDS))
        self._r_sum = np.zeros(len(THRESHOLDS))
        self._f_sum = np.zeros(len(THRESHOLDS))
        self._sod = (py_sod_metrics.MAE(),) + (
            (py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure()) if structure else ()
        )

    def update(self, prob: ArrayLike, gt: ArrayLike) -> None:
        """Adds one image: ``prob`` float H x W in [0, 1] (NumPy or torch), ``gt`` bool H x W."""
        prob, gt = _check_pair(prob, gt)
        mask = prob >= MASK_THRESHOLD
        self.image_iou.append(_iou(mask, gt))
        self._iou_sum += self.image_iou[-1]
        self._accuracy_sum += np.count_nonzero(mask == gt) / gt.size
        precision, recall = _pr_curves(prob, gt)
        self._p_sum += precision
        self._r_sum += recall
        self._f_sum += f_beta(precision, recall)
        prob_u8 = np.rint(prob * 255.0).astype(np.uint8)
        gt_u8 = gt.astype(np.uint8) * 255
        for metric in self._sod:
            metric.step(prob_u8, gt_u8)
        self.n_images += 1

    def result(self) -> dict[str, float]:
        """Dataset-level metrics over all images added so far (see the module docstring)."""
        if self.n_images == 0:
            raise ValueError("no images: call update() at least once before result()")
        n = self.n_images
        f_curve = self._f_sum / n
        best = int(np.argmax(f_curve))
        mae, *structure = (metric.get_results() for metric in self._sod)
        scores = {
            "iou": float(self._iou_sum / n),
            "accuracy": float(self._accuracy_sum / n),
            "f_max": float(f_curve[best]),
            "f_max_threshold": float(THRESHOLDS[best]),
            "f_max_mean_pr": float(f_beta(self._p_sum / n, self._r_sum / n).max()),
            "mae": float(mae["mae"]),
        }
        if structure:
            s_measure, e_measure = structure
            e_curve = e_measure["em"]["curve"]
            scores.update(
                s_measure=float(s_measure["sm"]),
                e_measure_mean=float(e_curve.mean()),
                e_measure_max=float(e_curve.max()),
            )
        return {**scores, "n_images": n}


def evaluate_saliency(pairs: Iterable[tuple[ArrayLike, ArrayLike]]) -> dict[str, float]:
    """SaliencyMetrics over an iterable of (prob, gt) pairs, e.g. a dataset loop."""
    metrics = SaliencyMetrics()
    for prob, gt in pairs:
        metrics.update(prob, gt)
    return metrics.result()


def confusion_matrix(gt: ArrayLike, pred: ArrayLike, n_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """K x K pixel counts (rows: gt label, columns: predicted label), skipping pixels where gt == ignore_index."""
    gt, pred = _to_numpy(gt), _to_numpy(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt has shape {gt.shape}, pred has shape {pred.shape}")
    for name, labels in (("gt", gt), ("pred", pred)):
        if labels.dtype.kind not in "biu":
            raise TypeError(f"{name} must hold integer labels; got dtype {labels.dtype}")
    if ignore_index is not None:
        keep = gt != ignore_index
        gt, pred = gt[keep], pred[keep]
    gt, pred = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
    for name, labels in (("gt", gt), ("pred", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {n_classes}) outside ignore_index; "
                f"got values in [{labels.min()}, {labels.max()}]"
            )
    return np.bincount(n_classes * gt + pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU TP / (TP + FP + FN); NaN for classes absent from both gt and pred."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square matrix; got shape {confusion.shape}")
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in gt or pred, so absent classes neither score 0 nor 1."""
    ious = class_iou(confusion)
    if np.isnan(ious).all():
        raise ValueError("confusion matrix counts no pixels: mean IoU is undefined")
    return float(np.nanmean(ious))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample IoU of two bool mask stacks [B, H, W]; 0 where both are empty."""
    return (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
