"""Where the project's files live: repository root, data cache, weights, embeddings and benchmark folders."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root (GANSEG_ROOT overrides; falls back to the working directory)."""
    if "GANSEG_ROOT" in os.environ:
        return Path(os.environ["GANSEG_ROOT"]).resolve()
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """A user path: absolute as given, relative ones against the repository root (not the notebook's cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def data_dir() -> Path:
    """Cache for rendered datasets (GANSEG_DATA_DIR overrides <root>/data)."""
    return resolve(os.environ.get("GANSEG_DATA_DIR", "data"))


def weights_dir() -> Path:
    """Shipped and downloaded model weights (GANSEG_WEIGHTS_DIR overrides <root>/weights)."""
    return resolve(os.environ.get("GANSEG_WEIGHTS_DIR", "weights"))


def embeddings_dir() -> Path:
    """Latent codes of image folders (GANSEG_EMBEDDINGS_DIR overrides <root>/embeddings)."""
    return resolve(os.environ.get("GANSEG_EMBEDDINGS_DIR", "embeddings"))


def datasets_dir() -> Path:
    """Benchmark image folders, one per dataset (GANSEG_DATASETS_DIR overrides <root>/datasets)."""
    return resolve(os.environ.get("GANSEG_DATASETS_DIR", "datasets"))


def annotations_dir() -> Path:
    """Annotation stores, one folder per generator (GANSEG_ANNOTATIONS_DIR overrides <root>/annotations)."""
    return resolve(os.environ.get("GANSEG_ANNOTATIONS_DIR", "annotations"))


def notebooks_dir() -> Path:
    """The ordered notebooks of the project."""
    return project_root() / "notebooks"
