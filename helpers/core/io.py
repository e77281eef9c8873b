"""Atomic file writes, so an interrupted run never leaves a half-written result, cache or checkpoint; and the
one way to read a resume checkpoint back."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, atomically and byte-reproducibly: the same object gives the same file (and sha256).

    Saved through a file object, the zip archive's inner folder is always ``archive/`` instead of the
    random temporary file's name.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Reads a run's resume state (written by ``save_torch``) onto the CPU, whatever device wrote it: RNG
    states must stay there, and modules and optimisers move their tensors when they load them."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # empty, truncated or not a torch file
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}: {err}); it is damaged: delete it (or its run folder) "
            "to start that run again"
        ) from err


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes indented JSON atomically; numpy scalars and paths are converted."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a damaged file (truncated, edited by hand) raises a ValueError that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}): repair or delete it") from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file such as a run's log.jsonl, oldest first ([] if it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_default(obj: Any) -> Any:
    """JSON form of numpy and torch values (lists) and paths (strings), for ``json.dumps(default=...)``."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Saves a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)
