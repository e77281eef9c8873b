"""Run folders: the one mechanism behind every resumable job (GAN training, direction discovery, U-Net, decoder
fits, refiners, LayerMatch, the simulated annotator's labeller).

A run folder holds ``checkpoint.pt`` (everything needed to resume, written atomically), ``log.jsonl`` (one JSON
row per logged step, appended and flushed, so it survives a crash) and, for some jobs, JSON settings records.
On resume the settings stored in the checkpoint must equal the requested ones, except for the keys a job
declares resumable (step budgets, logging cadence); log rows written after the checkpoint's step are dropped,
so the log holds each step once. Folder names that change with the settings come from `settings_tag`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from helpers.core import distributed
from helpers.core.io import atomic_path, json_default, load_checkpoint, read_json, read_jsonl, save_torch, write_json

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


def settings_tag(*configs: Any) -> str:
    """Short sha256 (10 hex digits) of dataclass configs or JSON-able records, for folder names that change
    with the settings."""
    records = [asdict(c) if is_dataclass(c) else c for c in configs]
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:10]


def deadline(max_minutes: float | None) -> float:
    """The `time.monotonic` value at which a job given ``max_minutes`` stops (infinity for no limit)."""
    return time.monotonic() + 60 * max_minutes if max_minutes else math.inf


class RunFolder:
    """A resumable job's folder: its checkpoint, its log, and the check of which settings may change on resume."""

    def __init__(self, path: str | os.PathLike, resumable: Collection[str] = ()):
        self.path = Path(path)
        self.resumable = frozenset(resumable)
        self.checkpoint_path = self.path / CHECKPOINT
        self.log_path = self.path / LOG

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint is there to resume from."""
        return self.checkpoint_path.exists()

    def save(self, state: Mapping[str, Any]) -> Path:
        """Writes the checkpoint atomically: an interrupted save leaves the previous one intact. Under torchrun
        only rank 0 writes (the ranks hold the same state)."""
        if distributed.is_main():
            save_torch(dict(state), self.checkpoint_path)
        return self.checkpoint_path

    def _fixed(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings.items() if k not in self.resumable}

    def resume(
        self,
        requested: Mapping[str, Any],
        key: str = "config",
        clash: str | Callable[[Mapping[str, Any]], str] = "was written with a different configuration",
        remedy: str = "or the same configuration",
        expect: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The checkpoint's state, after refusing one whose settings (``state[key]``, resumable keys aside) or
        ``expect`` entries differ from the requested ones; log rows after its step are dropped.

        The refusal reads "<checkpoint> <clash>; use a new run folder <remedy>." (``clash`` may be a function of
        the stored state), then the stored and the requested settings.
        """
        state = load_checkpoint(self.checkpoint_path)
        missing = [k for k in (key, "step") if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(
                f"{self.checkpoint_path} is not this kind of run's checkpoint (no {missing}): another job's run "
                "folder? Use a new run folder."
            )
        stored = state[key]
        others_differ = any(state.get(k) != v for k, v in (expect or {}).items())
        if others_differ or self._fixed(stored) != self._fixed(requested):
            reason = clash(state) if callable(clash) else clash
            raise ValueError(
                f"{self.checkpoint_path} {reason}; use a new run folder{' ' + remedy if remedy else ''}."
                f"\n  checkpoint: {stored}\n  requested:  {dict(requested)}"
            )
        self.truncate_log(state["step"])
        return state

    @contextmanager
    def log(self) -> Iterator[Callable[[Mapping[str, Any]], None]]:
        """A writer of log rows for the block: each row is appended as one JSON line and flushed (by rank 0 only
        under torchrun)."""
        if not distributed.is_main():
            yield lambda row: None
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as handle:

            def write(row: Mapping[str, Any]) -> None:
                handle.write(json.dumps(dict(row)) + "\n")
                handle.flush()

            yield write

    def read_log(self) -> list[dict[str, Any]]:
        """The log's rows, oldest first ([] before the first one)."""
        return read_jsonl(self.log_path)

    def truncate_log(self, step: int) -> None:
        """Drops log rows written after ``step``, the step of the checkpoint being resumed (rank 0's task)."""
        if self.log_path.exists() and distributed.is_main():
            kept = [
                line for line in self.log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step
            ]
            with atomic_path(self.log_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))

    def claim_record(self, name: str, record: Any, what: str) -> Path:
        """Writes ``record`` as JSON in file ``name`` unless a different one is there: a run folder serves one set
        of settings, so a resumed run never mixes in others. ``what`` names the holder in the error."""
        path = self.path / name
        return claim_record(path, record, lambda found: f"{self.path} holds {what} ({path}); use a new run folder")


def claim_record(path: str | os.PathLike, record: Any, refusal: Callable[[Any], str]) -> Path:
    """Writes ``record`` as JSON at ``path``, or checks that the one there equals it (both compared as JSON);
    raises ValueError with ``refusal(found)`` when it does not."""
    path = Path(path)
    wanted = json.loads(json.dumps(record, default=json_default))
    if path.exists():
        found = read_json(path)
        if found != wanted:
            raise ValueError(refusal(found))
        return path
    return write_json(path, wanted)
