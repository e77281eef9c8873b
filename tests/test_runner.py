import json
import os
import subprocess
import sys

import nbformat
import pytest

from helpers.runner import NotebookFailed, list_notebooks, main, run_all


def _notebook(path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    (nbs / "profiles").mkdir(parents=True)
    (nbs / "profiles" / "smoke.yml").write_text("parameters:\n  all: {SMOKE: true, N: 3}\n")
    monkeypatch.setattr("helpers.profiles.notebooks_dir", lambda: nbs)
    write_metrics = (
        "import json, pathlib\n"
        "out = pathlib.Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'n': N, 'smoke': SMOKE}))"
    )
    _notebook(nbs / "01_first.ipynb", "SMOKE = False\nN = 10\nOUT_DIR = 'x'", write_metrics)
    _notebook(nbs / "02_second.ipynb", "OUT_DIR = 'y'\nLIMIT = 1", "assert LIMIT == 1")
    return nbs


def test_runs_in_order_with_declared_smoke_parameters(folder, tmp_path):
    results = tmp_path / "results"
    runs = run_all(results, smoke=True, folder=folder)
    assert [r.notebook for r in runs] == ["01_first.ipynb", "02_second.ipynb"]
    assert runs[0].metrics == {"n": 3, "smoke": True}
    assert runs[0].overrides == {"SMOKE": True, "N": 3, "OUT_DIR": str(results / "01_first")}
    assert runs[1].overrides == {"OUT_DIR": str(results / "02_second")}  # undeclared names are not passed
    # every parameter a notebook ran with is recorded beside its outputs: defaults, then what was passed
    assert runs[1].parameters == {"OUT_DIR": str(results / "02_second"), "LIMIT": 1}
    assert json.loads((results / "02_second" / "parameters.json").read_text()) == runs[1].parameters
    summary = json.loads((results / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["passed", "passed"]
    assert "| 01_first | passed |" in (results / "summary.md").read_text()
    assert (results / "executed" / "02_second.ipynb").exists()
    # seconds per code cell (the injected parameters cell included), and the slowest in the summary
    cells = summary["notebooks"][1]["cells"]
    assert [c["first_line"] for c in cells][-1] == "assert LIMIT == 1" and all(c["seconds"] >= 0 for c in cells)
    assert "slowest cells: " in (results / "summary.md").read_text()


def test_a_slow_cell_is_timed(folder, tmp_path):
    from helpers.runner import run_notebook

    _notebook(folder / "03_slow.ipynb", "OUT_DIR = 'z'", "import time\ntime.sleep(1.5)")
    run = run_notebook(folder / "03_slow.ipynb", tmp_path, {})
    slow = max(run.cells, key=lambda c: c["seconds"])
    assert slow["first_line"] == "import time" and 1.5 <= slow["seconds"] < 10


def test_kernels_get_the_malloc_tunables_unless_the_caller_set_some(folder, tmp_path, monkeypatch):
    from helpers.runner import MALLOC_TUNABLES, run_notebook

    body = (
        "import json, os, pathlib\n"
        "out = pathlib.Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'tunables': os.environ.get('GLIBC_TUNABLES')}))"
    )
    _notebook(folder / "03_env.ipynb", "OUT_DIR = 'z'", body)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert run_notebook(folder / "03_env.ipynb", tmp_path / "a", {}).metrics == {"tunables": MALLOC_TUNABLES}
    assert "GLIBC_TUNABLES" not in os.environ  # the runner's own environment is left as it was
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert run_notebook(folder / "03_env.ipynb", tmp_path / "b", {}).metrics == {"tunables": "glibc.malloc.hugetlb=0"}


def test_the_malloc_tunables_spare_the_page_faults_of_large_tensors():
    """20 rounds of two 16 MB tensors touch about 156,000 pages; blocks kept in the heap fault once, if at all.
    glibc ignores a misspelt tunable silently, so this also checks the spelling."""
    from helpers.runner import MALLOC_TUNABLES

    code = (
        "import resource, torch\n"
        "x = torch.ones(4_000_000) * 2; del x\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20):\n"
        "    x = torch.ones(4_000_000); y = x * 2; del x, y\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"
    )
    env = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    faults = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(faults) < 2000


def test_full_run_uses_notebook_defaults(folder, tmp_path):
    runs = run_all(tmp_path / "r", smoke=False, folder=folder, only=["01"])
    assert [r.notebook for r in runs] == ["01_first.ipynb"] and runs[0].metrics == {"n": 10, "smoke": False}


def test_failure_names_notebook_and_cell(folder, tmp_path):
    _notebook(folder / "03_broken.ipynb", "OUT_DIR = 'z'", "x = 1\nraise ValueError('bad mask shape')")
    results = tmp_path / "results"
    with pytest.raises(
        NotebookFailed, match=r"03_broken\.ipynb failed in cell 2 \('x = 1'\): ValueError: bad mask shape"
    ):
        run_all(results, smoke=True, folder=folder)
    summary = json.loads((results / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["passed", "passed", "failed"]


def test_a_cell_past_the_timeout_fails_its_notebook_and_the_summary_says_so(folder, tmp_path):
    _notebook(folder / "03_slow.ipynb", "OUT_DIR = 'z'", "import time\ntime.sleep(30)")
    results = tmp_path / "results"
    with pytest.raises(NotebookFailed, match=r"03_slow\.ipynb failed: CellTimeoutError"):
        run_all(results, smoke=True, folder=folder, only=["03"], timeout=2)
    summary = json.loads((results / "summary.json").read_text())
    assert [(n["notebook"], n["status"]) for n in summary["notebooks"]] == [("03_slow.ipynb", "failed")]
    assert "timed out" in summary["notebooks"][0]["error"] and summary["notebooks"][0]["seconds"] < 25


def test_main_exit_code(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("helpers.runner.notebooks_dir", lambda: folder)
    assert main(["--smoke", "--results", str(tmp_path / "ok")]) == 0
    _notebook(folder / "03_broken.ipynb", "OUT_DIR = 'z'", "1 / 0")
    assert main(["--smoke", "--results", str(tmp_path / "bad")]) == 1
    assert "03_broken.ipynb failed in cell 2 ('1 / 0'): ZeroDivisionError" in capsys.readouterr().err


def test_unknown_only_prefix(folder, tmp_path):
    with pytest.raises(ValueError, match="no notebook matches"):
        run_all(tmp_path, folder=folder, only=["99"])


def test_named_notebooks_run_instead_of_the_numbered_ones(folder, tmp_path, monkeypatch):
    extra = folder / "training"
    extra.mkdir()
    _notebook(extra / "train.ipynb", "OUT_DIR = 't'\nSTEPS = 100", "assert STEPS == 100")
    assert [r.notebook for r in run_all(tmp_path / "a", folder=folder)] == ["01_first.ipynb", "02_second.ipynb"]
    runs = run_all(tmp_path / "b", notebooks=[extra / "train.ipynb"])
    assert [r.notebook for r in runs] == ["train.ipynb"] and runs[0].parameters["STEPS"] == 100
    with pytest.raises(FileNotFoundError, match="no such notebook: .*missing.ipynb"):
        run_all(tmp_path / "c", notebooks=[extra / "missing.ipynb"])
    monkeypatch.setattr("helpers.runner.notebooks_dir", lambda: folder)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "summary.md").write_text("the reproduction run's summary")
    assert main(["--results", str(tmp_path / "d"), "--notebook", str(extra / "train.ipynb")]) == 0
    assert json.loads((tmp_path / "d" / "train" / "parameters.json").read_text())["STEPS"] == 100
    assert (tmp_path / "d" / "summary_train.md").exists()  # beside, not over, the reproduction run's summary
    assert (tmp_path / "d" / "summary.md").read_text() == "the reproduction run's summary"


def test_a_parameters_cell_must_hold_literals(folder, tmp_path):
    _notebook(folder / "03_computed.ipynb", "OUT_DIR = 'z'\nN = len('abc')", "pass")
    with pytest.raises(ValueError, match="03_computed.ipynb: the parameters cell must assign literals only"):
        run_all(tmp_path, folder=folder, only=["03"])


def test_list_notebooks_ignores_non_numbered(folder):
    (folder / "scratch.ipynb").write_text("{}")
    assert [p.name for p in list_notebooks(folder)] == ["01_first.ipynb", "02_second.ipynb"]


def test_a_profile_sets_parameters_before_the_smoke_sizes(folder, tmp_path):
    (folder / "profiles" / "paper.yml").write_text(
        "parameters:\n  all: {N: 7}\n  02_second: {LIMIT: 1}\n"
        "smoke:\n  01_first: {SMOKE: false}\n"  # the profile's own smoke section comes last
    )
    runs = run_all(tmp_path / "full", folder=folder, profile="paper")
    assert runs[0].overrides["N"] == 7 and runs[0].metrics == {"n": 7, "smoke": False}
    runs = run_all(tmp_path / "smoke", folder=folder, profile="paper", smoke=True)
    assert runs[0].metrics == {"n": 3, "smoke": False}  # smoke sizes over the profile, its smoke section over both
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["profile"] == "paper" and summary["smoke"] is True
    assert "profile paper, smoke run" in (tmp_path / "smoke" / "summary.md").read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        ("parameters:\n  03_missing: {N: 1}\n", r"parameters\.03_missing: no such notebook"),
        ("parameters:\n  02_second: {N: 1}\n", r"parameters\.02_second\.N: not a parameter of 02_second"),
        ("smoke:\n  all: {NOPE: 1}\n", r"smoke\.all\.NOPE: not a parameter of any notebook"),
        ("parameters: [1, 2]\n", "parameters must map names to mappings"),
        ("other: {}\n", "the sections parameters, smoke, notebooks, reference_scores"),
        ("notebooks: ['09']\n", "notebooks: '09' matches no notebook"),
        ("parameters:\n  03_missing@a: {N: 1}\n", r"parameters\.03_missing@a: no such notebook"),
        ("reference_scores:\n  ECSSD: {iou: 0.5}\n", "ECSSD must give numbers for iou, accuracy, f_max"),
    ],
)
def test_a_bad_profile_is_refused_before_any_notebook_runs(folder, tmp_path, content, message):
    path = tmp_path / "bad.yml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        run_all(tmp_path / "r", folder=folder, profile=path)
    assert str(path) in str(err.value) and not (tmp_path / "r").exists()


def test_an_unknown_profile_name_lists_the_available_ones(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("helpers.runner.notebooks_dir", lambda: folder)
    assert main(["--profile", "nope", "--results", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "no profile 'nope'" in err and "available: smoke" in err


def test_a_failed_notebook_never_reports_an_earlier_runs_metrics(folder, tmp_path):
    results = tmp_path / "results"
    run_all(results, smoke=True, folder=folder, only=["01"])
    assert (results / "01_first" / "metrics.json").exists()
    _notebook(
        folder / "01_first.ipynb", "SMOKE = False\nN = 1\nOUT_DIR = 'x'", "raise RuntimeError('broken before writing')"
    )
    with pytest.raises(NotebookFailed, match="broken before writing"):
        run_all(results, smoke=True, folder=folder, only=["01"])
    summary = json.loads((results / "summary.json").read_text())
    assert summary["notebooks"][0]["status"] == "failed" and summary["notebooks"][0]["metrics"] == {}


def test_variants_run_once_each_with_their_own_values_and_folders(folder, tmp_path):
    (folder / "profiles" / "two.yml").write_text(
        "notebooks: ['01']\n"
        "parameters:\n  01_first: {N: 5}\n  01_first@a: {SMOKE: true}\n  01_first@b: {N: 6}\n"
        "reference_scores:\n  ECSSD: {iou: 0.684, accuracy: 0.906, f_max: 0.797}\n"
    )
    runs = run_all(tmp_path / "r", folder=folder, profile="two")
    assert [r.run for r in runs] == ["01_first@a", "01_first@b"]  # the profile's list leaves 02 out
    assert [r.metrics for r in runs] == [{"n": 5, "smoke": True}, {"n": 6, "smoke": False}]
    assert runs[1].out_dir == str(tmp_path / "r" / "01_first@b") and (tmp_path / "r/executed/01_first@a.ipynb").exists()
    summary = (tmp_path / "r" / "summary.md").read_text()
    # a reference benchmark that no run scored still gets its row, with the reference's numbers
    assert "| ECSSD |  | not in this run | – | – | – | 0.684 | 0.906 | 0.797 |" in summary
    assert [r.run for r in run_all(tmp_path / "o", folder=folder, profile="two", only=["02"])] == ["02_second"]


def test_placeholders_stand_for_the_project_folders(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("GANSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    _notebook(folder / "03_path.ipynb", "OUT_DIR = 'z'\nPATH = ''", "import json, pathlib\nprint(PATH)")
    (folder / "profiles" / "p.yml").write_text("parameters:\n  03_path: {PATH: '{weights}/x.pth'}\n")
    runs = run_all(tmp_path / "r", folder=folder, profile="p", only=["03"])
    assert runs[0].overrides["PATH"] == str(tmp_path / "w" / "x.pth")


def test_check_lists_what_is_missing_and_runs_nothing(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("helpers.runner.notebooks_dir", lambda: folder)
    monkeypatch.setenv("GANSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    _notebook(folder / "03_gan.ipynb", "OUT_DIR = 'z'\nGENERATOR = 'bigbigan'", "raise RuntimeError('ran')")
    assert main(["--results", str(tmp_path / "r"), "--only", "03", "--check"]) == 1
    printed = capsys.readouterr()
    assert "[MISSING] asset bigbigan" in printed.out and "bash download_all.sh --only bigbigan" in printed.out
    assert "preflight found something required missing" in printed.err and not (tmp_path / "r").exists()
    assert main(["--results", str(tmp_path / "r"), "--only", "01", "--check"]) == 0
    assert not (tmp_path / "r" / "executed").exists()
