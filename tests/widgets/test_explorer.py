"""The live direction explorer (helpers.widgets.explorer)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.core.io import save_torch, write_json
from helpers.direction_masks.direction_files import load_direction
from helpers.widgets.explorer import DirectionExplorer


def test_explorer_updates_tiles_in_place(toy_generator):
    G = toy_generator
    explorer = DirectionExplorer(G, {"light": torch.eye(4)[0], "stripes": torch.eye(4)[1]}, magnitude=0.0, scale=2)
    still = explorer.render()
    assert not still["mask"].any()  # no shift: nothing got brighter
    tile = explorer.tiles["mask"]
    before = tile.value
    views = explorer.set(magnitude=4.0)
    assert tile is explorer.tiles["mask"] and tile.value != before
    assert (views["mask"] > 0).mean() == pytest.approx(G.disc.mean().item(), abs=0.01)
    shown = tile.value
    explorer.magnitude.value = -4.0  # the slider itself triggers the update
    assert tile.value != shown
    assert explorer.render()["mask"].sum() == (255 * (1 - G.disc)).sum().item()
    with pytest.raises(KeyError, match="unknown direction"):
        explorer.set(direction="nope")


def test_explorer_reaches_every_candidate_and_saves_the_one_on_screen(toy_generator, tmp_path):
    """All of candidates.pt in the dropdown; the button writes the direction oriented by the slider's sign."""
    G = toy_generator
    names = [f"discovered {k}" for k in range(6)]
    save_torch({"names": names, "directions": torch.eye(6, 4)}, tmp_path / "candidates.pt")
    ranked = [{"name": "discovered 0", "sign": 1.0}, {"name": "discovered 5", "sign": -1.0, "consistency": 0.5}]
    write_json(tmp_path / "ranking.json", {"chosen": ranked[0], "ranking": ranked})
    explorer = DirectionExplorer.from_candidates(G, tmp_path / "candidates.pt", save_to=tmp_path / "bg_direction.pth")
    assert [value for _, value in explorer.direction.options] == names
    assert explorer.direction.options[0][0] == "1. discovered 0"
    explorer.set(direction="discovered 5", magnitude=-3.0)  # beyond a top-4 list
    explorer.save_button.click()
    assert torch.equal(load_direction(tmp_path / "bg_direction.pth", 4), -torch.eye(6, 4)[5])
    assert "saved −discovered 5" in explorer.status.value
    chosen = json.loads((tmp_path / "ranking.json").read_text())["chosen"]
    # the file is -1 x (-1 x raw candidate): sign +1 on the raw candidate; the ranked orientation's scores dropped
    assert chosen == {"name": "discovered 5", "sign": 1.0, "chosen_by": "direction explorer"}
    explorer.set(magnitude=2.0)
    explorer.save()
    chosen = json.loads((tmp_path / "ranking.json").read_text())["chosen"]
    assert chosen == {**ranked[1], "chosen_by": "direction explorer"}
    explorer.set(magnitude=-3.0)
    explorer.save()
    explorer.set(magnitude=0.0)
    explorer.save_button.click()
    assert "not saved" in explorer.status.value and "r is 0" in explorer.status.value
    assert torch.equal(load_direction(tmp_path / "bg_direction.pth", 4), -torch.eye(6, 4)[5])
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="broken.pt cannot be read as a candidates file"):
        DirectionExplorer.from_candidates(G, tmp_path / "broken.pt")


def test_explorer_has_a_mask_legend_and_a_wide_slider(toy_generator):
    explorer = DirectionExplorer(toy_generator, {"light": torch.eye(4)[0]})
    assert "white" in explorer.legend.value and "object" in explorer.legend.value
    assert int(explorer.magnitude.layout.width.removesuffix("px")) >= 400
    assert explorer.save_button not in explorer.widget.children[-1].children  # no save_to: no button
