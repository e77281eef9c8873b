"""The reproduction report: every notebook run of a results folder, on one page that a person reads.

`write_report(results)` reads the runner's ``summary.json`` (runs, status, seconds, parameters, benchmark rows)
and each run's ``metrics.json`` and PNG figures, and writes

* ``report.html``: self-contained (figures embedded as PNG data, inline style, no scripts), opens offline;
* ``report.md``: the same tables, figures linked by relative path;
* ``report.json``: the headline rows as numbers, for tools and tests.

Per run: a headline table where each number stands beside the target or the paper's number it is meant to meet,
with met / not met (`TARGETS`; the paper's numbers come from the profile's reference scores), then its other
scalar metrics, parameters, seconds and figures. At the top: the versions the report was written with, the git
commit, and the sha256 of every weights, direction, embeddings or annotation-store file a run used.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.core.io import write_json, write_text
from helpers.core.manifest import sha256_file
from helpers.core.paths import project_root, resolve
from helpers.preflight import FILE_PARAMETERS, parameter_path


@dataclass(frozen=True)
class Row:
    """One headline number, and the goal it is meant to meet (none: shown for information)."""

    label: str
    value: float
    goal: float | None = None
    at_least: bool = True  # met when value >= goal (else value <= goal)
    source: str = ""  # "target" (this project's) or "paper"

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None without a goal."""
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal


def _direction_rows(metrics: dict[str, Any], reference: dict[str, dict[str, float]]) -> list[Row]:
    """Notebook 04: the final model on the procedural test split (targets) and on each benchmark (the paper)."""
    rows, final = [], metrics.get("final", "")
    test = metrics.get("procedural_test") or {}
    if final in test:
        rows.append(Row(f"procedural test IoU, {final}", test[final]["iou"], 0.75, True, "target"))
        bound = test.get("supervised (upper bound)")
        if bound:
            rows.append(Row("supervised upper bound IoU", bound["iou"]))
            rows.append(Row("gap to the upper bound", bound["iou"] - test[final]["iou"], 0.15, False, "target"))
    for name, models in (metrics.get("benchmarks") or {}).items():
        for key, label in (("iou", "IoU"), ("accuracy", "accuracy"), ("f_max", "max-Fβ")):
            goal = reference.get(name, {}).get(key)
            rows.append(Row(f"{name} {label}", models[final][key], goal, True, "paper" if goal is not None else ""))
    return rows


def _projection_rows(metrics: dict[str, Any], reference: dict[str, dict[str, float]]) -> list[Row]:
    """Notebook 05: the foreground IoU on the procedural test split (target) and on a labelled folder."""
    rows = []
    target = 0.85 if (metrics.get("annotations") or {}).get("n", 0) >= 20 else None  # the target is for 20
    for key, goal in (("procedural_test", target), ("test_folder", None)):
        scores = metrics.get(key)
        if scores:
            rows.append(Row(f"{key} foreground IoU", scores["binary"]["iou"], goal, True, "target" if goal else ""))
            rows += [Row(f"{key} {name} IoU", value) for name, value in scores["class_iou"].items()]
    return rows


def _fewshot_rows(metrics: dict[str, Any], reference: dict[str, dict[str, float]]) -> list[Row]:
    """Notebook 06: LayerMatch's gain over random initialisation at each k (target: +5 points at k <= 20)."""
    rows = []
    for k, gain in (metrics.get("layermatch_minus_random_iou") or {}).items():
        goal = 0.05 if int(k) <= 20 else None
        rows.append(Row(f"LayerMatch − random IoU, k {k}", gain, goal, True, "target" if goal else ""))
    for arm, per_k in (metrics.get("iou") or {}).items():
        rows += [Row(f"{arm} IoU, k {k}", s["mean"]) for k, s in per_k.items()]
    return rows


def _inspection_rows(metrics: dict[str, Any], reference: dict[str, dict[str, float]]) -> list[Row]:
    """Notebook 07: the inspected model's scores on the inspected dataset."""
    scores = metrics.get("scores") or {}
    return [
        Row(f"{metrics.get('dataset', 'dataset')} {key}", scores[key])
        for key in ("iou", "accuracy", "f_max")
        if key in scores
    ]


TARGETS: dict[str, Callable[[dict[str, Any], dict[str, dict[str, float]]], list[Row]]] = {
    "04_": _direction_rows,  # docs/results.md: IoU >= 0.75 and within 0.15 of the upper bound; the paper's table
    "05_": _projection_rows,  # docs/results.md: foreground IoU >= 0.85 from 20 annotations
    "06_": _fewshot_rows,  # docs/results.md: LayerMatch >= +5 IoU points over random init at every k <= 20
    "07_": _inspection_rows,
}


