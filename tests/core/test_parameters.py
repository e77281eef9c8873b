"""helpers.core.parameters: every problem with a notebook's parameters in one message, before any work."""

import ast
import subprocess
import sys

import nbformat
import papermill
import pytest

from helpers.core.parameters import ParameterError, check_parameters, declared_parameters, parameter_problems
from helpers.core.paths import notebooks_dir
from helpers.profiles import available, load_profile, notebook_parameters

DEFAULTS = {"SEG_STEPS": 600, "SEG_BATCH": 32, "GENERATOR": "default-stylegan2", "SHIFT_R": 5.0, "SMOKE": False,
            "MIN_CONSISTENCY": 0.5, "SHIFT_SPACE": "w:64", "K_VALUES": [5, 10], "N_DIRECTIONS": 0,
            "SCORE_SPLIT": "test"}  # fmt: skip


def test_the_defaults_pass_and_ints_stand_for_floats():
    assert parameter_problems(DEFAULTS, DEFAULTS) == []
    assert parameter_problems({**DEFAULTS, "SHIFT_R": 5, "SHIFT_SPACE": "z", "K_VALUES": [2]}, DEFAULTS) == []


def test_every_problem_is_listed_with_the_value_and_the_rule():
    values = {
        **DEFAULTS,
        "SEG_STEPS": -5,
        "SEG_BATCH": "abc",
        "GENERATOR": 5,
        "SHIFT_R": float("nan"),
        "SMOKE": 1,
        "MIN_CONSISTENCY": 1.5,
        "SHIFT_SPACE": "w64",
        "N_DIRECTIONS": -1,
        "SCORE_SPLIT": "train",
        "SEG_STEP": 1,
    }
    assert parameter_problems(values, DEFAULTS) == [
        "SEG_STEP: not a parameter of this notebook (did you mean SEG_STEPS?)",
        "SEG_STEPS = -5: must be at least 1",
        "SEG_BATCH = 'abc': must be a int like its default 32",
        "GENERATOR = 5: must be a str like its default 'default-stylegan2'",
        "SHIFT_R = nan: must be a float like its default 5.0",
        "SMOKE = 1: must be a bool like its default False",
        "MIN_CONSISTENCY = 1.5: must lie in [0, 1]",
        'SHIFT_SPACE = \'w64\': must be "z", "w" or "w:R" (R a resolution)',
        "N_DIRECTIONS = -1: must not be negative",
        "SCORE_SPLIT = 'train': must be one of ['test', 'val']",
    ]
    assert parameter_problems({**DEFAULTS, "SEG_STEPS": 2.5}, DEFAULTS) == [
        "SEG_STEPS = 2.5: must be a int like its default 600"
    ]


@pytest.mark.parametrize("path", sorted(notebooks_dir().rglob("*.ipynb")), ids=lambda p: p.stem)
def test_declared_parameters_are_papermills_reading_of_the_cell(path):
    expected = {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(path)).items()}
    assert declared_parameters(path) == expected and expected


def test_the_kernel_side_check_does_not_import_nbformat():
    """nbformat's schema validation costs each notebook about two seconds of imports before its first cell runs."""
    code = (
        "import sys, helpers.core.parameters; print(sorted({'nbformat', 'papermill', 'jsonschema'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_lower_case_parameter_is_named_unless_the_notebook_binds_that_name():
    """`papermill -p seg_steps 1` is a typo; `device`, which notebook 04 assigns itself, is not (rerun top cells)."""
    path = notebooks_dir() / "04_unsupervised_segmentation.ipynb"
    after_a_run = {**declared_parameters(path), "device": "cpu", "embeddings": None}
    check_parameters(after_a_run, "04_unsupervised_segmentation")
    with pytest.raises(ParameterError, match=r"seg_steps: not a parameter .*upper case: SEG_STEPS"):
        check_parameters({**after_a_run, "seg_steps": 1}, "04_unsupervised_segmentation")


def test_every_notebook_checks_its_parameters_first_and_its_defaults_pass():
    for path in [*sorted(notebooks_dir().glob("[0-9]*.ipynb")), notebooks_dir() / "training/train_default_gans.ipynb"]:
        name = str(path.relative_to(notebooks_dir()).with_suffix(""))
        check_parameters(declared_parameters(path), name)
        first_after_parameters = nbformat.read(path, as_version=4).cells[2].source
        assert f'check_parameters(globals(), "{name}")' in first_after_parameters, name


@pytest.mark.notebooks
def test_a_notebook_stops_at_its_parameters(tmp_path):
    """Bad values and a typo'd name fail in the cell after the parameters, with one message and no work done."""
    out = tmp_path / "out"
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(
            str(notebooks_dir() / "04_unsupervised_segmentation.ipynb"),
            str(tmp_path / "executed.ipynb"),
            parameters={"OUT_DIR": str(out), "SEG_STEPS": -5, "SEG_BATCH": "abc", "GENERATOR": 5, "SEG_STEP": 1},
            cwd=str(notebooks_dir()),
            kernel_name="python3",
            progress_bar=False,
        )
    message = str(caught.value)
    assert "ParameterError" in message and "4 problem(s) with the parameters of 04_unsupervised_segmentation" in message
    assert "SEG_STEP: not a parameter of this notebook (did you mean SEG_STEPS" in message
    assert not out.exists()
    with pytest.raises(ParameterError, match="1 problem"):
        check_parameters({"GPUS": 0}, "04_unsupervised_segmentation")


@pytest.mark.parametrize("name", available())
def test_every_profile_sets_values_its_notebooks_accept(name):
    profile = load_profile(name)
    for path in sorted(notebooks_dir().glob("[0-9]*.ipynb")):
        defaults = declared_parameters(path)
        for variant in profile.variants(path.stem) or [None]:
            for smoke in (False, True):
                values = notebook_parameters(path.stem, profile, smoke, variant)
                values = {k: v for k, v in values.items() if k in defaults}
                assert parameter_problems({**defaults, **values}, defaults) == [], (name, path.stem, variant, smoke)
