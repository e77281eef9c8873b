"""Profiles: named parameter sets that the runner applies to the notebooks (``notebooks/profiles/<name>.yml``).

A profile file has up to four sections. ``parameters`` and ``smoke`` are keyed by ``all`` (every notebook that
declares the name), by a notebook's name without ``.ipynb``, or by ``<notebook>@<variant>``::

    notebooks: ["03", "04"]                            # optional: the notebooks it runs (name prefixes)
    parameters:
      all: {SEED: 0}
      04_unsupervised_segmentation: {UNET_WIDTH: 64}   # where the value comes from
      04_unsupervised_segmentation@cub: {EMBEDDINGS: "{embeddings}/BigBiGAN_CUB_train_z.npy"}
    smoke:                                             # with --smoke: tiny sizes that keep this profile's paths
      04_unsupervised_segmentation: {MIN_CONSISTENCY: 0.0}
    reference_scores:                                  # optional: published numbers the summary prints beside ours
      ECSSD: {iou: 0.684, accuracy: 0.906, f_max: 0.797}

A notebook with variants runs once per variant (``results/<profile>/<notebook>@<variant>/``), each with its own
values over the notebook's. A run gets the notebook's defaults, overridden in turn by the profile's ``parameters``
(``all``, the notebook, the variant), and with ``--smoke`` by the shared tiny sizes of the ``smoke`` profile and
then by the profile's own ``smoke`` section. In text values ``{weights}``, ``{embeddings}``, ``{datasets}`` and
``{annotations}`` stand for those folders (`helpers.core.paths`; environment variables move them). Names a
notebook does not declare are not passed to it; a name that no notebook declares, or a section for a notebook that
does not exist, is refused with the file and the name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.core.paths import annotations_dir, datasets_dir, embeddings_dir, notebooks_dir, resolve, weights_dir

SMOKE = "smoke"  # the profile of the shared tiny sizes, used by the tests and by --smoke
SECTIONS = ("parameters", "smoke")
TOP_LEVEL = (*SECTIONS, "notebooks", "reference_scores")
ALL = "all"
SCORE_KEYS = ("iou", "accuracy", "f_max")
FOLDERS = {
    "weights": weights_dir,
    "embeddings": embeddings_dir,
    "datasets": datasets_dir,
    "annotations": annotations_dir,
}
PLACEHOLDER = re.compile(r"\{(" + "|".join(FOLDERS) + r")\}")


def profiles_dir() -> Path:
    """Where named profiles live."""
    return notebooks_dir() / "profiles"


def available() -> list[str]:
    """The names of the profiles in `profiles_dir`."""
    return sorted(p.stem for p in profiles_dir().glob("*.yml"))


def expand(value: Any) -> Any:
    """A text value with ``{weights}``, ``{embeddings}``, ``{datasets}``, ``{annotations}`` replaced by the folders."""
    if not isinstance(value, str):
        return value
    return PLACEHOLDER.sub(lambda m: str(FOLDERS[m.group(1)]()), value)


@dataclass(frozen=True)
class Profile:
    """A parsed profile file: per section, the values for all notebooks, each named one and each variant."""

    name: str
    path: Path
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    smoke: dict[str, dict[str, Any]] = field(default_factory=dict)
    notebooks: tuple[str, ...] = ()  # name prefixes of the notebooks it runs; empty: all
    reference_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def variants(self, notebook: str) -> list[str]:
        """The variants a notebook runs as, in file order (empty: it runs once)."""
        keys = [*self.parameters, *self.smoke]
        found = [k.partition("@")[2] for k in keys if k.partition("@")[0] == notebook and "@" in k]
        return list(dict.fromkeys(found))

    def values(self, notebook: str, section: str = "parameters", variant: str | None = None) -> dict[str, Any]:
        """The section's values for a notebook (its name without .ipynb): ``all``, its own, then its variant's."""
        entries = getattr(self, section)
        own = entries.get(f"{notebook}@{variant}", {}) if variant else {}
        return {**entries.get(ALL, {}), **entries.get(notebook, {}), **own}

    def check(self, declared: dict[str, set[str]]) -> None:
        """Refuses sections for unknown notebooks and names no targeted notebook declares.

        ``declared`` maps each notebook's name (without .ipynb) to the parameter names it declares.
        """
        everywhere = set().union(*declared.values()) if declared else set()
        problems = [
            f"notebooks: {prefix!r} matches no notebook"
            for prefix in self.notebooks
            if not any(name.startswith(prefix) for name in declared)
        ]
        for section in SECTIONS:
            for key, values in getattr(self, section).items():
                notebook = key.partition("@")[0]
                if key != ALL and notebook not in declared:
                    problems.append(f"{section}.{key}: no such notebook (known: {', '.join(sorted(declared))})")
                    continue
                known = everywhere if key == ALL else declared[notebook]
                problems += [
                    f"{section}.{key}.{name}: not a parameter of {'any notebook' if key == ALL else notebook}"
                    for name in values
                    if name not in known
                ]
        if problems:
            raise ValueError(f"{self.path}: " + "; ".join(problems))

    def runs_notebook(self, notebook: str) -> bool:
        """Whether the profile runs this notebook (by its ``notebooks`` list; all without one)."""
        return not self.notebooks or any(notebook.startswith(prefix) for prefix in self.notebooks)


def _mapping_section(path: Path, content: dict, section: str) -> dict[str, dict[str, Any]]:
    entries = content.get(section) or {}
    bad = [k for k, v in entries.items() if not isinstance(v, dict)] if isinstance(entries, dict) else [section]
    if bad:
        raise ValueError(f"{path}: {section} must map names to mappings of values; not so for {bad}")
    return {str(k): dict(v) for k, v in entries.items()}


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """The profile of that name in `profiles_dir`, or the YAML file at that path (relative: repository root)."""
    path = resolve(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = profiles_dir() / f"{name_or_path}.yml"
        if not path.exists():
            raise FileNotFoundError(
                f"no profile {str(name_or_path)!r} in {profiles_dir()}; available: {', '.join(available())}"
            )
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(content, dict) or set(content) - set(TOP_LEVEL):
        raise ValueError(
            f"{path}: a profile is a mapping with the sections {', '.join(TOP_LEVEL)}; "
            f"found {sorted(content) if isinstance(content, dict) else type(content).__name__}"
        )
    notebooks = content.get("notebooks") or []
    if not isinstance(notebooks, list):
        raise ValueError(f"{path}: notebooks must be a list of notebook name prefixes, got {notebooks!r}")
    scores = _mapping_section(path, content, "reference_scores")
    for benchmark, row in scores.items():
        if set(row) != set(SCORE_KEYS) or not all(isinstance(v, (int, float)) for v in row.values()):
            raise ValueError(f"{path}: reference_scores.{benchmark} must give numbers for {', '.join(SCORE_KEYS)}")
    return Profile(
        path.stem,
        path,
        **{section: _mapping_section(path, content, section) for section in SECTIONS},
        notebooks=tuple(str(n) for n in notebooks),
        reference_scores=scores,
    )


def notebook_parameters(
    notebook: str, profile: Profile | None, smoke: bool, variant: str | None = None
) -> dict[str, Any]:
    """What a profile, and ``smoke``, set for a notebook (or one of its variants), in the order documented above."""
    values = profile.values(notebook, variant=variant) if profile else {}
    if smoke:
        values.update(load_profile(SMOKE).values(notebook))
        if profile:
            values.update(profile.values(notebook, "smoke", variant))
    return {name: expand(value) for name, value in values.items()}


def smoke_parameters() -> dict[str, Any]:
    """The shared tiny sizes (the ``smoke`` profile's values for all notebooks), as the tests use them."""
    return load_profile(SMOKE).values(ALL)
