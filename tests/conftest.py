"""Shared fixtures: every test writes its dataset cache into a temporary folder."""

import pytest
import torch

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