def headline_rows(run: str, metrics: dict[str, Any], reference: dict[str, dict[str, float]]) -> list[Row]:
    """The headline rows of one run (by its notebook's number), reference scores by benchmark name."""
    for prefix, rows in TARGETS.items():
        if run.startswith(prefix):
            return rows(metrics, reference)
    return []


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The top-level numbers and texts of a metrics file (booleans included), in file order."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def environment() -> dict[str, str]:
    """Versions of what produced the numbers, and the git commit of the checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "git commit": commit or "unknown",
    }


def fingerprints(runs: list[dict[str, Any]]) -> dict[str, str]:
    """sha256 of every file that a run's file parameters name (a store: its store.json), by path."""
    found: dict[str, str] = {}
    for run in runs:
        for parameter in FILE_PARAMETERS:
            value = run["parameters"].get(parameter)
            if not value:
                continue
            path = parameter_path(parameter, str(value))
            path = path / "store.json" if path.is_dir() else path
            if path.is_file() and str(path) not in found:
                found[str(path)] = sha256_file(path)
    return found


@dataclass
class RunReport:
    """What the report shows of one run."""

    run: str
    status: str
    seconds: float
    error: str
    rows: list[Row]
    scalars: dict[str, Any]
    parameters: dict[str, Any]
    figures: list[Path]


def collect(results: Path, summary_name: str = "summary") -> tuple[dict[str, Any], list[RunReport]]:
    """The runner's summary and each run's report, read from ``results``."""
    summary_path = results / f"{summary_name}.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} does not exist: the report reads a run of scripts/reproduce.sh")
    summary = json.loads(summary_path.read_text())
    reference = {row["benchmark"]: row["reference"] for row in summary.get("benchmarks", []) if row.get("reference")}
    reports = []
    for run in summary["notebooks"]:
        out = Path(run["out_dir"])
        metrics = run["metrics"] if run["status"] == "passed" else {}
        reports.append(
            RunReport(
                run["run"],
                run["status"],
                run["seconds"],
                run["error"],
                headline_rows(run["run"], metrics, reference),
                scalar_metrics(metrics),
                run["parameters"],
                sorted(out.glob("*.png")) if run["status"] == "passed" else [],
            )
        )
    return summary, reports


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _goal(row: Row) -> str:
    if row.goal is None:
        return ""
    return f"{'≥' if row.at_least else '≤'} {row.goal:.4f} ({row.source})"


def _verdict(row: Row) -> str:
    return {True: "met", False: "not met", None: ""}[row.met]


def _title(summary: dict[str, Any]) -> tuple[str, str]:
    """The report's title and its first sentence."""
    run = "smoke" if summary.get("smoke") else "full"
    smoke = " (smoke sizes: the targets are not expected to be met)" if summary.get("smoke") else ""
    return (
        f"Reproduction report: profile {summary['profile']}, {run} run",
        f"Each number beside the target or the paper's number it is meant to meet{smoke}.",
    )


def _other_metrics(report: RunReport) -> str:
    return "Other metrics: " + ", ".join(f"{k} {_number(v)}" for k, v in report.scalars.items())


def _parameters(report: RunReport) -> str:
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in report.parameters.items())


def goals_markdown(results: str | Path) -> str:
    """A markdown table of every headline row that has a goal, over all runs of ``results``."""
    lines = ["| run | result | value | goal | verdict |", "|---|---|---:|---|---|"]
    for r in collect(Path(results))[1]:
        lines += [f"| {r.run} | {x.label} | {x.value:.4f} | {_goal(x)} | {_verdict(x)} |" for x in r.rows if x.goal]
    return "\n".join(lines)


def _met_count(report: RunReport) -> str:
    goals = [r for r in report.rows if r.met is not None]
    return f"{sum(bool(r.met) for r in goals)} of {len(goals)}" if goals else "–"


