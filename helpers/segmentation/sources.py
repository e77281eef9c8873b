"""Batch sources for segmentation training: in-memory arrays, HDF5 shards, or any batch callable/iterator.

A batch is ``(x, y)``: ``x`` float [B, 3, H, W] in [-1, 1] and ``y`` long [B, H, W] class labels (the trainer
also accepts longer tuples such as ``helpers.direction_masks.synthesis.SyntheticBatch`` (images, masks, z) and uses
the first two).
`ArrayBatches` and `ShardBatches` are callables of the step index whose batches depend only on (seed, step),
so a resumed training run sees exactly the batches an uninterrupted one would. Each epoch visits every
pair once in a seeded random order. ``augment`` is ``"none"``, ``"flip"`` (horizontal mirrors) or
``"dihedral"`` (each pair under one of the eight flips and quarter turns, `helpers.segmentation.dihedral`).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from helpers.segmentation.dihedral import N_VIEWS, dihedral_pairs
from helpers.segmentation.shards import ShardDataset

Batch = tuple[Tensor, Tensor]
SourceRecord = dict[str, Any]
BatchSource = Callable[[int], Batch] | Callable[[], Batch] | Iterable[Batch]
Augment = Literal["none", "flip", "dihedral"]
_AUGMENTS = get_args(Augment)
_FLIP_STREAM = 1  # seeds the flips apart from the epoch orders
_VIEW_STREAM = 2  # seeds the dihedral views apart from both


def images_to_input(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images [N, H, W, 3] as model input [N, 3, H, W] in [-1, 1], like ToTensor then 2x - 1."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3]; got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div(255) * 2 - 1


class _EpochSampler:
    """Indices for step ``s``: positions s*B ... s*B+B-1 of a stream of seeded per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need at least one pair and a positive batch size; got {n} and {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order

    def indices(self, step: int) -> np.ndarray:
        """The pair indices of batch ``step``."""
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = np.divmod(positions, self.n)
        return np.array([self._permutation(int(e))[o] for e, o in zip(epochs, offsets)])

    def flips(self, step: int) -> np.ndarray:
        """Which images of batch ``step`` to mirror horizontally (each with probability 1/2)."""
        return np.random.default_rng([self.seed, step, _FLIP_STREAM]).random(self.batch_size) < 0.5

    def views(self, step: int) -> np.ndarray:
        """The dihedral view (0-7, uniform) of each image of batch ``step``."""
        return np.random.default_rng([self.seed, step, _VIEW_STREAM]).integers(N_VIEWS, size=self.batch_size)


def arrays_digest(*arrays: np.ndarray) -> str:
    """sha256 (16 hex digits) of the arrays' shapes, dtypes and bytes: what a training run's data was."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()[:16]


def source_record(source: BatchSource) -> SourceRecord | None:
    """What determines the batches of ``source`` (its ``record()``), recorded in a training checkpoint so that a
    run folder is never resumed on other data; None for sources that cannot say."""
    record = getattr(source, "record", None)
    return record() if callable(record) else None


def check_label_shape(images: np.ndarray, labels: np.ndarray) -> None:
    """A ValueError unless ``labels`` is [N, H, W] for ``images`` [N, H, W, 3]."""
    if labels.shape != images.shape[:3]:
        raise ValueError(f"labels must be [N, H, W] = {images.shape[:3]}; got {labels.shape}")


def _check_augment(augment: str, image_shape: tuple[int, ...]) -> str:
    """``augment`` itself, or a ValueError naming the choices (quarter turns need square [H, W, 3] images)."""
    if augment not in _AUGMENTS:
        raise ValueError(f"augment must be one of {_AUGMENTS}; got {augment!r}")
    if augment == "dihedral" and image_shape[0] != image_shape[1]:
        raise ValueError(f"augment='dihedral' turns images by quarter turns, so they must be square; got {image_shape}")
    return augment


def _to_batch(images: np.ndarray, labels: np.ndarray, sampler: _EpochSampler, step: int, augment: str) -> Batch:
    """uint8 images [B, H, W, 3] and labels [B, H, W] as (x, y) tensors, augmented as ``augment`` says."""
    x, y = images_to_input(images), torch.as_tensor(np.asarray(labels)).long()
    if augment == "flip":
        mirrored = torch.from_numpy(sampler.flips(step))
        x[mirrored] = x[mirrored].flip(-1)
        y[mirrored] = y[mirrored].flip(-1)
    elif augment == "dihedral":
        x, y = dihedral_pairs(x, y, sampler.views(step))
    return x, y


class ArrayBatches:
    """Seeded batches from in-memory uint8 images [N, H, W, 3] and labels [N, H, W] (bool or integer).

    For binary training from `load_split` labels pass ``labels > 0``. Random horizontal flips are on by
    default: with a fixed real training set they are the only augmentation.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int = 0, augment: Augment = "flip"
    ):
        images, labels = np.asarray(images), np.asarray(labels)
        check_label_shape(images, labels)
        self.images, self.labels, self.augment = images, labels, _check_augment(augment, images.shape[1:])
        self.sampler = _EpochSampler(len(images), batch_size, seed)

    def __call__(self, step: int) -> Batch:
        """Batch number ``step`` (the same for the same seed and step)."""
        idx = self.sampler.indices(step)
        return _to_batch(self.images[idx], self.labels[idx], self.sampler, step, self.augment)

    def record(self) -> SourceRecord:
        """The arrays' digest, batch size, seed and augmentation."""
        sampler = self.sampler
        return {
            "arrays": arrays_digest(self.images, self.labels),
            "n": len(self.images),
            "batch_size": sampler.batch_size,
            "seed": sampler.seed,
            "augment": self.augment,
        }


