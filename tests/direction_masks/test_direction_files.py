"""The released bg_direction.pth format and the check of the generator and shift space it was found for."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.direction_masks.direction_files import check_shift_space, load_direction, save_direction


def test_direction_file_round_trip_and_errors(tmp_path):
    h = torch.randn(16)
    path = save_direction(tmp_path / "bg_direction.pth", h)
    assert torch.load(path, weights_only=True).shape == (1, 16)
    assert torch.equal(load_direction(path, 16), h)
    torch.save(h, tmp_path / "flat.pth")  # a plain [dim_z] tensor is accepted too
    assert torch.equal(load_direction(tmp_path / "flat.pth"), h)
    with pytest.raises(ValueError, match="dim_z = 60"):
        load_direction(path, 60)
    torch.save({"h": h}, tmp_path / "dict.pth")
    with pytest.raises(ValueError, match="dict.pth should hold one direction"):
        load_direction(tmp_path / "dict.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="broken.pth is not a readable"):
        load_direction(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_direction(tmp_path / "missing.pth")


def test_a_direction_is_refused_for_another_generator_or_shift_space(tmp_path):
    path = save_direction(tmp_path / "bg_direction.pth", torch.randn(16))
    check_shift_space(path, "default-biggan", "z")  # a released file has no record: taken as it is
    (tmp_path / "ranking.json").write_text(json.dumps({"generator": "default-stylegan2", "shift_space": "w:32"}))
    check_shift_space(path, "default-stylegan2", "w:32")
    with pytest.raises(ValueError, match="shift_space 'w:32' \\(asked for 'z'\\)"):
        check_shift_space(path, "default-stylegan2", "z")
    with pytest.raises(ValueError, match="generator 'default-stylegan2'"):
        check_shift_space(path, "default-biggan", "w:32")
    (tmp_path / "ranking.json").write_text(json.dumps({"magnitude": 5.0}))  # written before shift spaces: z
    check_shift_space(path, "default-biggan", "z")
    with pytest.raises(ValueError, match="shift_space 'z'"):
        check_shift_space(path, "default-stylegan2", "w")
