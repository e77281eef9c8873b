"""Synthetic training pairs stored as HDF5 shards, so generation runs once, resumes, and never fills the RAM.

A shard folder holds ``manifest.json`` (``n_total``, ``shard_size``, free-form ``attrs`` describing how the
pairs were made) and ``shard_00000.h5``, ``shard_00001.h5``, ...: one HDF5 dataset per array name
(``images`` uint8 [n, H, W, 3], ``masks`` uint8 [n, H, W], optional extras such as ``z``), chunked one
sample per chunk for fast random reads. Shards are written atomically, so an interrupted
`write_shards` leaves only complete shards and a second call writes the missing ones. Because
``make_batch(shard_index, n)`` must depend only on its arguments, the resumed folder holds exactly what an
uninterrupted run would have written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from helpers.core import distributed
from helpers.core.io import atomic_path, read_json
from helpers.core.runs import claim_record

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MakeBatch = Callable[[int, int], dict[str, np.ndarray]]


def shard_path(folder: str | os.PathLike, index: int) -> Path:
    """Path of shard ``index`` in ``folder``."""
    return Path(folder) / f"shard_{index:05d}.h5"


def shard_counts(n_total: int, shard_size: int) -> list[int]:
    """Number of pairs in each shard: full shards, then the remainder."""
    if n_total < 1 or shard_size < 1:
        raise ValueError(f"n_total and shard_size must be positive; got {n_total} and {shard_size}")
    return [min(shard_size, n_total - start) for start in range(0, n_total, shard_size)]


def _manifest(n_total: int, shard_size: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """The manifest content, normalised through JSON so it compares equal to the one read back."""
    return json.loads(
        json.dumps(
            {"format": FORMAT_VERSION, "n_total": n_total, "shard_size": shard_size, "attrs": attrs},
            default=lambda o: o.tolist() if hasattr(o, "tolist") else os.fspath(o),
        )
    )


def _check_batch(batch: dict[str, Any], n: int, index: int) -> dict[str, np.ndarray]:
    """Validates one ``make_batch`` result and returns it as NumPy arrays (masks as uint8)."""
    arrays = {name: np.asarray(value) for name, value in batch.items()}
    missing = {"images", "masks"} - arrays.keys()
    if missing:
        raise KeyError(f"make_batch({index}, {n}) must return 'images' and 'masks'; missing {sorted(missing)}")
    images, masks = arrays["images"], arrays["masks"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [n, H, W, 3]; got {images.dtype} {images.shape}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be [n, H, W] = {images.shape[:3]}; got {masks.shape}")
    if masks.dtype != bool and (masks.dtype.kind not in "iu" or masks.min() < 0 or masks.max() > 255):
        raise ValueError(f"masks must hold labels 0..255 (bool or integer); got {masks.dtype}")
    arrays["masks"] = masks.astype(np.uint8)
    wrong = {name: a.shape for name, a in arrays.items() if a.ndim == 0 or len(a) != n}
    if wrong:
        raise ValueError(f"make_batch({index}, {n}) must return {n} rows per array; got shapes {wrong}")
    return arrays


def _is_complete(path: Path, n: int) -> bool:
    """Whether ``path`` is a readable shard of ``n`` pairs (atomic writes make partial files unlikely)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("n") == n and all(len(f[name]) == n for name in ("images", "masks"))
    except (OSError, KeyError):
        return False


def finished_samples(folder: str | os.PathLike) -> int:
    """How many samples a shard folder holds in complete shards (0 before its manifest)."""
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return 0
    found = read_json(manifest)
    counts = shard_counts(found["n_total"], found["shard_size"])
    return sum(n for i, n in enumerate(counts) if _is_complete(shard_path(folder, i), n))


