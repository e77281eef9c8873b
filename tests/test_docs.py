"""Every document the project cites is in the repository: links and anchors in the docs, the code and the
notebooks resolve, and nothing cites a document the repository does not hold."""

import importlib
import re
from pathlib import Path

import nbformat
import pytest

from helpers.core.paths import project_root

ROOT = project_root()
CODE = sorted(
    p
    for folder in ["helpers", "tests", "benchmarks", "experiments", "scripts"]
    for p in (ROOT / folder).rglob("*")
    if p.suffix in {".py", ".sh"} and p.name != "test_docs.py"
)
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# "docs/page.md#anchor" in code and notebooks (method detail lives in docs/, never in the README)
CITATION = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md)(?:#([\w-]+))?")
# dotted names of the package's modules and attributes, e.g. helpers.core.runs.RunFolder
DOTTED = re.compile(r"(?<![\w/])helpers(?:\.\w+)+")
# links in Markdown: [text](target) and ![alt](target)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# citations of documents that are not part of the repository, or of no section at all
UNRESOLVABLE = re.compile(r"\bspec\b[\s,(]*§|\bthe spec\b|\(README\)|\(README,|\(see README\)", re.IGNORECASE)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lowercase, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def texts() -> list[tuple[str, str]]:
    """(where, text) for every code file and notebook cell."""
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in CODE]
    for nb in NOTEBOOKS:
        for i, cell in enumerate(nbformat.read(nb, as_version=4).cells):
            out.append((f"{nb.relative_to(ROOT)} cell {i + 1}", cell.source))
    return out


def check_target(path: Path, anchor: str | None) -> str | None:
    """Why a cited file (and anchor) does not resolve, or None."""
    if not path.exists():
        return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} does not exist"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"{path.name} has no section #{anchor}"
    return None


def test_the_slug_follows_github():
    assert slug(" Departures from the reference code") == "departures-from-the-reference-code"
    assert slug("Notebook 05 · `fit` (beyond the paper)") == "notebook-05--fit-beyond-the-paper"


def test_code_and_notebooks_cite_existing_documents_and_sections():
    problems = []
    for where, text in texts():
        for match in CITATION.finditer(text):
            why = check_target(ROOT / match.group(1), match.group(2))
            if why:
                problems.append(f"{where}: {match.group(0)}: {why}")
    assert not problems, "\n".join(problems)


def test_nothing_cites_a_document_outside_the_repository():
    found = [f"{where}: {m.group(0)!r}" for where, text in texts() for m in UNRESOLVABLE.finditer(text)]
    assert not found, "cite docs/<page>.md#<section> instead:\n" + "\n".join(found)


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page):
    problems = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        why = check_target((page.parent / file).resolve() if file else page, anchor or None)
        if why:
            problems.append(f"{target}: {why}")
    assert not problems, f"{page.name}:\n" + "\n".join(problems)


def test_the_check_catches_a_missing_document_and_section(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n```\n# not a heading\n```\n")
    assert check_target(page, "a-section") is None
    assert "no section #not-a-heading" in check_target(page, "not-a-heading")
    assert "does not exist" in check_target(tmp_path / "missing.md", None)
    assert UNRESOLVABLE.search("key names (spec §1.7)") and UNRESOLVABLE.search("as measured (README)")
    assert UNRESOLVABLE.search("From the spec (§1.2, §2.3)") and not UNRESOLVABLE.search("find_spec(name)")


def _resolves(dotted: str) -> bool:
    """Whether ``helpers.a.b.c`` names a module, or an attribute reached from one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_dotted_helpers_name_in_code_docs_and_notebooks_exists():
    """Docstrings, docs and notebooks name modules and functions by their dotted path: a moved one is found."""
    sources = texts() + [(str(p.relative_to(ROOT)), p.read_text()) for p in MARKDOWN]
    found = {m.group(0): where for where, text in sources for m in DOTTED.finditer(text)}
    missing = [f"{where}: {name}" for name, where in sorted(found.items()) if not _resolves(name)]
    assert not missing, "\n".join(missing)
    assert not _resolves("helpers.segmentation.no_such_thing") and _resolves("helpers.core.runs.RunFolder.resume")
