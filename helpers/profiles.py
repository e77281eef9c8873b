"""Profiles: named parameter sets that the runner applies to the notebooks (``notebooks/profiles/<name>.yml``).

A profile file has up to two sections, ``parameters`` and ``smoke``, each keyed by ``all`` (every notebook that
declares the name) or by a notebook's name without ``.ipynb``::

    parameters:
      all: {SEED: 0}
      04_unsupervised_segmentation: {UNET_WIDTH: 64}   # where the value comes from
    smoke:                                             # with --smoke: tiny sizes that keep this profile's paths
      04_unsupervised_segmentation: {MIN_CONSISTENCY: 0.0}

A notebook runs with its own defaults, overridden in turn by the profile's ``parameters``, and with ``--smoke`` by
the shared tiny sizes of the ``smoke`` profile and then by the profile's own ``smoke`` section. Names a notebook
does not declare are not passed to it; a name that no notebook declares, or a section for a notebook that does not
exist, is refused with the file and the name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.core.paths import notebooks_dir, resolve

SMOKE = "smoke"  # the profile of the shared tiny sizes, used by the tests and by --smoke
SECTIONS = ("parameters", "smoke")
ALL = "all"


def profiles_dir() -> Path:
    """Where named profiles live."""
    return notebooks_dir() / "profiles"


def available() -> list[str]:
    """The names of the profiles in `profiles_dir`."""
    return sorted(p.stem for p in profiles_dir().glob("*.yml"))


@dataclass(frozen=True)
class Profile:
    """A parsed profile file: per section, the values for all notebooks and for each named one."""

    name: str
    path: Path
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    smoke: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values(self, notebook: str, section: str = "parameters") -> dict[str, Any]:
        """The section's values for a notebook (its name without .ipynb): ``all`` first, then its own."""
        entries = getattr(self, section)
        return {**entries.get(ALL, {}), **entries.get(notebook, {})}

    def check(self, declared: dict[str, set[str]]) -> None:
        """Refuses sections for unknown notebooks and names no targeted notebook declares.

        ``declared`` maps each notebook's name (without .ipynb) to the parameter names it declares.
        """
        everywhere = set().union(*declared.values()) if declared else set()
        problems = []
        for section in SECTIONS:
            for key, values in getattr(self, section).items():
                if key != ALL and key not in declared:
                    problems.append(f"{section}.{key}: no such notebook (known: {', '.join(sorted(declared))})")
                    continue
                known = everywhere if key == ALL else declared[key]
                problems += [
                    f"{section}.{key}.{name}: not a parameter of {'any notebook' if key == ALL else key}"
                    for name in values
                    if name not in known
                ]
        if problems:
            raise ValueError(f"{self.path}: " + "; ".join(problems))


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """The profile of that name in `profiles_dir`, or the YAML file at that path (relative: repository root)."""
    path = resolve(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = profiles_dir() / f"{name_or_path}.yml"
        if not path.exists():
            raise FileNotFoundError(
                f"no profile {str(name_or_path)!r} in {profiles_dir()}; available: {', '.join(available())}"
            )
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict) or set(content) - set(SECTIONS):
        raise ValueError(
            f"{path}: a profile is a mapping with the sections {' and '.join(SECTIONS)}; "
            f"found {sorted(content) if isinstance(content, dict) else type(content).__name__}"
        )
    sections = {}
    for section in SECTIONS:
        entries = content.get(section) or {}
        bad = [k for k, v in entries.items() if not isinstance(v, dict)] if isinstance(entries, dict) else [section]
        if bad:
            raise ValueError(
                f"{path}: {section} must map 'all' or a notebook name to parameter values; not so for {bad}"
            )
        sections[section] = {str(k): dict(v) for k, v in entries.items()}
    return Profile(path.stem, path, **sections)


def notebook_parameters(notebook: str, profile: Profile | None, smoke: bool) -> dict[str, Any]:
    """What a profile, and ``smoke``, set for a notebook, in the order documented above."""
    values = profile.values(notebook) if profile else {}
    if smoke:
        values.update(load_profile(SMOKE).values(notebook))
        if profile:
            values.update(profile.values(notebook, "smoke"))
    return values


def smoke_parameters() -> dict[str, Any]:
    """The shared tiny sizes (the ``smoke`` profile's values for all notebooks), as the tests use them."""
    return load_profile(SMOKE).values(ALL)
