"""The live direction explorer (helpers.widgets.explorer)."""

from __future__ import annotations

import pytest
import torch

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
