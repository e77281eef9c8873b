"""Preflight: what a run's notebooks need on disk, whether each thing is in place and verified, and how to get it.

The runner plans its runs (notebook, variant, parameters) and hands them here before any notebook starts. Files
are found by parameter: ``GENERATOR`` (a known name of `helpers.gans.checkpoints.KNOWN_FILES` or a path),
``DIRECTION`` and ``EMBEDDINGS`` (files), ``ANNOTATIONS`` (an annotation store folder), ``BENCHMARKS`` (benchmark
folders, `helpers.data.folders.parse_benchmarks`; also notebook 07's ``DATASET`` when it names a benchmark),
``TRAIN_FOLDER`` and ``TEST_FOLDER`` (labelled folders, `helpers.data.folders.read_labelled`). A file that the
registry of `helpers.assets` knows is verified as ``download_all.sh`` verifies it (sha256 against the lock file,
or the structural check, which then records it); anything else only has to exist.

Folders of images are optional: a missing benchmark is dropped from the run's ``BENCHMARKS`` and listed as
skipped, a missing labelled folder is emptied (a train folder goes with its test folder, as one cannot be used
without the other). A run left with nothing to train or score on is skipped as a whole: such folders given, none
present, and ``PROCEDURAL_SPLIT = False``; or its ``DATASET`` folder missing. A run that only loses its
``TEST_FOLDER`` still trains. A file is required when a run that goes ahead uses it; those of skipped runs are
listed with the rest. Missing required files, files that fail verification and folders that exist but do not pair
up are errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from helpers import assets
from helpers.core.paths import resolve
from helpers.data.folders import (
    BENCHMARKS,
    FolderDatasetError,
    ImageMaskFolder,
    class_mask,
    open_benchmark,
    parse_benchmarks,
)
from helpers.gans.checkpoints import KNOWN_FILES, resolve_checkpoint

State = Literal["verified", "present", "missing", "invalid"]
FILE_PARAMETERS = ("GENERATOR", "DIRECTION", "EMBEDDINGS", "ANNOTATIONS")
FOLDER_PARAMETERS = ("TRAIN_FOLDER", "TEST_FOLDER")  # labelled folders: images/ + masks/
BENCHMARK = "benchmark "  # the label prefix of benchmark folders
LABELLED = "labelled folder "  # the label prefix of labelled folders
ANNOTATE_STEP = (
    "annotate generated images in notebook 05 with INTERACTIVE = True, then copy its annotator/data folder here "
    "(docs/semantic_projection.md#annotating-a-released-generator)"
)


@dataclass
class Need:
    """One file or folder that some runs use, and what the preflight found."""

    label: str  # what it is, e.g. "asset bigbigan" or "benchmark ECSSD"
    path: Path
    required: bool
    state: State = "missing"
    detail: str = ""  # what was verified, or why it is invalid
    step: str = ""  # how to get it (shown when it is not in place)
    runs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """In place: verified, or present where nothing more can be checked."""
        return self.state in ("verified", "present")

    @property
    def mark(self) -> str:
        """The report's one-word verdict."""
        if self.ok or self.state == "invalid":
            return "ok" if self.ok else "INVALID"
        if self.required:
            return "MISSING"
        return "SKIP" if self.label.startswith((BENCHMARK, LABELLED)) else "unused"


@dataclass
class PlannedRun:
    """One notebook run as the runner will start it."""

    name: str  # the notebook's name, with @variant for a variant
    notebook: Path
    variant: str | None
    given: dict[str, Any]  # the parameters passed to it
    defaults: dict[str, Any]  # its parameters cell
    skipped: str = ""  # why it will not run

    @property
    def parameters(self) -> dict[str, Any]:
        """Every parameter it runs with."""
        return {**self.defaults, **self.given}


@dataclass
class Preflight:
    """The needs of a plan and the plan with absent benchmarks removed."""

    needs: list[Need]
    runs: list[PlannedRun]

    @property
    def ok(self) -> bool:
        """Whether every required file is in place and every benchmark folder present is readable."""
        return all(n.ok or (not n.required and n.state == "missing") for n in self.needs)

    def report(self) -> str:
        """A table of every need with its state, then the steps for what is missing and the skipped benchmarks."""
        if not self.needs:
            return "Preflight: the runs need no weights, embeddings, annotations or benchmark folders."
        lines = ["Preflight: what the runs need", ""]
        for need in self.needs:
            mark = need.mark
            lines.append(
                f"  [{mark:>7}] {need.label}: {need.path} ({need.state}{', ' + need.detail if need.detail else ''})"
            )
            lines.append(f"            used by {', '.join(need.runs)}")
        todo = [n for n in self.needs if not n.ok]
        if todo:
            lines += ["", "To get what is not in place:"]
            lines += [f"  {n.label}: {n.step}" for n in todo]
        skipped = [
            n.label.removeprefix(BENCHMARK).removeprefix(LABELLED)
            for n in self.needs
            if n.label.startswith((BENCHMARK, LABELLED)) and n.state == "missing"
        ]
        if skipped:
            lines += ["", f"Folders that will be left out (missing): {', '.join(skipped)}"]
        lines += [f"Run {r.name} will be skipped: {r.skipped}" for r in self.runs if r.skipped]
        lines += ["", "Everything required is in place." if self.ok else "Something required is not in place."]
        return "\n".join(lines)


def _asset_for(path: Path) -> assets.Asset | None:
    return next((a for a in assets.ASSETS if assets.target_path(a) == path), None)


