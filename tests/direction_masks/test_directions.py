"""Direction discovery, PCA baseline, background scoring and the released direction format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers.direction_masks.direction_files import check_shift_space, load_direction, save_direction
from helpers.direction_masks.discovery import (
    Deformator,
    DirectionDiscovery,
    DiscoveryConfig,
    pca_directions,
    sample_shifts,
)
from helpers.direction_masks.label_fit import fit_direction
from helpers.direction_masks.ranking import choose, image_consistency, rank_directions, shift_strips, two_map_scores
from helpers.gans.base import Generator
from helpers.gans.biggan import BigGAN
from helpers.widgets.explorer import DirectionExplorer


class ToyGenerator(Generator):
    """16 px images of a disc on a background; z0 darkens the background and lightens the disc,
    z1 adds a stripe texture (not a recolouring), z2 and z3 set the base colours."""

    dim_z, resolution = 4, 16

    def __init__(self) -> None:
        super().__init__()
        self.config = {}
        self.anchor = nn.Parameter(torch.zeros(1))
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        self.register_buffer("disc", (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 12).float())
        self.register_buffer("stripes", torch.sin(xx * 1.7))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        colour = torch.stack([torch.tanh(z[:, 2]), torch.tanh(z[:, 3]), torch.tanh(z[:, 2] - z[:, 3])], 1) * 0.3
        base = colour[:, :, None, None] * (1 - self.disc) + 0.2 * self.disc
        light = 0.1 * z[:, 0, None, None, None] * (2 * self.disc - 1)
        texture = 0.1 * z[:, 1, None, None, None] * self.stripes
        return (base + light + texture).clamp(-1, 1) + 0 * self.anchor


def tiny_biggan() -> BigGAN:
    torch.manual_seed(0)
    return BigGAN(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[]).eval()


@pytest.mark.parametrize("kind", ["ortho", "linear", "proj"])
def test_deformator_starts_at_coordinate_axes(kind):
    deformator = Deformator(8, 5, kind)
    dirs = deformator.directions()
    assert dirs.shape == (5, 8)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(5))
    assert torch.allclose(dirs, torch.eye(8)[:5], atol=0.02)


def test_ortho_deformator_is_orthogonal_and_linear_in_the_shift():
    deformator = Deformator(6, kind="ortho", random_init=True)
    m = deformator.matrix()
    assert torch.allclose(m.T @ m, torch.eye(6), atol=1e-5)
    shift = torch.zeros(1, 6)
    shift[0, 2] = 3.0
    assert torch.allclose(deformator(shift)[0], 3.0 * m[:, 2], atol=1e-6)


def test_proj_deformator_keeps_the_shift_norm():
    deformator = Deformator(6, kind="proj", random_init=True)
    shift = torch.zeros(2, 6)
    shift[0, 1], shift[1, 4] = 2.5, -4.0
    assert torch.allclose(deformator(shift).norm(dim=1), torch.tensor([2.5, 4.0]), atol=1e-5)


def test_deformator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        Deformator(4, kind="fc")
    with pytest.raises(ValueError, match="at most"):
        Deformator(4, 5)


def test_shift_magnitudes_respect_scale_and_minimum():
    k, eps = sample_shifts(10_000, 7, 6.0, 0.5, torch.Generator().manual_seed(0))
    assert k.min() == 0 and k.max() == 6
    assert eps.abs().min() >= 0.5 and eps.abs().max() <= 6.0
    assert (eps > 0).float().mean().sub(0.5).abs() < 0.03


def test_discovery_trains_and_resumes_exactly(tmp_path):
    G = tiny_biggan()
    config = DiscoveryConfig(n_directions=4, batch_size=4, steps=4, lr=1e-3, reconstructor_width=4, checkpoint_every=2)
    straight = DirectionDiscovery(tmp_path / "a", G, config)
    assert straight.train(progress=False) == 4
    first = DirectionDiscovery(tmp_path / "b", G, config)
    assert first.train(steps=2, progress=False) == 2
    resumed = DirectionDiscovery(tmp_path / "b", G, config)
    assert resumed.step == 2
    assert resumed.train(progress=False) == 4
    assert torch.allclose(straight.directions(), resumed.directions(), atol=1e-6)
    assert not torch.allclose(straight.directions(), torch.eye(16)[:4], atol=1e-6)  # the deformator moved
    assert (tmp_path / "b" / "log.jsonl").exists()


def test_discovery_refuses_another_configuration(tmp_path):
    G = tiny_biggan()
    config = DiscoveryConfig(n_directions=4, batch_size=2, steps=1, reconstructor_width=4)
    DirectionDiscovery(tmp_path, G, config).train(progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        DirectionDiscovery(tmp_path, G, DiscoveryConfig(n_directions=5, batch_size=2, steps=1, reconstructor_width=4))


def test_pca_directions_are_unit_and_sorted():
    dirs, explained = pca_directions(tiny_biggan(), 5, n_samples=200, batch_size=100)
    assert dirs.shape == (5, 16)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(5), atol=1e-5)
    assert (explained[:-1] >= explained[1:]).all() and explained.sum() <= 1


def test_ranking_picks_the_recolouring_direction_and_orients_it():
    G = ToyGenerator()
    rows = rank_directions(G, torch.eye(4), 4.0, n_latents=16, train_steps=150)
    assert rows[0]["index"] == 0
    assert rows[0]["sign"] == 1.0 and rows[0]["contrast"] > 0.5
    assert abs(rows[0]["object_fraction"] - G.disc.mean().item()) < 0.02
    flipped = rank_directions(G, -torch.eye(4)[:1], 4.0, n_latents=16, train_steps=150)
    assert flipped[0]["sign"] == -1.0


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


def test_explorer_updates_tiles_in_place():
    G = ToyGenerator()
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


def test_scores_and_strips_of_a_noisy_generator_see_the_shift_alone(noisy_stylegan2):
    """With StyleGAN2's per-pixel noise, G(z) and G(z + h) must be drawn with the same noise."""
    G = noisy_stylegan2
    scores = two_map_scores(G, torch.zeros(2, G.dim_z), n_latents=8, train_steps=2, test_batches=1)
    assert (scores["change"] < 1e-4).all()
    strips = shift_strips(G, torch.zeros(G.dim_z), [-1.0, 0.0, 1.0], n_rows=2)
    rows = strips.reshape(2, 4, *strips.shape[1:])
    assert np.array_equal(rows[:, 0], rows[:, 2]) and (rows[:, 3] > 0).mean() < 0.01


