"""A latent direction fitted with labels (experiments.label_fit), the diagnosis behind direction_ceiling."""

from __future__ import annotations

import torch

from experiments.label_fit import fit_direction


def test_fitting_a_direction_to_object_masks_finds_the_lighting_axis(toy_generator):
    G = toy_generator
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    masks = G.disc.bool().expand(64, -1, -1)
    h = fit_direction(G, z, masks, magnitude=4.0, steps=150, batch_size=16, progress=False)
    assert torch.isclose(h.norm(), torch.tensor(1.0))
    assert h[0] > 0.9  # z0 lightens the disc and darkens the background; z1 only adds stripes
