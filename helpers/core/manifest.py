"""MANIFEST.json beside shipped files: each file's sha256, size and the parameters that produced it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from helpers.core.io import write_json
from helpers.core.paths import project_root

MANIFEST = "MANIFEST.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The repository's commit (with '+dirty' for uncommitted changes), or 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(), capture_output=True, text=True
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The ``files`` entries of folder/MANIFEST.json (empty if there is none)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text())["files"] if path.exists() else {}


def record(path: str | os.PathLike, info: dict[str, Any]) -> dict[str, Any]:
    """Adds or replaces the entry of ``path`` in its folder's manifest (sha256, bytes, code version, info)."""
    path = Path(path)
    files = read_manifest(path.parent)
    files[path.name] = {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "code_version": code_version(),
        **info,
    }
    write_json(path.parent / MANIFEST, {"files": dict(sorted(files.items()))})
    return files[path.name]


def verify(folder: str | os.PathLike) -> list[str]:
    """Problems with the files a manifest lists: missing files or sha256 mismatches (empty if all match)."""
    problems = []
    for name, entry in read_manifest(folder).items():
        path = Path(folder) / name
        if not path.exists():
            problems.append(f"{path}: listed in {MANIFEST} but missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from {MANIFEST} (file changed or corrupt)")
    return problems


def refuse_replacing(folder: str | os.PathLike, names: list[str], replace: bool = False) -> None:
    """A FileExistsError, before any work, when writing ``names`` into ``folder`` would replace files its manifest
    lists (shipped files) and ``replace`` is not set."""
    shipped = [name for name in names if name in read_manifest(folder) and (Path(folder) / name).exists()]
    if shipped and not replace:
        raise FileExistsError(
            f"{Path(folder)} holds the shipped {', '.join(shipped)} (listed in its {MANIFEST}); this run would "
            "replace them. Export elsewhere, or allow it explicitly (REPLACE_SHIPPED = True in the training notebook)"
        )
