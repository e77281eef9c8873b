"""Tests for helpers.report: headline rows against targets and the paper, the three files, and the HTML in a
real browser."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from helpers.core.io import save_figure
from helpers.report import Row, goals_markdown, headline_rows, write_report

METRICS = {
    "04_unsupervised_segmentation@cub": {
        "procedural_test": {},
        "benchmarks": {
            "CUB-200-2011": {"unsupervised (synthetic masks)": {"iou": 0.72, "accuracy": 0.93, "f_max": 0.8}}
        },
        "final": "unsupervised (synthetic masks)",
        "synthetic_kept_fraction": 0.5,
    },
    "05_semantic_projection": {
        "procedural_test": {"binary": {"iou": 0.862}, "class_iou": {"background": 0.97, "object": 0.7, "part": 0.02}},
        "annotations": {"n": 20},
        "synthetic_shards": "x",
    },
    "06_layermatch": {
        "layermatch_minus_random_iou": {"5": 0.08, "20": 0.04, "50": 0.01},
        "iou": {"random": {"5": {"mean": 0.3}}, "layermatch": {"5": {"mean": 0.38}}},
        "target_met": False,
    },
}


def figure(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    save_figure(fig, path)
    plt.close(fig)


@pytest.fixture
def results(tmp_path) -> Path:
    runs = []
    for name, metrics in METRICS.items():
        out = tmp_path / name
        figure(out / "scores.png")
        (out / "metrics.json").write_text(json.dumps(metrics))
        runs.append(
            {
                "notebook": name.split("@")[0] + ".ipynb",
                "run": name,
                "status": "passed",
                "seconds": 12.5,
                "executed": "",
                "out_dir": str(out),
                "parameters": {"SEED": 0, "GENERATOR": "default-biggan"},
                "overrides": {},
                "metrics": metrics,
                "error": "",
            }
        )
    runs.append({**runs[0], "run": "07_inspection", "status": "failed", "metrics": {}, "error": "cell 3: boom"})
    reference = {"iou": 0.710, "accuracy": 0.940, "f_max": 0.834}
    benchmarks = [{"benchmark": "CUB-200-2011", "run": runs[0]["run"], "status": "scored", "reference": reference}]
    summary = {"profile": "paper", "smoke": False, "device": "cpu", "notebooks": runs, "benchmarks": benchmarks}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_headlines_stand_beside_their_targets():
    rows = {r.label: r for r in headline_rows("05_semantic_projection", METRICS["05_semantic_projection"], {})}
    assert rows["procedural_test foreground IoU"] == Row("procedural_test foreground IoU", 0.862, 0.85, True, "target")
    assert rows["procedural_test foreground IoU"].met and rows["procedural_test part IoU"].met is None
    fewer = {**METRICS["05_semantic_projection"], "annotations": {"n": 5}}  # the target is for 20 annotations
    assert headline_rows("05_semantic_projection", fewer, {})[0].goal is None
    gains = headline_rows("06_layermatch", METRICS["06_layermatch"], {})
    assert [(r.label, r.met) for r in gains[:3]] == [
        ("LayerMatch − random IoU, k 5", True),
        ("LayerMatch − random IoU, k 20", False),
        ("LayerMatch − random IoU, k 50", None),
    ]
    paper = headline_rows("04_x", METRICS["04_unsupervised_segmentation@cub"], {"CUB-200-2011": {"iou": 0.71}})
    assert paper[0] == Row("CUB-200-2011 IoU", 0.72, 0.71, True, "paper") and paper[0].met
    assert Row("gap", 0.2, 0.15, False, "target").met is False


def test_the_report_holds_the_metrics_files_numbers(results):
    html = write_report(results).read_text()
    report = json.loads((results / "report.json").read_text())
    markdown = (results / "report.md").read_text()
    by_run = {run["run"]: {row["label"]: row for row in run["rows"]} for run in report["runs"]}
    for name, metrics in METRICS.items():
        on_disk = json.loads((results / name / "metrics.json").read_text())
        for row in by_run[name].values():
            assert f"| {row['label']} | {row['value']:.4f} |" in markdown
        assert on_disk == metrics
    assert by_run["05_semantic_projection"]["procedural_test foreground IoU"]["value"] == 0.862
    cub = by_run["04_unsupervised_segmentation@cub"]
    assert cub["CUB-200-2011 max-Fβ"] == {
        "label": "CUB-200-2011 max-Fβ",
        "value": 0.8,
        "goal": 0.834,
        "at_least": True,
        "source": "paper",
        "met": False,
    }
    assert "| 04_unsupervised_segmentation@cub | passed | 12.5 | 1 of 3 |" in markdown
    assert "| 07_inspection | failed | 12.5 | – |" in markdown and "cell 3: boom" in html
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html
    assert "![scores](05_semantic_projection/scores.png)" in markdown
    assert "default_biggan.pt" in markdown and report["files"]  # the generator's sha256


def test_the_html_opens_in_a_browser_with_every_figure(results, browser):
    path = write_report(results)
    browser.get(path.as_uri())
    images = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
    assert len(images) == 3 and all(complete and width > 0 for complete, width, _ in images)
    assert browser.title.startswith("Reproduction report: profile paper")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_goals_table_lists_only_rows_with_a_goal(results):
    table = goals_markdown(results)
    assert "| 05_semantic_projection | procedural_test foreground IoU | 0.8620 | ≥ 0.8500 (target) | met |" in table
    assert "| 06_layermatch | LayerMatch − random IoU, k 20 | 0.0400 | ≥ 0.0500 (target) | not met |" in table
    assert "part IoU" not in table and "k 50" not in table