def _markdown(
    summary: dict[str, Any], reports: list[RunReport], env: dict[str, str], sha: dict[str, str], results: Path
) -> str:
    title, intro = _title(summary)
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "| run | status | seconds | goals met |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {r.run} | {r.status} | {r.seconds:.1f} | {_met_count(r)} |" for r in reports]
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    if sha:
        lines += ["", "## Files used (sha256)", ""] + [f"- `{path}`: {digest}" for path, digest in sha.items()]
    for r in reports:
        lines += ["", f"## {r.run}", "", f"{r.status}, {r.seconds:.1f} s"]
        if r.error:
            lines += ["", "```", r.error, "```"]
        if r.rows:
            lines += ["", "| result | value | goal | verdict |", "|---|---:|---|---|"]
            lines += [f"| {x.label} | {x.value:.4f} | {_goal(x)} | {_verdict(x)} |" for x in r.rows]
        if r.scalars:
            lines += ["", _other_metrics(r)]
        lines += ["", f"Parameters: {_parameters(r)}"]
        lines += [f"![{f.stem}]({f.relative_to(results) if f.is_relative_to(results) else f})" for f in r.figures]
    return "\n".join(lines) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.met { background: #d8f5d0; } .notmet { background: #f9d6d5; } .failed { color: #b00; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px 0; } code, pre { font-size: 0.85em; }
figure { display: inline-block; vertical-align: top; max-width: 49%; margin: 0.3em 0; }
figcaption { font-size: 0.8em; color: #666; }
"""


def _html(summary: dict[str, Any], reports: list[RunReport], env: dict[str, str], sha: dict[str, str]) -> str:
    e = html.escape
    title, intro = _title(summary)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1>",
        f"<p>{e(intro)}</p>",
        "<table><tr><th>run</th><th>status</th><th>seconds</th><th>goals met</th></tr>",
    ]
    for r in reports:
        status = f"<span class='failed'>{e(r.status)}</span>" if r.status == "failed" else e(r.status)
        parts.append(
            f"<tr><td><a href='#{e(r.run)}'>{e(r.run)}</a></td><td>{status}</td>"
            f"<td class='num'>{r.seconds:.1f}</td><td>{e(_met_count(r))}</td></tr>"
        )
    parts.append("</table><h2>Environment</h2><ul>")
    parts += [f"<li>{e(k)}: {e(v)}</li>" for k, v in env.items()]
    parts.append("</ul>")
    if sha:
        parts.append("<h2>Files used (sha256)</h2><ul>")
        parts += [f"<li><code>{e(path)}</code>: {e(digest)}</li>" for path, digest in sha.items()]
        parts.append("</ul>")
    for r in reports:
        parts.append(f"<h2 id='{e(r.run)}'>{e(r.run)}</h2><p>{e(r.status)}, {r.seconds:.1f} s</p>")
        if r.error:
            parts.append(f"<pre>{e(r.error)}</pre>")
        if r.rows:
            parts.append("<table><tr><th>result</th><th>value</th><th>goal</th><th>verdict</th></tr>")
            for x in r.rows:
                css = {True: " class='met'", False: " class='notmet'", None: ""}[x.met]
                parts.append(
                    f"<tr{css}><td>{e(x.label)}</td><td class='num'>{x.value:.4f}</td>"
                    f"<td>{e(_goal(x))}</td><td>{e(_verdict(x))}</td></tr>"
                )
            parts.append("</table>")
        if r.scalars:
            parts.append(f"<p>{e(_other_metrics(r))}</p>")
        for figure in r.figures:
            data = base64.b64encode(figure.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{e(figure.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(figure.name)}</figcaption></figure>"
            )
        parts.append(f"<details><summary>parameters</summary><p><code>{e(_parameters(r))}</code></p></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(results: str | Path, summary_name: str = "summary") -> Path:
    """Writes report.html, report.md and report.json into ``results`` from its summary.json (``summary_X.json``
    gives ``report_X.*``); returns the HTML path."""
    results = Path(results)
    summary, reports = collect(results, summary_name)
    name = summary_name.replace("summary", "report", 1)
    env, sha = environment(), fingerprints(summary["notebooks"])
    write_text(results / f"{name}.md", _markdown(summary, reports, env, sha, results))
    write_json(
        results / f"{name}.json",
        {
            "profile": summary["profile"],
            "smoke": summary.get("smoke", False),
            "environment": env,
            "files": sha,
            "runs": [
                {
                    "run": r.run,
                    "status": r.status,
                    "seconds": r.seconds,
                    "rows": [{**asdict(x), "met": x.met} for x in r.rows],
                }
                for r in reports
            ],
        },
    )
    path = results / f"{name}.html"
    write_text(path, _html(summary, reports, env, sha))
    return path


if __name__ == "__main__":
    print(write_report(sys.argv[1] if len(sys.argv) > 1 else resolve("results")))
