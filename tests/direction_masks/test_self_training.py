"""Self-training pairs (helpers.direction_masks.self_training): a teacher's masks of fresh generated images, through
the mask filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers.direction_masks.self_training import TeacherPairs
from helpers.direction_masks.synthesis import MaskRules
from helpers.gans import load, to_uint8


class SquareTeacher(nn.Module):
    """Predicts foreground exactly on the square [lo, hi) x [lo, hi), whatever the image."""

    def __init__(self, lo: int, hi: int):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.offset = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        logits = torch.zeros(len(x), 2, *x.shape[-2:])
        logits[:, 0] = 5.0
        logits[:, :, self.lo : self.hi, self.lo : self.hi] = torch.tensor([0.0, 5.0])[:, None, None]
        return logits + self.offset


@pytest.fixture(scope="module")
def G():
    return load("default-biggan")


def test_pairs_are_the_teachers_masks_of_the_generators_images(G):
    teacher = SquareTeacher(20, 40)
    pairs = TeacherPairs(G, teacher, MaskRules(), seed=3, draw=8)
    shard = pairs.shard(0, 6)
    assert shard["images"].shape == (6, 64, 64, 3) and shard["masks"].shape == (6, 64, 64)
    square = np.zeros((64, 64), np.uint8)
    square[20:40, 20:40] = 1
    assert (shard["masks"] == square).all()
    with torch.no_grad():
        again = to_uint8(G.render(torch.from_numpy(shard["z"]), [0] * 6))
    assert np.abs(again.astype(int) - shard["images"].astype(int)).max() <= 1  # batch rounding only
    # the teacher saw the stored uint8 images, as it saw its training pairs
    seen = torch.cat(teacher.seen)[:6]
    assert torch.equal(seen, torch.from_numpy(shard["images"]).permute(0, 3, 1, 2).float().div(255) * 2 - 1)
    assert pairs.n_kept == 8 and pairs.n_generated == 8


def test_shards_repeat_and_differ_by_index(G):
    pairs = TeacherPairs(G, SquareTeacher(20, 40), MaskRules(), seed=3, draw=8)
    first, again, other = pairs.shard(1, 4), pairs.shard(1, 4), pairs.shard(2, 4)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["z"], other["z"])


def test_filters_apply_to_the_teachers_masks(G):
    on_frame = SquareTeacher(0, 30)  # covers 59 of the 252 frame pixels
    kept = TeacherPairs(G, on_frame, MaskRules(max_border=0.25), draw=4).shard(0, 4)
    assert kept["masks"][:, 0, :30].all()
    starved = TeacherPairs(G, on_frame, MaskRules(max_border=0.2), draw=4, max_tries=2)
    with pytest.raises(RuntimeError, match="self-training kept 0 of the 4 pairs needed after 8 generated images"):
        starved.shard(0, 4)
    too_big = TeacherPairs(G, SquareTeacher(0, 64), MaskRules(), draw=4, max_tries=1)  # the area filter
    with pytest.raises(RuntimeError, match="kept 0"):
        too_big.shard(0, 4)
    with pytest.raises(ValueError, match="eval mode"):
        TeacherPairs(load("default-biggan").train(), on_frame)


class RedTeacher(nn.Module):
    """Foreground where the red channel is positive: masks that differ from image to image."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(x[:, 0]), 10 * x[:, 0]], 1) + self.offset


def test_a_shard_stops_at_the_latent_that_completes_it(G):
    """Draws are labelled in parts of one teacher batch; the shard is the first n survivors of whole draws."""
    pairs = TeacherPairs(G, RedTeacher(), MaskRules(), seed=5, draw=256)
    n = 40
    shard = pairs.shard(0, n)
    gen = torch.Generator().manual_seed(5 * 1_000_003)
    z = torch.randn(256, G.dim_z, generator=gen)
    whole = pairs.label(z, torch.randint(2**31, (256,), generator=gen).tolist())
    keep = whole.keep
    assert keep.sum() >= n and not keep.all()  # one draw completes the shard, with masks the filters refused
    assert np.array_equal(shard["z"], z[keep][:n].numpy())
    assert np.array_equal(shard["masks"], whole.masks[keep][:n].byte().numpy())
    assert np.array_equal(shard["images"], to_uint8(whole.images[keep][:n]))
    assert pairs.n_generated < 256 and pairs.n_generated % 64 == 0
