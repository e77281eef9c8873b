"""Segmentation model inference and evaluation, including the reference's resize-and-quantise protocol.

`SegmentationInference(model, resize_to=128)` reproduces the reference evaluation wrapper step by step,
with PIL doing what torchvision's ToPILImage / Resize / ToTensor do there:

1. the uint8 image goes through the reference's float round trip (``u/255``, ``2x - 1``, ``(x + 1)/2``) in
   float32 and back to uint8 with ToPILImage's ``mul(255).byte()`` truncation, which lowers about a
   quarter of the grey levels by one;
2. PIL bilinear resize so that the min edge is ``resize_to`` and the other is ``floor(resize_to * long/short)``
   (aspect kept, no crop), then ``u/255 * 2 - 1`` into the model;
3. foreground probability ``p = 1 - softmax(logits)[:, 0]`` (= softmax channel 1 for two classes);
4. ``p`` truncated to uint8, PIL bilinear resize back to the original H x W, ``/255`` in float32.

The maps therefore lie on the k/255 grid, in float32, as `helpers.metrics` expects to reproduce F_max.
With ``resize_to=None`` the model runs at native resolution and ``p`` is returned unquantised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.core.runtime import amp_dtype, autocast
from helpers.metrics import SaliencyMetrics, class_iou, confusion_matrix, mean_iou
from helpers.segmentation.sources import check_label_shape, images_to_input

# On a CPU, larger batches' activations outgrow the caches: a width-16 U-Net scores 1,000 64-px images in 1.7 s at
# 16 per forward and 2.2 s at 64 (the same outputs); docs/performance.md#inference-batches.
CPU_INFERENCE_BATCH = 16


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for parameterless models)."""
    return next(model.parameters(), torch.empty(0)).device


def foreground_probability(logits: Tensor) -> Tensor:
    """``1 - softmax(logits)[:, 0]`` in float32: the reference's probability of "not background"."""
    return 1 - torch.softmax(logits.float(), dim=1)[:, 0]


def forward_batch(device: torch.device, batch_size: int) -> int:
    """Images per inference forward: at most `CPU_INFERENCE_BATCH` on a CPU, ``batch_size`` elsewhere."""
    return min(batch_size, CPU_INFERENCE_BATCH) if device.type == "cpu" else batch_size


