"""Shared fixtures: every test writes its dataset cache into a temporary folder."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GANSEG_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