class ShardBatches:
    """Seeded batches from a shard folder (see `write_shards`): held in memory when the two arrays take at most
    ``max_memory`` bytes (one read instead of a decompressing HDF5 read per batch, which costs about as much as a
    small U-Net's step), else read a batch's rows at a time. The batches are the same either way.

    No augmentation by default, since the reference trains on generator outputs without it.
    """

    def __init__(
        self,
        shards: ShardDataset | str | os.PathLike,
        batch_size: int,
        seed: int = 0,
        augment: Augment = "none",
        image_key: str = "images",
        mask_key: str = "masks",
        max_memory: int = 2**30,
    ):
        self.shards = shards if isinstance(shards, ShardDataset) else ShardDataset(shards)
        self.keys, self.augment = (image_key, mask_key), _check_augment(augment, self.shards.shapes[image_key])
        self.sampler = _EpochSampler(len(self.shards), batch_size, seed)
        row_bytes = sum(math.prod(self.shards.shapes[k]) * np.dtype(self.shards.dtypes[k]).itemsize for k in self.keys)
        self.arrays = None
        if len(self.shards) * row_bytes <= max_memory:
            self.arrays = self.shards.read(np.arange(len(self.shards)), self.keys)

    def __call__(self, step: int) -> Batch:
        """Batch number ``step`` (the same for the same seed and step)."""
        idx = self.sampler.indices(step)
        rows = {k: a[idx] for k, a in self.arrays.items()} if self.arrays else self.shards.read(idx, self.keys)
        return _to_batch(rows[self.keys[0]], rows[self.keys[1]], self.sampler, step, self.augment)

    def record(self) -> SourceRecord:
        """The shard folder's manifest (how its pairs were made), the keys, batch size, seed and augmentation."""
        shards, sampler = self.shards, self.sampler
        manifest = {"n_total": shards.n_total, "shard_size": shards.shard_size, "attrs": shards.attrs}
        return {
            "shards": manifest,
            "keys": list(self.keys),
            "batch_size": sampler.batch_size,
            "seed": sampler.seed,
            "augment": self.augment,
        }


def batch_function(source: BatchSource) -> Callable[[int], Batch]:
    """Any batch source as a function of the step.

    A callable with a required positional argument gets the step index (so it can be deterministic and
    resume exactly); a callable without one is called bare (e.g. a synthesizer drawing fresh latents);
    anything else is iterated. For an nn.Module the signature of ``forward`` decides.
    """
    if callable(source):
        try:
            params = inspect.signature(source.forward if isinstance(source, nn.Module) else source).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature
            params = []
        takes_step = any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        )
        return source if takes_step else (lambda step: source())
    iterator: Iterator[Batch] = iter(source)
    return lambda step: next(iterator)