def parameter_path(parameter: str, value: str) -> Path:
    """The file or folder a file parameter names: a generator by its known name or a path, the rest by path."""
    return resolve_checkpoint(value) if parameter == "GENERATOR" else resolve(value)


def _file_need(parameter: str, value: str) -> Need:
    """The need behind one file parameter, checked."""
    path = parameter_path(parameter, value)
    asset = _asset_for(path)
    if asset is not None:
        step = f"bash download_all.sh --only {asset.name}" if asset.urls else asset.manual
        need = Need(f"asset {asset.name}", path, True, step=step)
        if not path.exists():
            return need
        try:
            assets.ensure(asset)  # an existing file is verified, and recorded on its first check; nothing downloads
        except assets.AssetError as err:
            return replace(need, state="invalid", detail=str(err).splitlines()[0])
        return replace(need, state="verified", detail=assets.read_lock(path.parent)[path.name]["check"])
    if parameter == "ANNOTATIONS":
        need = Need("annotation store", path, True, step=ANNOTATE_STEP)
        store = path / "store.json"
        return replace(need, state="present", detail="store.json found") if store.is_file() else need
    shipped = parameter == "GENERATOR" and value in KNOWN_FILES
    step = "shipped with the repository: restore it with git checkout" if shipped else "a file you provide"
    need = Need(f"{parameter.lower()} file", path, True, step=step)
    return replace(need, state="present") if path.is_file() else need


def _folder_need(need: Need, open_pairs: Callable[[], ImageMaskFolder]) -> Need:
    """``need`` for a folder of image/mask pairs, checked: missing, present with its pair count, or invalid."""
    if not need.path.exists():
        return need
    try:
        pairs = len(open_pairs())
    except (FolderDatasetError, OSError) as err:
        return replace(need, state="invalid", detail=str(err).splitlines()[0])
    if not pairs:
        return replace(need, state="invalid", detail="no image/mask pairs found")
    return replace(need, state="present", detail=f"{pairs} image/mask pairs")


def _benchmark_need(name: str, root: Path) -> Need:
    layout = BENCHMARKS[name]
    step = (
        f"from {layout.source}: {layout.archives}, so that {root / layout.images_subdir} and "
        f"{root / layout.masks_subdir} exist (docs/data.md#benchmark-folder-layouts)"
    )
    return _folder_need(
        Need(BENCHMARK + name, root, False, step=step), lambda: open_benchmark(name, root, verify=False)
    )


def _labelled_need(parameter: str, root: Path) -> Need:
    step = (
        f"a folder you provide: {root / 'images'} and {root / 'masks'} (class-index PNGs paired by file stem; "
        "docs/semantic_projection.md#labelled-folders)"
    )
    return _folder_need(
        Need(f"{LABELLED}{parameter}", root, False, step=step),
        lambda: ImageMaskFolder(root / "images", root / "masks", mask_rule=class_mask, verify=False),
    )


def check(runs: list[PlannedRun]) -> Preflight:
    """Checks every run's files and benchmark folders; returns the needs and the runs with absent benchmarks
    dropped from their ``BENCHMARKS`` (and runs left with nothing to score marked skipped)."""
    needs: dict[tuple[str, str], Need] = {}  # by the parameter and its value, or the benchmark and its folder

    def note(key: tuple[str, str], make: Callable[[], Need], run: str) -> Need:
        if key not in needs:  # each file and folder is checked once, however many runs use it
            needs[key] = make()
        needs[key].runs.append(run)
        return needs[key]

    planned = []
    for run in runs:
        params, given, skipped = run.parameters, run.given, ""
        if params.get("BENCHMARKS"):
            present = {}
            for name, root in parse_benchmarks(str(params["BENCHMARKS"])).items():
                need = note((name, str(root)), lambda: _benchmark_need(name, root), run.name)
                if need.state != "missing":
                    present[name] = root
            given = {**given, "BENCHMARKS": "; ".join(f"{name}: {root}" for name, root in present.items())}
            if not present and not params.get("PROCEDURAL_SPLIT", True):
                skipped = "none of its benchmark folders exists"
        dataset = str(params.get("DATASET") or "")
        if ":" in dataset and dataset.partition(":")[0].strip().lower() in {b.lower() for b in BENCHMARKS}:
            name, root = next(iter(parse_benchmarks(dataset).items()))  # notebook 07 inspects one benchmark
            if note((name, str(root)), lambda: _benchmark_need(name, root), run.name).state == "missing":
                skipped = "its dataset folder does not exist"
        folders = {p: str(params[p]) for p in FOLDER_PARAMETERS if params.get(p)}
        missing = set()
        for parameter, value in folders.items():
            need = note((parameter, value), lambda: _labelled_need(parameter, resolve(value)), run.name)
            if need.state == "missing":
                missing.add(parameter)
        if "TRAIN_FOLDER" in folders and missing:
            missing |= set(folders)  # one is of no use without the other
        if missing:
            given = {**given, **dict.fromkeys(missing, "")}
            if "TRAIN_FOLDER" in missing and not params.get("PROCEDURAL_SPLIT", True):
                skipped = "its labelled folders do not both exist"
        for parameter in FILE_PARAMETERS:  # a skipped run's files are listed too, but not required
            if params.get(parameter):
                value = str(params[parameter])
                note((parameter, value), lambda: _file_need(parameter, value), run.name)
        planned.append(replace(run, given=given, skipped=skipped))
    running = {run.name for run in planned if not run.skipped}
    for (parameter, _), need in needs.items():
        if parameter in FILE_PARAMETERS:
            need.required = any(name in running for name in need.runs)
    return Preflight(list(needs.values()), planned)
