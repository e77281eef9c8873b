"""Headless reproduction: runs the notebooks in order with papermill and writes a summary.

``python -m helpers.runner [--smoke]`` executes every ``notebooks/NN_*.ipynb`` in name order (``--notebook PATH``
runs the given notebooks instead, e.g. ``notebooks/training/train_default_gans.ipynb``, which makes the shipped
weights and is not part of the reproduction run). Each notebook gets ``OUT_DIR = <results>/<notebook name>``
(its JSON metrics and PNG figures land there), ``DEVICE``, ``INTERACTIVE = False`` (widgets are not displayed;
their outputs are saved), the values of a profile (``--profile NAME``, see `helpers.profiles`) and, with
``--smoke``, tiny sizes; only the names a notebook's ``parameters`` cell declares are passed to it. A notebook
with variants in the profile runs once per variant (``OUT_DIR = <results>/<notebook>@<variant>``). Every
parameter a run uses (the notebook's defaults with the passed values over them) is written to
``<OUT_DIR>/parameters.json`` before it starts.
Before any notebook starts, the preflight (`helpers.preflight`) lists the files and benchmark folders the runs
need; a required one that is missing or fails verification stops everything, with the step that gets it
(``--check`` stops after the list). Executed copies go to ``<results>/executed/``, and ``summary.json`` plus
``summary.md`` to ``<results>/``; with a profile that gives reference scores, the summary sets each benchmark's
scores beside them. When the run ends, failed or not, `helpers.report` writes ``report.html``, ``report.md`` and
``report.json`` beside the summary. ``summary.json`` holds each run's seconds per code cell (``cells``), and
``summary.md`` its three slowest cells. The first failure stops the run and is reported with the notebook, the cell
and the error. Kernels start with glibc malloc settings that spare large tensors their page faults
(`MALLOC_TUNABLES`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat
import papermill

from helpers.core.io import write_json, write_text
from helpers.core.parameters import declared_parameters
from helpers.core.paths import notebooks_dir, resolve
from helpers.preflight import BENCHMARK, PlannedRun, Preflight
from helpers.preflight import check as preflight_check
from helpers.profiles import SCORE_KEYS, Profile, load_profile, notebook_parameters
from helpers.report import scalar_metrics, write_report


@dataclass
class NotebookRun:
    """What happened to one notebook run."""

    notebook: str  # the file's name
    run: str  # the notebook's name, with @variant for a profile's variant
    status: Literal["passed", "failed", "skipped"]
    seconds: float
    executed: str
    out_dir: str
    parameters: dict[str, Any]  # every parameter it ran with: its defaults, overridden by those passed
    overrides: dict[str, Any]  # the parameters passed to it
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # why it failed, or why it was skipped
    cells: list[dict[str, Any]] = field(default_factory=list)  # per code cell: index, first line, seconds


def cell_seconds(executed: Path) -> list[dict[str, Any]]:
    """Seconds per executed code cell of a papermill output notebook (its ``papermill.duration``), in order."""
    if not executed.is_file():
        return []
    cells = []
    for index, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        duration = cell.metadata.get("papermill", {}).get("duration")
        if cell.cell_type == "code" and duration is not None:
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            cells.append({"cell": index, "first_line": first[:80], "seconds": round(float(duration), 2)})
    return cells


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


class PreflightFailed(RuntimeError):
    """Something a run needs is missing or invalid; the message is the preflight's report."""


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The notebooks of a folder in run order (their names start with a number)."""
    folder = folder or notebooks_dir()
    return sorted(folder.glob("[0-9]*.ipynb"))


def _failure_message(notebook: Path, err: papermill.PapermillExecutionError, executed: Path) -> str:
    """Names the failing cell as it is in the source notebook: 1-based position and first line."""
    cells = nbformat.read(notebook, as_version=4).cells
    position = next(
        (str(i + 1) for i, c in enumerate(cells) if c.source == err.source),
        f"{err.cell_index + 1} of the executed notebook",
    )
    first_source_line = (err.source.strip().splitlines() or [""])[0]
    first_error_line = (str(err.evalue).strip().splitlines() or [""])[0]
    return (
        f"{notebook.name} failed in cell {position} ({first_source_line!r}): "
        f"{err.ename}: {first_error_line}\n  executed notebook with the traceback: {executed}"
    )


# glibc's malloc gives large freed blocks back to the system and faults them in again page by page: a generator step
# at batch 32 (16 MB activations) took tens of thousands of page faults. Kept in the heap (blocks up to 32 MB, no
# trimming) and backed by transparent huge pages they cost none, with the same results
# (docs/performance.md#page-faults-of-large-tensors). Other C libraries ignore the variable.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


@contextmanager
def kernel_environment() -> Iterator[None]:
    """The environment of the kernels started inside (and of their worker processes): `MALLOC_TUNABLES`, unless
    GLIBC_TUNABLES is set already."""
    if "GLIBC_TUNABLES" in os.environ:
        yield
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    try:
        yield
    finally:
        del os.environ["GLIBC_TUNABLES"]


def run_notebook(
    notebook: Path, results: Path, params: dict[str, Any], timeout: int | None = None, name: str | None = None
) -> NotebookRun:
    """Executes one notebook with the parameters it declares (``timeout``: seconds per cell) and reports how it went.

    ``name`` (default: the notebook's) names its output folder and executed copy under ``results``. The metrics
    are those its ``metrics.json`` holds after a run that passed and wrote it: a file left by an earlier run is
    never reported as this run's.
    """
    name = name or notebook.stem
    out_dir, executed = results / name, results / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    defaults = declared_parameters(notebook)
    given = {k: v for k, v in {**params, "OUT_DIR": str(out_dir)}.items() if k in defaults}
    run = NotebookRun(notebook.name, name, "passed", 0.0, str(executed), str(out_dir), {**defaults, **given}, given)
    write_json(out_dir / "parameters.json", run.parameters)
    start, started_at = time.perf_counter(), time.time()
    try:
        with kernel_environment():
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=given,
                cwd=str(notebook.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout,
            )
    except papermill.PapermillExecutionError as err:
        run.status, run.error = "failed", _failure_message(notebook, err, executed)
    except Exception as err:  # the kernel died, a cell timed out, the notebook could not be read
        run.status = "failed"
        run.error = f"{notebook.name} failed: {type(err).__name__}: {err}\n  executed notebook: {executed}"
    run.seconds = round(time.perf_counter() - start, 1)
    run.cells = cell_seconds(executed)
    metrics_file = out_dir / "metrics.json"
    if run.status == "passed" and metrics_file.exists() and metrics_file.stat().st_mtime >= started_at:
        run.metrics = json.loads(metrics_file.read_text())
    return run


def plan_runs(
    notebooks: list[Path], results: Path, profile: Profile | None, smoke: bool, device: str, gpus: int = 1
) -> list[PlannedRun]:
    """One run per notebook, or per variant the profile gives it, with the parameters its cell declares
    (``gpus`` goes to the notebooks with a GPUS parameter)."""
    planned = []
    for nb in notebooks:
        defaults = declared_parameters(nb)
        for variant in (profile.variants(nb.stem) if profile else []) or [None]:
            name = nb.stem + (f"@{variant}" if variant else "")
            values = {
                **notebook_parameters(nb.stem, profile, smoke, variant),
                "DEVICE": device,
                **({"GPUS": gpus} if gpus != 1 else {}),
                "INTERACTIVE": False,
                "OUT_DIR": str(results / name),
            }
            planned.append(PlannedRun(name, nb, variant, {k: v for k, v in values.items() if k in defaults}, defaults))
    return planned


def benchmark_rows(runs: list[NotebookRun], preflight: Preflight, profile: Profile | None) -> list[dict[str, Any]]:
    """One row per benchmark scored, skipped or in the profile's reference scores: our final model's scores
    (``metrics['benchmarks'][name][metrics['final']]``) beside the reference's."""
    reference = profile.reference_scores if profile else {}
    rows = []
    for run in runs:
        for name, by_model in run.metrics.get("benchmarks", {}).items():
            ours = by_model.get(run.metrics.get("final"), {})
            rows.append({"benchmark": name, "run": run.run, "status": "scored", **{k: ours.get(k) for k in SCORE_KEYS}})
    for need in preflight.needs:
        if need.label.startswith(BENCHMARK) and need.state == "missing":
            name = need.label.removeprefix(BENCHMARK)
            rows.append({"benchmark": name, "run": ", ".join(need.runs), "status": f"skipped: no folder {need.path}"})
    for name in reference:
        if not any(row["benchmark"] == name for row in rows):
            rows.append({"benchmark": name, "run": "", "status": "not in this run"})
    for row in rows:
        row["reference"] = reference.get(row["benchmark"])
    return rows


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def _summary_markdown(
    runs: list[NotebookRun], smoke: bool, profile: str, benchmarks: list[dict[str, Any]], summary_name: str
) -> str:
    report = summary_name.replace("summary", "report", 1)
    lines = [
        f"# Reproduction summary (profile {profile}, {'smoke' if smoke else 'full'} run)",
        "",
        f"Every result beside its target, figures included: [{report}.html]({report}.html) ([{report}.md]({report}.md);"
        " written when the run ends).",
        "",
        "| notebook | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {r.run} | {r.status} | {r.seconds:.1f} |" for r in runs]
    if benchmarks:
        lines += [
            "",
            "## Benchmarks",
            "",
            "IoU / accuracy / max-Fβ of each run's final model, and the reference's"
            + (" (smoke sizes: not comparable)" if smoke else ""),
            "",
            "| benchmark | run | status | IoU | accuracy | max-Fβ | reference IoU | accuracy | max-Fβ |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in benchmarks:
            ours = [_number(row.get(k)) for k in SCORE_KEYS]
            ref = [_number((row["reference"] or {}).get(k)) for k in SCORE_KEYS]
            lines.append(f"| {row['benchmark']} | {row['run']} | {row['status']} | " + " | ".join(ours + ref) + " |")
    for r in runs:
        lines += ["", f"## {r.run}", ""]
        if r.error:
            lines += ["```", r.error, "```"]
        flat = scalar_metrics(r.metrics)
        lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in flat.items()]
        slowest = sorted(r.cells, key=lambda c: -c["seconds"])[:3]
        if slowest:
            lines.append(
                "- slowest cells: "
                + ", ".join(f"[{c['cell']}] `{c['first_line']}` {c['seconds']:.1f} s" for c in slowest)
            )
    return "\n".join(lines) + "\n"


def run_all(
    results: Path,
    smoke: bool = False,
    only: list[str] | None = None,
    device: str = "auto",
    gpus: int = 1,
    folder: Path | None = None,
    timeout: int | None = None,
    notebooks: list[Path] | None = None,
    profile: str | Path | None = None,
    summary_name: str = "summary",
    check_only: bool = False,
) -> list[NotebookRun]:
    """Runs the notebooks in order, writing the summary after each; raises NotebookFailed at the first failure.

    ``notebooks`` replaces the numbered notebooks of ``folder`` (those the profile lists, unless ``only`` picks);
    ``only`` keeps those whose name starts so; ``profile`` (a name or a YAML path) sets parameters before
    ``smoke``'s tiny sizes (see `helpers.profiles`); ``gpus`` > 1 runs the heavy steps of the notebooks with a GPUS
    parameter on that many torchrun processes (docs/distributed.md). The summary is written to
    ``<results>/<summary_name>.json`` and ``.md``. The preflight's report is printed first; it raises PreflightFailed
    when something required is not in place, and with ``check_only`` nothing runs.
    """
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1; got {gpus}")
    chosen: Profile | None = load_profile(profile) if profile else None
    if notebooks is None:
        notebooks = list_notebooks(folder)
        if chosen and not only:
            notebooks = [nb for nb in notebooks if chosen.runs_notebook(nb.stem)]
    missing = [str(nb) for nb in notebooks if not Path(nb).is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {', '.join(missing)}")
    notebooks = [Path(nb) for nb in notebooks]
    if only:
        unknown = [name for name in only if not any(nb.stem.startswith(name) for nb in notebooks)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; available: {[nb.stem for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(name) for name in only)]
    every = [nb for nb in (folder or notebooks_dir()).rglob("*.ipynb") if ".ipynb_checkpoints" not in nb.parts]
    declared = {nb.stem: set(declared_parameters(nb)) for nb in {*every, *notebooks}}  # what profiles may name
    for checked in filter(None, [chosen, load_profile("smoke") if smoke else None]):
        checked.check(declared)
    profile_name = chosen.name if chosen else "default"
    preflight = preflight_check(plan_runs(notebooks, results, chosen, smoke, device, gpus))
    print(preflight.report(), flush=True)
    if not preflight.ok:
        raise PreflightFailed(preflight.report())
    if check_only:
        return []
    runs: list[NotebookRun] = []
    for planned in preflight.runs:
        print(f"[{len(runs) + 1}/{len(preflight.runs)}] {planned.name} ...", flush=True)
        if planned.skipped:
            runs.append(
                NotebookRun(
                    planned.notebook.name,
                    planned.name,
                    "skipped",
                    0.0,
                    executed="",
                    out_dir=planned.given["OUT_DIR"],
                    parameters=planned.parameters,
                    overrides=planned.given,
                    error=planned.skipped,
                )
            )
        else:
            runs.append(run_notebook(planned.notebook, results, planned.given, timeout, planned.name))
        print(f"    {runs[-1].status} in {runs[-1].seconds:.1f} s", flush=True)
        rows = benchmark_rows(runs, preflight, chosen)
        summary = {
            "profile": profile_name,
            "smoke": smoke,
            "device": device,
            "gpus": gpus,
            "notebooks": [asdict(r) for r in runs],
            "benchmarks": rows,
        }
        write_json(results / f"{summary_name}.json", summary)
        write_text(results / f"{summary_name}.md", _summary_markdown(runs, smoke, profile_name, rows, summary_name))
        if runs[-1].status == "failed":
            write_report(results, summary_name)
            raise NotebookFailed(runs[-1].error)
    write_report(results, summary_name)
    return runs


def main(argv: list[str] | None = None) -> int:
    """The command line of ``reproduce.sh``: runs the notebooks, prints where the summary is; 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="a parameter set of notebooks/profiles/ by name, or a YAML path")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (notebooks/profiles/smoke.yml), same paths")
    parser.add_argument("--results", help="output folder (default: results/, or results/<profile> with --profile)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="run only notebooks whose name starts so")
    parser.add_argument(
        "--notebook",
        nargs="+",
        metavar="PATH",
        type=Path,
        help="run these notebooks instead of notebooks/NN_*.ipynb (relative paths: repository root); "
        "the summary is then summary_<first notebook's name>.md",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if present, else CPU), 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="processes for the heavy steps (torchrun): one per GPU, or CPU processes without CUDA (default 1)",
    )
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    parser.add_argument(
        "--check", action="store_true", help="list what the runs need and whether it is in place; run nothing"
    )
    args = parser.parse_args(argv)
    results = resolve(args.results or ("results" if not args.profile else f"results/{Path(args.profile).stem}"))
    summary_name = f"summary_{args.notebook[0].stem}" if args.notebook else "summary"
    try:
        runs = run_all(
            results,
            smoke=args.smoke,
            only=args.only,
            device=args.device,
            gpus=args.gpus,
            timeout=args.timeout,
            notebooks=[resolve(p) for p in args.notebook] if args.notebook else None,
            profile=args.profile,
            summary_name=summary_name,
            check_only=args.check,
        )
    except PreflightFailed:
        print("FAILED: the preflight found something required missing or invalid (listed above)", file=sys.stderr)
        return 1
    except (NotebookFailed, FileNotFoundError, ValueError) as err:
        print(f"FAILED: {err}\nsummary: {results / summary_name}.md", file=sys.stderr)
        return 1
    if args.check:
        return 0
    skipped = [r.run for r in runs if r.status == "skipped"]
    if skipped:
        print(f"Skipped (nothing to score): {', '.join(skipped)}")
    print(f"All {len(runs) - len(skipped)} notebook runs passed; summary: {results / summary_name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