def _write_shard(path: Path, arrays: dict[str, np.ndarray], index: int) -> None:
    """Writes one shard atomically, one sample per chunk, LZF-compressed."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["n"] = len(arrays["images"])
            f.attrs["index"] = index
            for name, array in arrays.items():
                f.create_dataset(
                    name,
                    data=array,
                    chunks=(1, *array.shape[1:]) if array.ndim > 1 else None,
                    compression="lzf" if array.ndim > 1 else None,
                )


def link_shared_shards(donor: str | os.PathLike, folder: str | os.PathLike) -> int:
    """Hard-links (or copies) into ``folder`` the complete shards of ``donor`` that ``folder``'s manifest asks for:
    the same ``attrs`` and ``shard_size`` and the same number of pairs at that index. Since a shard depends only on
    its index and count, they are the files `write_shards` would write. Returns how many were linked."""
    donor, folder = Path(donor), Path(folder)
    if not (donor / MANIFEST).is_file() or donor.resolve() == folder.resolve():
        return 0
    theirs, ours = read_json(donor / MANIFEST), read_json(folder / MANIFEST)
    if (theirs["attrs"], theirs["shard_size"]) != (ours["attrs"], ours["shard_size"]):
        return 0
    given = shard_counts(theirs["n_total"], theirs["shard_size"])
    linked = 0
    for i, n in enumerate(shard_counts(ours["n_total"], ours["shard_size"])):
        source, target = shard_path(donor, i), shard_path(folder, i)
        if i >= len(given) or given[i] != n or _is_complete(target, n) or not _is_complete(source, n):
            continue
        tmp = target.with_name(f".{target.name}.link")  # then renamed over the target: never a partial shard
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        linked += 1
    return linked


def write_shards(
    folder: str | os.PathLike,
    n_total: int,
    make_batch: MakeBatch,
    shard_size: int = 1000,
    attrs: dict[str, Any] | None = None,
    progress: bool = True,
    donor: str | os.PathLike | None = None,
) -> Path:
    """Writes the shards ``make_batch`` describes, skipping complete ones; returns the folder.

    ``attrs`` (JSON-serialisable) records how the pairs are made, e.g. generator, direction and seed; a
    folder whose manifest disagrees with ``n_total``, ``shard_size`` or ``attrs`` is refused, since its
    shards would mix two datasets. ``donor``: a shard folder of the same dataset, perhaps of another size, whose
    matching shards are linked instead of written (`link_shared_shards`). Under torchrun each rank writes every
    world_size-th missing shard (rank 0 claims the manifest first) and all return once the folder is complete: the
    same files as one process writes.
    """
    folder = Path(folder)
    wanted = _manifest(n_total, shard_size, attrs or {})
    with distributed.main_first():
        claim_record(
            folder / MANIFEST,
            wanted,
            lambda found: (
                f"shard folder {folder} holds a different dataset; use a new folder or the same "
                f"settings.\n  manifest:  {found}\n  requested: {wanted}"
            ),
        )
        if donor is not None and distributed.is_main():
            link_shared_shards(donor, folder)
        counts = shard_counts(n_total, shard_size)
        todo = [i for i, n in enumerate(counts) if not _is_complete(shard_path(folder, i), n)]
    distributed.barrier()  # every rank has the same list before any shard is written
    mine = distributed.my_part(todo)
    for i in tqdm(mine, desc=f"writing shards to {folder.name}", disable=not (progress and distributed.is_main())):
        _write_shard(shard_path(folder, i), _check_batch(make_batch(i, counts[i]), counts[i], i), i)
    distributed.barrier()
    return folder


class ShardDataset:
    """Read-only view of a complete shard folder: ``len``, ``ds[i]`` and batches of arbitrary indices.

    HDF5 files are opened lazily and the handles are dropped on pickling, so the object can be handed to
    DataLoader workers (h5py handles must not cross a fork).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"no {MANIFEST} in {self.folder}: not a shard folder (see write_shards)")
        manifest = read_json(manifest_path)
        self.n_total, self.shard_size = manifest["n_total"], manifest["shard_size"]
        self.attrs: dict[str, Any] = manifest["attrs"]
        counts = shard_counts(self.n_total, self.shard_size)
        missing = [
            shard_path(self.folder, i).name for i in range(len(counts)) if not shard_path(self.folder, i).exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"shard folder {self.folder} is incomplete ({len(missing)} of {len(counts)} "
                f"shards missing, e.g. {missing[0]}); run write_shards again to finish it"
            )
        self._files: dict[int, h5py.File] = {}
        first = self._file(0)
        self.keys: tuple[str, ...] = tuple(first.keys())
        self.shapes = {name: first[name].shape[1:] for name in self.keys}
        self.dtypes = {name: first[name].dtype for name in self.keys}

    def _file(self, shard: int) -> h5py.File:
        if shard not in self._files:
            path = shard_path(self.folder, shard)
            try:
                self._files[shard] = h5py.File(path, "r")
            except OSError as err:
                raise OSError(
                    f"{path} cannot be read ({err}); delete it and run write_shards again to rewrite it"
                ) from err
        return self._files[shard]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}

    def __len__(self) -> int:
        """Number of pairs over all shards."""
        return self.n_total

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One pair (and its extras) as a dict of arrays without the leading batch axis."""
        return {name: array[0] for name, array in self.read([index]).items()}

    def read(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The rows ``indices`` (any order, repeats allowed) of each array in ``keys`` (default: all)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_total):
            raise IndexError(f"indices must lie in [0, {self.n_total}); got [{indices.min()}, {indices.max()}]")
        keys = self.keys if keys is None else tuple(keys)
        out = {name: np.empty((len(indices), *self.shapes[name]), self.dtypes[name]) for name in keys}
        shards, rows = np.divmod(indices, self.shard_size)
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            unique_rows, inverse = np.unique(rows[where], return_inverse=True)  # h5py wants increasing rows
            f = self._file(int(shard))
            for name in keys:
                out[name][where] = f[name][unique_rows][inverse]
        return out

    def close(self) -> None:
        """Closes the open HDF5 files (they reopen on the next read)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
