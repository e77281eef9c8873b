"""Notebook parameters, checked before any work: types, ranges, choices and unknown names, in one message.

A notebook declares its parameters as literals in the cell tagged ``parameters``; the next cell calls
`check_parameters`, which compares what the kernel holds (defaults, or the values papermill or a person set) with
those defaults: a value must have its default's type (an int where a float is expected is fine), names shared by
the notebooks have the ranges and choices of `RULES`, and an upper-case name the notebook does not declare (a typo
such as ``SEG_STEP``) is refused with the closest declared names.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helpers.core.paths import notebooks_dir


class ParameterError(ValueError):
    """A notebook's parameters are wrong; the message lists every problem."""


def _magic(line: str) -> bool:
    """A Jupyter magic or shell escape, which is not Python."""
    return line.lstrip().startswith(("%", "!"))


def _code_sources(notebook: Path) -> list[tuple[list[str], str]]:
    """(tags, source without magic lines) of each code cell, read as plain JSON: nbformat's schema validation
    costs every kernel about two seconds of imports, and the checks need the sources only."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    sources = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = source if isinstance(source, str) else "".join(source)
        lines = source.splitlines()
        sources.append(
            (cell.get("metadata", {}).get("tags", []), "\n".join(line for line in lines if not _magic(line)))
        )
    return sources


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The literal values assigned in the notebook's (first) cell tagged 'parameters', by name."""
    source = next((source for tags, source in _code_sources(notebook) if "parameters" in tags), "")
    found = {}
    try:
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets = [node.target]
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ast.literal_eval(node.value)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{notebook}: the parameters cell must assign literals only ({err})") from err
    return found


def assigned_names(notebook: Path) -> set[str]:
    """Every name the notebook's code cells bind (assignments, loops, imports, definitions): a lower-case name in
    the kernel that none of them binds came from outside, e.g. a mistyped ``papermill -p``."""
    names: set[str] = set()
    for _, source in _code_sources(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).partition(".")[0])
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must lie in [{low}, {high}]"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def matches(pattern: str, what: str) -> Callable[[Any], str | None]:
    return lambda v: None if re.fullmatch(pattern, v) else f"must be {what}"


POSITIVE = at_least(1)
RULES: dict[str, Callable[[Any], str | None]] = {
    **dict.fromkeys(
        [
            "GPUS",
            "IMAGE_SIZE",
            "N_TRAIN",
            "N_VAL",
            "N_TEST",
            "SEG_STEPS",
            "SEG_BATCH",
            "UNET_WIDTH",
            "LR_STEP",
            "DISCOVERY_STEPS",
            "DISCOVERY_BATCH",
            "PCA_COMPONENTS",
            "PCA_SAMPLES",
            "SCORE_LATENTS",
            "SCORE_STEPS",
            "CONSISTENCY_LATENTS",
            "TOP_K",
            "SELF_TRAINING_PAIRS",
            "DECODER_WIDTH",
            "DECODER_EPOCHS",
            "REFINER_MEMBERS",
            "N_SYNTHETIC",
            "SHARD_SIZE",
            "CURVE_SYNTHETIC",
            "CURVE_STEPS",
            "BACKBONE_WIDTH",
            "PRETRAIN_STEPS",
            "PRETRAIN_BATCH",
            "FINETUNE_STEPS",
            "FINETUNE_BATCH",
            "SYNTHETIC_STEPS",
            "EVAL_IMAGES",
            "BATCH_SIZE",
            "ENCODER_STEPS",
            "SWD_IMAGES",
            "SAMPLE_EVERY",
            "N_IMAGES",
            "N_COMPARE",
            "N_CASES",
            "GRID_ROWS",
            "STATS_IMAGES",
            "BENCHMARK_IMAGES",
            "N_RECONSTRUCTIONS",
            "N_OVERLAYS",
            "BIGGAN_STEPS",
            "STYLEGAN2_STEPS",
        ],
        POSITIVE,
    ),  # fmt: skip
    "REFINER_FOLDS": at_least(2),
    "MIN_CONSISTENCY": between(0, 1),
    "MAX_BORDER": between(0, 1),
    "CLASS_WEIGHT_POWER": at_least(0),
    "Z_NOISE": at_least(0),
    "DISCOVERY_LR": lambda v: None if v > 0 else "must be positive",
    "FINETUNE_LR": lambda v: None if v > 0 else "must be positive",
    "SHIFT_SPACE": matches(r"z|w|w:\d+", '"z", "w" or "w:R" (R a resolution)'),
    "DEFORMATOR": one_of("ortho", "linear", "proj"),
    "RANK_BY": one_of("consistency", "relative"),
    "SCORE_SPLIT": one_of("test", "val"),
    "MASK_RULE": one_of("lighting", "mean_thr"),
    "REFINE_MASKS": one_of("none", "grabcut"),
    "UNET_AUGMENT": one_of("none", "flip", "dihedral"),
    "ENCODER": one_of("auto", "default", "bigbigan"),
    "DEVICE": matches(r"auto|cpu|cuda(:\d+)?|mps", '"auto", "cpu", "cuda" or "cuda:N"'),
    "CURVE_COUNTS": matches(r"\s*\d+\s*(,\s*\d+\s*)*", "comma-separated integers"),
}


def _type_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` is declared (None when it can)."""
    if default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
    else:
        ok = isinstance(value, type(default))
    return None if ok else f"must be a {type(default).__name__} like its default {default!r}"


def parameter_problems(
    values: Mapping[str, Any], defaults: Mapping[str, Any], own_names: set[str] = frozenset()
) -> list[str]:
    """Every problem of ``values`` (the kernel's names) against the declared ``defaults``, one line each; a lower-case
    spelling of a parameter is one unless the notebook binds that name itself (``own_names``)."""
    problems = []
    for name in sorted(n for n in values if n.isupper() and n not in defaults):
        close = difflib.get_close_matches(name, defaults, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        problems.append(f"{name}: not a parameter of this notebook{hint}")
    for name in sorted(n for n in values if not n.isupper() and n.upper() in defaults and n not in own_names):
        problems.append(f"{name}: not a parameter of this notebook (parameters are upper case: {name.upper()})")
    for name, default in defaults.items():
        value = values.get(name, default)
        reason = _type_problem(value, default)
        if reason is None and isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            reason = None if name in RULES or isinstance(default, float) else "must not be negative"
        if reason is None and name in RULES and not isinstance(value, bool | list | tuple) and value is not None:
            reason = RULES[name](value)
        if reason:
            problems.append(f"{name} = {value!r}: {reason}")
    return problems


def check_parameters(namespace: Mapping[str, Any], notebook: str) -> None:
    """Raises ParameterError listing every problem of a notebook's parameters (``notebook``: its path under
    notebooks/ without ``.ipynb``); call it in the cell after the parameters cell, before any work."""
    path = notebooks_dir() / f"{notebook}.ipynb"
    problems = parameter_problems(namespace, declared_parameters(path), assigned_names(path))
    if problems:
        listing = "\n  ".join(problems)
        raise ParameterError(f"{len(problems)} problem(s) with the parameters of {notebook}:\n  {listing}")
