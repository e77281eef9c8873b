"""Shifts in StyleGAN2 style space: which layers move, shared noise, and the pieces that build on shifts."""

from __future__ import annotations

import pytest
import torch

from helpers.direction_masks.discovery import DirectionDiscovery, DiscoveryConfig, pca_directions
from helpers.direction_masks.ranking import shift_strips
from helpers.direction_masks.reference_path import synthesize_per_image
from helpers.direction_masks.synthesis import MaskRules, synthesize
from helpers.gans import to_uint8
from helpers.gans.biggan import BigGAN
from helpers.gans.shift_spaces import StyleShifts, first_style, with_shift_space


def test_first_style_counts_the_layers_of_coarser_blocks(noisy_stylegan2):
    assert noisy_stylegan2.n_styles == 8  # 4, 8, 16, 32 px blocks
    assert [first_style(noisy_stylegan2, r) for r in (4, 8, 16, 32)] == [0, 1, 3, 5]
    for bad in (2, 24, 64):
        with pytest.raises(ValueError, match="resolution"):
            first_style(noisy_stylegan2, bad)


def test_shift_space_names(noisy_stylegan2):
    assert with_shift_space(noisy_stylegan2, "z") is noisy_stylegan2
    assert with_shift_space(noisy_stylegan2, "w").from_resolution == 4
    assert with_shift_space(noisy_stylegan2, "w:16").from_resolution == 16
    for bad in ("W", "w:", "w:abc", "style"):
        with pytest.raises(ValueError, match="shift space"):
            with_shift_space(noisy_stylegan2, bad)
    with pytest.raises(TypeError, match="StyleGAN2"):
        StyleShifts(BigGAN(resolution=32, ch=4, dim_z=20, shared_dim=4, n_classes=1, attention=[]), 4)


@torch.no_grad()
def test_a_fine_style_shift_leaves_coarse_layers_alone(noisy_stylegan2):
    G = StyleShifts(noisy_stylegan2, 32)
    z, h = G.sample_z(3, seed=1), torch.randn(G.dim_z)
    seeds = [5, 6, 7]
    assert torch.equal(G.render_shifted(z, 0 * h, seeds), noisy_stylegan2.render(z, seeds))
    w = noisy_stylegan2.styles(z).unsqueeze(1).repeat(1, 8, 1)
    noise = noisy_stylegan2.make_noise(3, seeds)
    moved = w.clone()
    moved[:, 5:] += G.spread * h  # 32-px convs and RGB output only
    assert torch.allclose(G.render_shifted(z, h, seeds), noisy_stylegan2.synthesis(moved, noise), atol=1e-6)
    coarse = noisy_stylegan2.synthesis_features(moved, noise)
    plain = noisy_stylegan2.synthesis_features(w, noise)
    assert all(torch.equal(coarse[k], plain[k]) for k in ("res4", "res8", "res16"))
    assert not torch.allclose(coarse["res32"], plain["res32"])
    assert torch.allclose(G.shift_coordinates(z) * G.spread, noisy_stylegan2.styles(z), atol=1e-6)


@torch.no_grad()
def test_pairs_and_masks_see_the_shift_alone(noisy_stylegan2):
    G = StyleShifts(noisy_stylegan2, 16)
    z = G.sample_z(4, seed=2)
    image, same = G.pair(z, torch.zeros(G.dim_z))
    assert torch.equal(image, same)  # both halves get the same noise
    rules = MaskRules(r=5.0, maxes_filter=False, connected_components=False)
    no_shift = torch.zeros(1, G.dim_z)
    for synth in (synthesize, synthesize_per_image):
        assert synth(G, z, no_shift, rules).masks.sum() == 0  # nothing gets brighter without a shift
        assert synth(G, z, torch.nn.functional.normalize(torch.randn(1, G.dim_z), dim=1), rules).masks.sum() > 0
    strips = shift_strips(G, torch.randn(G.dim_z), [-5.0, 0.0, 5.0], n_rows=2, seed=3)
    assert strips.shape == (8, 32, 32, 3)
    assert (strips[1] == to_uint8(noisy_stylegan2.render(G.sample_z(2, 3), [3, 4]))[0]).all()


def test_discovery_and_pca_work_in_style_space(tmp_path, noisy_stylegan2):
    G = StyleShifts(noisy_stylegan2, 16)
    config = DiscoveryConfig(n_directions=4, steps=2, batch_size=4, checkpoint_every=1, seed=0)
    discovery = DirectionDiscovery(tmp_path / "discovery", G, config, "cpu")
    discovery.train()
    assert discovery.directions().shape == (4, G.dim_z)
    directions, explained = pca_directions(G, 3, n_samples=64, batch_size=32)
    assert directions.shape == (3, G.dim_z) and torch.allclose(directions.norm(dim=1), torch.ones(3))
    assert explained.shape == (3,)


@pytest.mark.parametrize("resolution", [4, 8, 16, 32])
def test_shared_layers_run_once_and_give_the_images_of_two_syntheses(noisy_stylegan2, resolution):
    G = StyleShifts(noisy_stylegan2, resolution)
    z, shifts, seeds = G.sample_z(3, seed=4), torch.randn(2, G.dim_z), [1, 2, 3]
    w = noisy_stylegan2.styles(z).unsqueeze(1).expand(-1, 8, -1)
    render = G.shift_renderer(z, seeds)
    with torch.no_grad():
        assert torch.equal(render(None), noisy_stylegan2.render(z, seeds))
        for shift in shifts:
            assert torch.equal(render(shift), G.render_shifted(z, shift, seeds))
    torch.manual_seed(0)
    noise = noisy_stylegan2.make_noise(3)
    torch.manual_seed(0)
    shift = shifts[:1].clone().requires_grad_()
    image, shifted = G.pair(z, shift)
    assert torch.equal(image, noisy_stylegan2.synthesis(w, noise))
    assert torch.equal(shifted, noisy_stylegan2.synthesis(G._moved(w, shifts[:1]), noise))
    # a backward pass from the unshifted image does not reach the shift; from the shifted one it does
    assert torch.autograd.grad(image.sum(), shift, retain_graph=True, allow_unused=True)[0] is None
    assert torch.autograd.grad(shifted.sum(), shift)[0].abs().sum() > 0