def inference_autocast(device: torch.device | str) -> AbstractContextManager:
    """The autocast models run under at inference: the trainers' default precision on ``device`` (bf16 on a CPU
    with native bf16, where a width-16 U-Net scores 1,000 64-px images about 2x faster than in float32)."""
    return autocast(amp_dtype("auto", device), device)


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int, head: Callable[[Tensor], Tensor]) -> Tensor:
    """``head(model(batch))`` over ``x`` in batches (`forward_batch`), in eval mode under `inference_autocast`
    (``head`` gets the logits in that precision); the model's mode is restored afterwards."""
    was_training, device = model.training, _device(model)
    batch_size = forward_batch(device, batch_size)
    model.eval()
    try:
        with inference_autocast(device):
            return torch.cat(
                [head(model(x[i : i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
            )
    finally:
        model.train(was_training)


def predict_proba(model: nn.Module, x: Tensor, batch_size: int = 16) -> Tensor:
    """Foreground probability [N, H, W] (float32, CPU) for inputs x [N, 3, H, W] in [-1, 1]."""
    return _predict(model, x, batch_size, foreground_probability)


def predict_softmax(model: nn.Module, x: Tensor, batch_size: int = 16) -> Tensor:
    """Class probabilities [N, K, H, W] (float32, CPU) for inputs x [N, C, H, W]."""
    return _predict(model, x, batch_size, lambda logits: logits.float().softmax(1))


def predict_labels(model: nn.Module, x: Tensor, batch_size: int = 16) -> Tensor:
    """Arg-max class labels [N, H, W] (long, CPU) for inputs x [N, 3, H, W] in [-1, 1]."""
    return _predict(model, x, batch_size, lambda logits: logits.argmax(dim=1))


def min_edge_size(height: int, width: int, resize_to: int) -> tuple[int, int]:
    """(height, width) with the min edge equal to ``resize_to`` and the other floored, aspect kept."""
    if height <= width:
        return resize_to, resize_to * width // height
    return resize_to * height // width, resize_to


def _truncate_to_uint8(x: Tensor) -> np.ndarray:
    """ToPILImage's conversion of a float tensor in [0, 1]: ``mul(255).byte()``, i.e. truncation."""
    return x.mul(255).byte().numpy()


class SegmentationInference:
    """Callable mapping one uint8 image [H, W, 3] to a float32 foreground map [H, W] by the reference protocol."""

    def __init__(self, model: nn.Module, resize_to: int | None = 128):
        self.model, self.resize_to = model, resize_to

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The foreground probability map of ``image`` at its own size (see the module docstring)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be uint8 [H, W, 3]; got {image.dtype} {image.shape}")
        x = images_to_input(image[None])
        if self.resize_to is None:
            return predict_proba(self.model, x, batch_size=1)[0].numpy()
        height, width = image.shape[:2]
        quantised = _truncate_to_uint8(((x[0] + 1) / 2).permute(1, 2, 0))
        new_height, new_width = min_edge_size(height, width, self.resize_to)
        small = Image.fromarray(quantised).resize((new_width, new_height), Image.BILINEAR)
        prob = predict_proba(self.model, images_to_input(np.array(small)[None]), batch_size=1)[0]
        prob_image = Image.fromarray(_truncate_to_uint8(prob)).resize((width, height), Image.BILINEAR)
        return np.asarray(prob_image, dtype=np.float32) / np.float32(255)


def _input_batches(images: np.ndarray, batch_size: int, progress: bool) -> Iterator[tuple[slice, Tensor]]:
    """(rows, model input) for consecutive batches of uint8 images [N, H, W, 3], with an optional progress bar."""
    for start in tqdm(range(0, len(images), batch_size), desc="evaluating", disable=not progress):
        rows = slice(start, start + batch_size)
        yield rows, images_to_input(images[rows])


def evaluate_arrays(
    model: nn.Module,
    images: np.ndarray,
    gt: np.ndarray,
    batch_size: int = 32,
    progress: bool = False,
    structure: bool = True,
) -> dict[str, float]:
    """Binary metrics (`helpers.metrics.SaliencyMetrics`, S- and E-measure only with ``structure``) at native
    resolution on uint8 images and bool masks."""
    images, gt = np.asarray(images), np.asarray(gt)
    if gt.dtype != bool or gt.shape != images.shape[:3]:
        raise ValueError(f"gt must be bool [N, H, W] = {images.shape[:3]}; got {gt.dtype} {gt.shape}")
    metrics = SaliencyMetrics(structure)
    for rows, x in _input_batches(images, batch_size, progress):
        prob = predict_proba(model, x, batch_size)
        for p, g in zip(prob.numpy(), gt[rows]):
            metrics.update(p, g)
    return metrics.result()


def evaluate_folder(
    model: nn.Module,
    dataset: Sequence[Any],
    resize_to: int | None = 128,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Binary metrics over an `ImageMaskFolder`-like dataset (``image``, ``mask`` per item) at original size."""
    infer = SegmentationInference(model, resize_to)
    metrics = SaliencyMetrics()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(n), desc="evaluating", disable=not progress):
        sample = dataset[i]
        metrics.update(infer(sample.image), sample.mask)
    return metrics.result()


def _class_scores(confusion: np.ndarray) -> dict[str, Any]:
    """Per-class IoU, mean IoU and pixel accuracy of a confusion matrix (rows gt, columns prediction)."""
    return {
        "class_iou": class_iou(confusion).tolist(),
        "mean_iou": mean_iou(confusion),
        "pixel_accuracy": float(np.trace(confusion) / confusion.sum()),
        "confusion": confusion.tolist(),
    }


def evaluate_labels(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    ignore_index: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Multi-class scores at native resolution: per-class IoU, mean IoU and pixel accuracy from one confusion matrix."""
    images, labels = np.asarray(images), np.asarray(labels)
    check_label_shape(images, labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for rows, x in _input_batches(images, batch_size, progress):
        pred = predict_labels(model, x, batch_size)
        confusion += confusion_matrix(labels[rows], pred.numpy(), n_classes, ignore_index)
    return _class_scores(confusion)


def class_probabilities(
    model: nn.Module, images: np.ndarray, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Softmax probabilities float32 [N, K, H, W] of a segmentation model on uint8 images [N, H, W, 3], eval mode."""
    return np.concatenate(
        [
            predict_softmax(model, x, batch_size).numpy()
            for _, x in _input_batches(np.asarray(images), batch_size, progress)
        ]
    )


def multiclass_scores(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, Any]:
    """`evaluate_labels`' scores of the arg-max plus ``"binary"``, `evaluate_arrays`' scores of ``1 - p_0`` against
    class >= 1, for class probabilities [N, K, H, W] (`class_probabilities`, possibly refined) and labels [N, H, W].

    With the probabilities of one pass, this equals calling both evaluations at half the model calls: what counts
    with a view-averaged model (8 calls each), or when one pass is scored with and without a refinement.
    """
    labels = np.asarray(labels)
    if probs.ndim != 4 or (probs.shape[0], *probs.shape[2:]) != labels.shape:
        raise ValueError(f"labels must be [N, H, W] for probabilities {probs.shape}; got {labels.shape}")
    metrics = SaliencyMetrics()
    for p, g in zip(1 - probs[:, 0], labels > 0):
        metrics.update(p, g)
    return {"binary": metrics.result(), **_class_scores(confusion_matrix(labels, probs.argmax(1), n_classes))}
