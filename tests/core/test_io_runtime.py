import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.core.io import atomic_path, save_torch, write_json
from helpers.core.paths import resolve
from helpers.core.runtime import pick_device, seed_everything, start_notebook


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "result.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(target.parent.iterdir())) == 1


def test_save_torch_is_byte_reproducible(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"steps": 3}}
    a, b = save_torch(obj, tmp_path / "a.pt"), save_torch(obj, tmp_path / "sub" / "b.pt")
    assert a.read_bytes() == b.read_bytes()  # same sha256 whatever the (temporary) file name
    assert torch.equal(torch.load(b, weights_only=True)["w"], obj["w"])
    assert not list(tmp_path.glob(".*.part"))


def test_write_json_converts_numpy(tmp_path):
    write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3), "p": tmp_path})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 0.5, "b": [0, 1, 2], "p": str(tmp_path)}


def test_pick_device():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


def test_seed_everything_repeats():
    seed_everything(7)
    a = (np.random.rand(), torch.rand(2))
    seed_everything(7)
    b = (np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_start_notebook_resolves_relative_out_dir_against_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSEG_ROOT", str(tmp_path))
    monkeypatch.chdir("/")
    out, device = start_notebook("results/x", 0, "cpu")
    assert out == tmp_path / "results" / "x" and out.is_dir() and device.type == "cpu"
    assert resolve("/abs/path") == resolve("/abs/path").absolute()


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_project_root_is_the_repository_from_any_working_directory(tmp_path, monkeypatch):
    from helpers.core.paths import project_root

    monkeypatch.delenv("GANSEG_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    root = project_root()
    assert (root / "pyproject.toml").exists() and (root / "helpers" / "core" / "paths.py").exists()
    assert resolve("weights") == root / "weights"


def test_helpers_is_this_repositorys_package():
    """`helpers` is a generic name (PyPI has an unrelated one): the import must resolve to this repository."""
    import helpers
    from helpers.core.paths import project_root

    assert Path(helpers.__file__).resolve().parent == project_root() / "helpers"
