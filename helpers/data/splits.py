"""Fixed train / val / test splits of the procedural domain, rendered once into an HDF5 cache."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from helpers.core.io import atomic_path
from helpers.core.paths import data_dir
from helpers.data.procedural import DOMAIN_VERSION, LABEL_NAMES, attributes, render_batch

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # each split has its own random stream
_CHUNK = 256


@dataclass(frozen=True)
class ProceduralSplits:
    """What defines a cached dataset: resolution, split sizes and seed."""

    size: int = 64
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 1000
    seed: int = 0

    def count(self, split: str) -> int:
        """Number of images in a split."""
        if split not in SPLIT_STREAMS:
            raise KeyError(f"unknown split {split!r}; expected one of {list(SPLIT_STREAMS)}")
        return getattr(self, f"n_{split}")

    @property
    def path(self) -> Path:
        """The cache file of these splits (shared by every notebook and test that asks for the same)."""
        name = (
            f"procedural_v{DOMAIN_VERSION}_{self.size}px_seed{self.seed}_{self.n_train}-{self.n_val}-{self.n_test}.h5"
        )
        return data_dir() / name


def _is_valid(spec: ProceduralSplits) -> bool:
    try:
        with h5py.File(spec.path, "r") as f:
            return f.attrs.get("domain_version") == DOMAIN_VERSION and all(
                f[f"{s}/images"].shape == (spec.count(s), spec.size, spec.size, 3) for s in SPLIT_STREAMS
            )
    except (OSError, KeyError) as err:
        warnings.warn(f"re-rendering unreadable dataset cache {spec.path}: {err}")
        return False


def ensure_splits(spec: ProceduralSplits = ProceduralSplits(), progress: bool = True) -> Path:
    """Renders the splits into their HDF5 file unless it already exists; returns the path."""
    if spec.path.exists() and _is_valid(spec):
        return spec.path
    total = sum(spec.count(s) for s in SPLIT_STREAMS)
    with (
        atomic_path(spec.path) as tmp,
        h5py.File(tmp, "w") as f,
        tqdm(total=total, desc=f"rendering {spec.path.name}", disable=not progress, unit="img") as bar,
    ):
        f.attrs.update({"domain_version": DOMAIN_VERSION, "label_names": list(LABEL_NAMES), **asdict(spec)})
        for split, stream in SPLIT_STREAMS.items():
            n, s = spec.count(split), spec.size
            chunk = (max(1, min(_CHUNK, n)),)
            images = f.create_dataset(
                f"{split}/images", (n, s, s, 3), np.uint8, chunks=chunk + (s, s, 3), compression="lzf"
            )
            labels = f.create_dataset(f"{split}/labels", (n, s, s), np.uint8, chunks=chunk + (s, s), compression="lzf")
            for start in range(0, n, _CHUNK):
                idx = range(start, min(n, start + _CHUNK))
                images[idx.start : idx.stop], labels[idx.start : idx.stop] = render_batch(spec.seed, idx, s, stream)
                bar.update(len(idx))
    return spec.path


def load_split(spec: ProceduralSplits, split: str, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One split in memory: images uint8 [N, H, W, 3] and labels uint8 [N, H, W] (0 bg, 1 object, 2 part)."""
    spec.count(split)
    with h5py.File(ensure_splits(spec, progress), "r") as f:
        return f[f"{split}/images"][:], f[f"{split}/labels"][:]


def split_attributes(spec: ProceduralSplits, split: str, n: int | None = None) -> dict[str, list[str]]:
    """The background kind and object shape of the first ``n`` images of a split (all by default)."""
    n = spec.count(split) if n is None else min(n, spec.count(split))
    return attributes(spec.seed, range(n), spec.size, SPLIT_STREAMS[split])


def export_folders(spec: ProceduralSplits, split: str, root: str | Path, n: int | None = None) -> tuple[Path, Path]:
    """Writes the first n images of a split as ``root/images/NNNNN.png`` and object masks as ``root/masks/NNNNN.png``.

    This is the image-folder + mask-folder layout of the real benchmarks, so every folder-based tool
    (embedding extraction, evaluation) runs on the procedural domain too. Existing complete exports are reused.
    """
    images, labels = load_split(spec, split, progress=False)
    n = len(images) if n is None else min(n, len(images))
    root = Path(root)
    folders = root / "images", root / "masks"
    names = [f"{i:05d}.png" for i in range(n)]
    if all(folder.is_dir() and sorted(p.name for p in folder.glob("*.png")) == names for folder in folders):
        return folders
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
    for name, image, label in zip(names, images[:n], labels[:n]):
        Image.fromarray(image).save(folders[0] / name)
        Image.fromarray(((label > 0) * 255).astype(np.uint8)).save(folders[1] / name)
    return folders
