"""Synthetic datasets from a generator and a fitted decoder.

`generate_dataset` writes synthetic (image, mask, z, noise seed) pairs into HDF5 shards with
`helpers.segmentation.shards.write_shards`; masks hold class indices (0/1 for binary): the decoder's
arg-max, or what a refiner (`helpers.semantic_projection.refinement`) makes of the image and the decoder's
probabilities.

"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from helpers.gans.base import Generator
from helpers.segmentation.shards import write_shards
from helpers.semantic_projection.decoder import Prediction, SemanticDecoder, accepts, predict


def draw_inputs(G: Generator, seed: int, indices: Sequence[int]) -> tuple[np.ndarray, list[int] | None]:
    """z [n, dim_z] float32 and per-sample noise seeds (None for generators without noise), one RNG per index."""
    rngs = [np.random.default_rng([seed, int(i)]) for i in indices]
    z = np.stack([rng.standard_normal(G.dim_z, dtype=np.float32) for rng in rngs])
    seeds = [int(rng.integers(2**31)) for rng in rngs] if accepts(G, "noise_seed") else None
    return z, seeds


class LabelRefiner(Protocol):
    """Turns images and the decoder's probabilities into class maps (e.g.
    `helpers.semantic_projection.refinement.MaskRefiner`)."""

    fingerprint: str

    def __call__(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray: ...


def _refined(refiner: LabelRefiner, pred: Prediction) -> np.ndarray:
    """The refiner's class maps for a prediction, checked against the decoder's shape, as uint8."""
    labels = np.asarray(refiner(pred.images, pred.probs))
    if labels.shape != pred.labels.shape:
        raise ValueError(f"the refiner returned masks of shape {labels.shape}; expected {pred.labels.shape}")
    return labels.astype(np.uint8)


@dataclass
class SyntheticBatches:
    """``make_batch(shard_index, n)`` for write_shards: images, predicted masks, z, noise_seed, truncation.

    Sample i (= shard_index * shard_size + row) uses ``latents[i]`` (and ``noise_seeds[i]`` when given) or
    inputs drawn from (seed, i), so each shard depends only on its index. Features are computed batch by
    batch and dropped. Masks are the decoder's arg-max, or ``refiner(images, probs)`` when one is given.
    ``noise_seed`` is -1 and ``truncation`` NaN where the generator takes none. ``after_batch(end)``, if given,
    runs after each batch with the index one past its last sample (a progress report; raising there abandons the
    shard). A plain object, so that it can be handed to other processes (`helpers.core.distributed.launch`).
    """

    G: Generator
    decoder: SemanticDecoder
    shard_size: int
    batch_size: int = 16
    seed: int = 0
    truncation: float | None = None
    latents: np.ndarray | None = None
    noise_seeds: Sequence[int] | None = None
    refiner: LabelRefiner | None = None
    after_batch: Callable[[int], None] | None = None

    def __call__(self, shard_index: int, n: int) -> dict[str, np.ndarray]:
        """The ``n`` samples of shard ``shard_index``."""
        G, truncation = self.G, self.truncation
        indices = list(range(shard_index * self.shard_size, shard_index * self.shard_size + n))
        z, seeds = draw_inputs(G, self.seed, indices)
        if self.latents is not None:
            z = np.asarray(self.latents[indices[0] : indices[-1] + 1], dtype=np.float32)
        if self.noise_seeds is not None and seeds is not None:
            seeds = [int(s) for s in self.noise_seeds[indices[0] : indices[-1] + 1]]
        images, masks = [], []
        for start in range(0, n, self.batch_size):
            part = slice(start, start + self.batch_size)
            pred = predict(G, self.decoder, z[part], None if seeds is None else seeds[part], truncation)
            images.append(pred.images)
            masks.append(pred.labels if self.refiner is None else _refined(self.refiner, pred))
            if self.after_batch is not None:
                self.after_batch(indices[0] + start + len(pred.labels))
        return {
            "images": np.concatenate(images),
            "masks": np.concatenate(masks),
            "z": z,
            "noise_seed": np.asarray(seeds if seeds is not None else [-1] * n, dtype=np.int64),
            "truncation": np.full(n, np.nan if truncation is None else truncation, dtype=np.float32),
        }


def generate_dataset(
    G: Generator,
    decoder: SemanticDecoder,
    folder: str | os.PathLike,
    n_total: int,
    shard_size: int = 1000,
    batch_size: int = 16,
    seed: int = 0,
    truncation: float | None = None,
    latents: np.ndarray | None = None,
    noise_seeds: Sequence[int] | None = None,
    attrs: dict[str, Any] | None = None,
    progress: bool = True,
    refiner: LabelRefiner | None = None,
    after_batch: Callable[[int], None] | None = None,
    donor: str | os.PathLike | None = None,
) -> Path:
    """Writes n_total synthetic (image, mask, z, noise seed) pairs as HDF5 shards; resumes an interrupted run.

    Inputs come from ``latents``/``noise_seeds`` (stored ones) or are drawn from ``seed``; masks from the
    decoder or the ``refiner``; see `SyntheticBatches`. ``attrs`` (e.g. the generator and decoder files) go
    into the shard manifest with the sampling settings and the refiner's fingerprint, so a folder made with
    other settings is refused. ``after_batch``: see `SyntheticBatches` (an exception raised there stops the run;
    finished shards stay and a later call resumes). ``donor``: a folder of the same dataset at another size, whose
    matching shards are linked rather than generated again (`helpers.segmentation.shards.link_shared_shards`).
    """
    if latents is not None and len(latents) < n_total:
        raise ValueError(f"{len(latents)} latents for {n_total} samples")
    if noise_seeds is not None and len(noise_seeds) < n_total:
        raise ValueError(f"{len(noise_seeds)} noise seeds for {n_total} samples")
    make_batch = SyntheticBatches(
        G, decoder, shard_size, batch_size, seed, truncation, latents, noise_seeds, refiner, after_batch
    )
    source = "latents" if latents is not None else f"seed {seed}"
    settings = {
        "source": "semantic projection",
        "inputs": source,
        "truncation": truncation,
        "generator": type(G).__name__,
        "decoder": decoder.config,
        **(attrs or {}),
    }
    if refiner is not None:
        if "refiner" in settings:
            raise ValueError("attrs must not hold 'refiner': it records the refiner's fingerprint")
        settings["refiner"] = refiner.fingerprint
    return write_shards(
        folder, n_total, make_batch, shard_size=shard_size, attrs=settings, progress=progress, donor=donor
    )
