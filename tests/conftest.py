"""Shared fixtures: every test writes its dataset cache into a temporary folder."""

import pytest
import torch
from torch import nn

from helpers.gans.base import Generator
from helpers.gans.stylegan2 import StyleGAN2


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GANSEG_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.fixture
def noisy_stylegan2() -> StyleGAN2:
    """A tiny StyleGAN2 in eval mode whose per-pixel noise visibly moves every image (noise strength 0.5)."""
    torch.manual_seed(0)
    G = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("scale_factors"):
                p.fill_(0.5)
    G.estimate_latent_avg(64)
    return G.eval()


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


@pytest.fixture
def toy_generator() -> ToyGenerator:
    """A 16 px generator with a known background direction (z0), a texture (z1) and base colours (z2, z3)."""
    return ToyGenerator()
