"""The images notebook 07 looks at, with masks when there are any, and a model's per-image scores on them.

`open_dataset(spec)` understands

* ``procedural:test`` (or ``:val``, ``:train``): the procedural split, with each image's background kind and object
  shape as attributes, scored at native resolution;
* ``NAME: folder``: a benchmark folder in its released layout (`helpers.data.folders.open_benchmark`), scored with
  the papers' protocol (the min edge resized to 128, the map back to the image's size);
* a labelled folder (``images/`` + ``masks/`` of class indices; object = class >= 1) or a plain folder of images
  without masks, scored like the benchmarks.

Images in subfolders (CUB's ``<class>/``) get their folder as the ``folder`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.core.paths import resolve
from helpers.data.folders import (
    ImageMaskFolder,
    canonical_benchmark,
    class_mask,
    open_benchmark,
    read_rgb,
    scan_images,
)
from helpers.data.splits import ProceduralSplits, load_split, split_attributes
from helpers.metrics import SaliencyMetrics
from helpers.segmentation.inference import SegmentationInference, predict_proba
from helpers.segmentation.sources import images_to_input

BENCHMARK_SIZE = 128  # the papers' evaluation protocol: min edge resized to 128


@dataclass
class InspectionSet:
    """Images (any sizes), their object masks (None: no masks), names and per-image attributes."""

    name: str
    images: list[np.ndarray]  # uint8 [H, W, 3]
    masks: list[np.ndarray] | None  # bool [H, W]
    names: list[str]
    attributes: dict[str, list[str]]
    resize_to: int | None  # None: the model runs at the images' own size


def _folder_attribute(paths: list[Path], root: Path) -> dict[str, list[str]]:
    folders = [str(p.parent.relative_to(root)) for p in paths]
    return {"folder": folders} if len(set(folders)) > 1 else {}


def _paired(name: str, dataset: ImageMaskFolder, limit: int | None, object_mask: Callable) -> InspectionSet:
    """The first ``limit`` pairs of a folder dataset, masks turned into object masks by ``object_mask``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    samples = [dataset[i] for i in tqdm(range(n), desc=f"reading {name}")]
    return InspectionSet(
        name,
        [s.image for s in samples],
        [object_mask(s.mask) for s in samples],
        [s.name for s in samples],
        _folder_attribute([dataset.pairs[i].image_path for i in range(n)], dataset.images_dir),
        BENCHMARK_SIZE,
    )


def open_dataset(spec: str, splits: ProceduralSplits | None = None, limit: int | None = None) -> InspectionSet:
    """The dataset ``spec`` names (module docstring); ``limit`` keeps its first images; ``splits`` sizes the
    procedural splits (default `ProceduralSplits()`)."""
    spec = spec.strip()
    if spec.startswith("procedural:"):
        split = spec.partition(":")[2]
        splits = splits or ProceduralSplits()
        images, labels = load_split(splits, split)
        n = len(images) if limit is None else min(limit, len(images))
        return InspectionSet(
            f"procedural {split}",
            list(images[:n]),
            list(labels[:n] > 0),
            [f"{split}_{i:05d}" for i in range(n)],
            split_attributes(splits, split, n),
            None,
        )
    name, sep, folder = spec.partition(":")
    if sep and not Path(spec).exists():
        key = canonical_benchmark(name)
        return _paired(key, open_benchmark(key, resolve(folder.strip())), limit, lambda mask: mask)
    root = resolve(spec)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        labelled = ImageMaskFolder(root / "images", root / "masks", mask_rule=class_mask)
        return _paired(root.name, labelled, limit, lambda mask: mask > 0)
    paths = scan_images(root)[:limit]
    return InspectionSet(
        root.name,
        [read_rgb(p) for p in tqdm(paths, desc=f"reading {root.name}")],
        None,
        [p.stem for p in paths],
        _folder_attribute(paths, root),
        BENCHMARK_SIZE,
    )


@dataclass
class Predictions:
    """A model's foreground maps on an `InspectionSet` and, with masks, per-image and overall scores."""

    probs: list[np.ndarray]  # float32 [H, W] per image
    iou: np.ndarray | None  # per image
    scores: dict[str, float] | None  # `helpers.metrics.SaliencyMetrics.result`


@torch.inference_mode()
def predict_set(model: nn.Module, dataset: InspectionSet, progress: bool = True) -> Predictions:
    """Foreground maps of every image by the dataset's protocol, scored when it has masks. Images of one size
    scored at their own size go through the model in batches, as `helpers.segmentation.evaluate_arrays` runs them,
    so a notebook's score of the same model and images is reproduced exactly."""
    if dataset.resize_to is None and dataset.images and len({image.shape for image in dataset.images}) == 1:
        probs = list(predict_proba(model, images_to_input(np.stack(dataset.images))).numpy())
    else:
        infer = SegmentationInference(model, dataset.resize_to)
        probs = [infer(image) for image in tqdm(dataset.images, desc="predicting", disable=not progress)]
    if dataset.masks is None:
        return Predictions(probs, None, None)
    metrics = SaliencyMetrics()
    for prob, mask in zip(probs, dataset.masks):
        metrics.update(prob, mask)
    return Predictions(probs, np.array(metrics.image_iou), metrics.result())


def attribute_scores(attributes: dict[str, list[str]], iou: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Mean IoU and image count per value of each attribute, values sorted by mean IoU (worst first)."""
    table = {}
    for attribute, values in attributes.items():
        groups: dict[str, list[float]] = {}
        for value, score in zip(values, iou):
            groups.setdefault(str(value), []).append(float(score))
        rows = {v: {"n": len(s), "iou": float(np.mean(s))} for v, s in groups.items()}
        table[attribute] = dict(sorted(rows.items(), key=lambda item: item[1]["iou"]))
    return table
