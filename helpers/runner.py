"""Headless reproduction: runs the notebooks in order with papermill and writes a summary.

``python -m helpers.runner [--smoke]`` executes every ``notebooks/NN_*.ipynb`` in name order (``--notebook PATH``
runs the given notebooks instead, e.g. ``notebooks/training/train_default_gans.ipynb``, which makes the shipped
weights and is not part of the reproduction run). Each notebook gets ``OUT_DIR = <results>/<notebook name>``
(its JSON metrics and PNG figures land there), ``DEVICE``, ``INTERACTIVE = False`` (widgets are not displayed;
their outputs are saved), the values of a profile (``--profile NAME``, see `helpers.profiles`) and, with
``--smoke``, tiny sizes; only the names a notebook's ``parameters`` cell declares are passed to it. Every
parameter the notebook ran with (its defaults with the passed values over them) is written to
``<OUT_DIR>/parameters.json`` before it starts.
Executed copies go to ``<results>/executed/``, and ``summary.json`` plus ``summary.md`` to ``<results>/``. The
first failure stops the run and is reported with the notebook, the cell and the error.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat
import papermill

from helpers.core.io import write_json, write_text
from helpers.core.paths import notebooks_dir, resolve
from helpers.profiles import Profile, load_profile, notebook_parameters


@dataclass
class NotebookRun:
    """What happened to one notebook."""

    notebook: str
    status: Literal["passed", "failed"]
    seconds: float
    executed: str
    out_dir: str
    parameters: dict[str, Any]  # every parameter it ran with: its defaults, overridden by those passed
    overrides: dict[str, Any]  # the parameters passed to it
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The notebooks of a folder in run order (their names start with a number)."""
    folder = folder or notebooks_dir()
    return sorted(folder.glob("[0-9]*.ipynb"))


def default_parameters(notebook: Path) -> dict[str, Any]:
    """The literal values assigned in the notebook's cell tagged 'parameters', by name."""
    found = papermill.inspect_notebook(str(notebook))
    try:
        return {name: ast.literal_eval(p["default"]) for name, p in found.items()}
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{notebook}: the parameters cell must assign literals only ({err})") from err


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


def run_notebook(notebook: Path, results: Path, params: dict[str, Any], timeout: int | None = None) -> NotebookRun:
    """Executes one notebook with the parameters it declares (``timeout``: seconds per cell) and reports how it went.

    The metrics are those its ``metrics.json`` holds after a run that passed and wrote it: a file left by an
    earlier run is never reported as this run's.
    """
    out_dir = results / notebook.stem
    executed = results / "executed" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    defaults = default_parameters(notebook)
    given = {k: v for k, v in {**params, "OUT_DIR": str(out_dir)}.items() if k in defaults}
    run = NotebookRun(notebook.name, "passed", 0.0, str(executed), str(out_dir), {**defaults, **given}, given)
    write_json(out_dir / "parameters.json", run.parameters)
    start, started_at = time.perf_counter(), time.time()
    try:
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
    metrics_file = out_dir / "metrics.json"
    if run.status == "passed" and metrics_file.exists() and metrics_file.stat().st_mtime >= started_at:
        run.metrics = json.loads(metrics_file.read_text())
    return run


def _summary_markdown(runs: list[NotebookRun], smoke: bool, profile: str) -> str:
    lines = [
        f"# Reproduction summary (profile {profile}, {'smoke' if smoke else 'full'} run)",
        "",
        "| notebook | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {r.notebook} | {r.status} | {r.seconds:.1f} |" for r in runs]
    for r in runs:
        lines += ["", f"## {r.notebook}", ""]
        if r.error:
            lines += ["```", r.error, "```"]
        flat = {k: v for k, v in r.metrics.items() if isinstance(v, (int, float, str, bool))}
        lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in flat.items()]
    return "\n".join(lines) + "\n"


def run_all(
    results: Path,
    smoke: bool = False,
    only: list[str] | None = None,
    device: str = "auto",
    folder: Path | None = None,
    timeout: int | None = None,
    notebooks: list[Path] | None = None,
    profile: str | Path | None = None,
    summary_name: str = "summary",
) -> list[NotebookRun]:
    """Runs the notebooks in order, writing the summary after each; raises NotebookFailed at the first failure.

    ``notebooks`` replaces the numbered notebooks of ``folder``; ``only`` keeps those whose name starts so;
    ``profile`` (a name or a YAML path) sets parameters before ``smoke``'s tiny sizes (see `helpers.profiles`);
    the summary is written to ``<results>/<summary_name>.json`` and ``.md``.
    """
    if notebooks is None:
        notebooks = list_notebooks(folder)
    missing = [str(nb) for nb in notebooks if not Path(nb).is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {', '.join(missing)}")
    notebooks = [Path(nb) for nb in notebooks]
    if only:
        unknown = [name for name in only if not any(nb.stem.startswith(name) for nb in notebooks)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; available: {[nb.stem for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(name) for name in only)]
    chosen: Profile | None = load_profile(profile) if profile else None
    declared = {nb.stem: set(default_parameters(nb)) for nb in {*list_notebooks(folder), *notebooks}}
    for checked in filter(None, [chosen, load_profile("smoke") if smoke else None]):
        checked.check(declared)
    profile_name = chosen.name if chosen else "default"
    runs: list[NotebookRun] = []
    for nb in notebooks:
        print(f"[{len(runs) + 1}/{len(notebooks)}] {nb.name} ...", flush=True)
        params = {**notebook_parameters(nb.stem, chosen, smoke), "DEVICE": device, "INTERACTIVE": False}
        runs.append(run_notebook(nb, results, params, timeout))
        print(f"    {runs[-1].status} in {runs[-1].seconds:.1f} s", flush=True)
        summary = {"profile": profile_name, "smoke": smoke, "device": device, "notebooks": [asdict(r) for r in runs]}
        write_json(results / f"{summary_name}.json", summary)
        write_text(results / f"{summary_name}.md", _summary_markdown(runs, smoke, profile_name))
        if runs[-1].status == "failed":
            raise NotebookFailed(runs[-1].error)
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
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    results = resolve(args.results or ("results" if not args.profile else f"results/{Path(args.profile).stem}"))
    summary_name = f"summary_{args.notebook[0].stem}" if args.notebook else "summary"
    try:
        runs = run_all(
            results,
            smoke=args.smoke,
            only=args.only,
            device=args.device,
            timeout=args.timeout,
            notebooks=[resolve(p) for p in args.notebook] if args.notebook else None,
            profile=args.profile,
            summary_name=summary_name,
        )
    except (NotebookFailed, FileNotFoundError, ValueError) as err:
        print(f"FAILED: {err}\nsummary: {results / summary_name}.md", file=sys.stderr)
        return 1
    print(f"All {len(runs)} notebooks passed; summary: {results / summary_name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