def test_fitting_a_direction_to_object_masks_finds_the_lighting_axis():
    G = ToyGenerator()
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    masks = G.disc.bool().expand(64, -1, -1)
    h = fit_direction(G, z, masks, magnitude=4.0, steps=150, batch_size=16, progress=False)
    assert torch.isclose(h.norm(), torch.tensor(1.0))
    assert h[0] > 0.9  # z0 lightens the disc and darkens the background; z1 only adds stripes


def test_choose_takes_the_top_row_or_a_named_candidate():
    ranking = [{"name": "discovered 3"}, {"name": "pca 0"}]
    assert choose(ranking)["name"] == "discovered 3"
    assert choose(ranking, "pca 0")["name"] == "pca 0"
    with pytest.raises(KeyError, match="no candidate 'pca 9'; candidates: discovered 3, pca 0"):
        choose(ranking, "pca 9")


def test_consistency_ranking_prefers_masks_that_follow_the_image():
    G = ToyGenerator()
    consistency, kept = image_consistency(G, 4.0 * torch.eye(4), n_latents=16)
    assert consistency[0] > 0.9 and kept[0] > 0.5  # the disc: GrabCut keeps the mask
    assert consistency[1] < 0.6  # the stripes: masks of thin bands that the image's colours do not explain
    darker, _ = image_consistency(G, -4.0 * torch.eye(4), n_latents=16)
    assert (darker == 0).all()  # the background lightens (rejected by the area filter) or nothing does
    rows = rank_directions(G, torch.eye(4), 4.0, by="consistency", n_latents=16, train_steps=150)
    assert rows[0]["index"] == 0 and rows[0]["sign"] == 1.0
    assert all(rows[0]["consistency"] >= r["consistency"] for r in rows if r["plausible"])
    flipped = rank_directions(G, -torch.eye(4)[:1], 4.0, by="consistency", n_latents=16, train_steps=150)
    assert flipped[0]["consistency"] == pytest.approx(rows[0]["consistency"])  # scored in its oriented form
    with pytest.raises(ValueError, match="by must be one of"):
        rank_directions(G, torch.eye(4), 4.0, by="contrast")
