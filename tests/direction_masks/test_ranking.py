"""Choosing the background direction: the two-map score, image consistency, ranking and shift strips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.direction_masks.ranking import (
    TwoMapScorer,
    choose,
    image_consistency,
    rank_directions,
    shift_strips,
    two_map_scores,
)


def test_ranking_picks_the_recolouring_direction_and_orients_it(toy_generator):
    G = toy_generator
    rows = rank_directions(G, torch.eye(4), 4.0, n_latents=16, train_steps=150)
    assert rows[0]["index"] == 0
    assert rows[0]["sign"] == 1.0 and rows[0]["contrast"] > 0.5
    assert abs(rows[0]["object_fraction"] - G.disc.mean().item()) < 0.02
    flipped = rank_directions(G, -torch.eye(4)[:1], 4.0, n_latents=16, train_steps=150)
    assert flipped[0]["sign"] == -1.0


def test_two_map_residuals_are_the_distance_under_the_better_map_with_finite_gradients():
    """Channel-by-channel planes give each pixel's colour distance under the better of the two clamped affine maps;
    a pixel both maps hit exactly (a saturated target) has distance 0 and passes no NaN back."""
    torch.manual_seed(0)
    scorer = TwoMapScorer(3)
    x, target = torch.rand(3, 50) * 2 - 1, torch.rand(3, 3, 50) * 2.4 - 1.2
    with torch.no_grad():
        scorer.weight[2] = 5 * torch.eye(3)  # map saturates every positive colour to 1 ...
        scorer.bias[2] = 0
    x[:, 0], target[:, 2, 0] = 0.5, 1.0  # ... so pixel 0 of direction 2 is hit exactly
    residual, choice = scorer(x, target)
    mapped = torch.einsum("dmij,pj->dmpi", scorer.weight, x.T) + scorer.bias[:, :, None]
    expected, expected_choice = (mapped.clamp(-1, 1) - target.permute(1, 2, 0)[:, None]).norm(dim=-1).min(1)
    assert torch.allclose(residual, expected, atol=1e-6) and torch.equal(choice, expected_choice)
    assert residual[2, 0] == 0
    residual.sum().backward()
    assert torch.isfinite(scorer.weight.grad).all() and torch.isfinite(scorer.bias.grad).all()


def test_scores_and_strips_of_a_noisy_generator_see_the_shift_alone(noisy_stylegan2):
    """With StyleGAN2's per-pixel noise, G(z) and G(z + h) must be drawn with the same noise."""
    G = noisy_stylegan2
    scores = two_map_scores(G, torch.zeros(2, G.dim_z), n_latents=8, train_steps=2, test_batches=1)
    assert (scores["change"] < 1e-4).all()
    strips = shift_strips(G, torch.zeros(G.dim_z), [-1.0, 0.0, 1.0], n_rows=2)
    rows = strips.reshape(2, 4, *strips.shape[1:])
    assert np.array_equal(rows[:, 0], rows[:, 2]) and (rows[:, 3] > 0).mean() < 0.01


def test_ranking_shows_progress_from_its_first_phase(toy_generator, capsys):
    """The two-map phase (rendering every candidate, fitting the scorer) has a bar, not only the consistency one."""
    rows = rank_directions(toy_generator, torch.eye(4), 4.0, n_latents=8, train_steps=20, progress=True)
    err = capsys.readouterr().err
    assert "two-map scores" in err and "24/24" in err
    assert rows == rank_directions(toy_generator, torch.eye(4), 4.0, n_latents=8, train_steps=20)


def test_ranking_depends_on_its_seed_alone(toy_generator):
    """The scorer's initial weights come from ``seed``: the global RNG state does not change the ranking."""
    torch.manual_seed(1)
    first = rank_directions(toy_generator, torch.eye(4), 4.0, n_latents=8, train_steps=20, seed=3)
    torch.manual_seed(2)
    assert first == rank_directions(toy_generator, torch.eye(4), 4.0, n_latents=8, train_steps=20, seed=3)


def test_choose_takes_the_top_row_or_a_named_candidate():
    ranking = [{"name": "discovered 3"}, {"name": "pca 0"}]
    assert choose(ranking)["name"] == "discovered 3"
    assert choose(ranking, "pca 0")["name"] == "pca 0"
    with pytest.raises(KeyError, match="no candidate 'pca 9'; candidates: discovered 3, pca 0"):
        choose(ranking, "pca 9")


def test_consistency_ranking_prefers_masks_that_follow_the_image(toy_generator):
    G = toy_generator
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


def test_screened_consistency_scores_the_finalists_as_the_full_ranking(toy_generator):
    G = toy_generator
    kwargs = dict(by="consistency", n_latents=16, train_steps=150, consistency_latents=32)
    full = {r["index"]: r for r in rank_directions(G, torch.eye(4), 4.0, **kwargs)}
    screened = rank_directions(G, torch.eye(4), 4.0, consistency_screen=8, screen_margin=0.1, **kwargs)
    assert screened[0]["index"] == 0 and screened[0]["consistency_latents"] == 32
    for row in screened:
        if row["consistency_latents"] == 32:  # a finalist: scored on every latent, as without the screen
            assert row["consistency"] == pytest.approx(full[row["index"]]["consistency"], abs=1e-6)
            assert row["kept"] == pytest.approx(full[row["index"]]["kept"])
    assert {r["consistency_latents"] for r in screened} == {8, 32}  # the stripes are screened out
    assert all(r["consistency_latents"] == 32 for r in full.values())
