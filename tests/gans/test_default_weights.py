"""The shipped embedded-default weights: present, intact, loadable, described, and small."""

import pytest
import torch

from helpers.core.manifest import read_manifest, verify
from helpers.core.paths import weights_dir
from helpers.gans import load
from helpers.gans.base import Generator

DEFAULTS = {"default-biggan": "default_biggan.pt", "default-stylegan2": "default_stylegan2.pt"}


def test_manifest_lists_the_defaults_and_matches_the_files():
    files = read_manifest(weights_dir())
    assert set(DEFAULTS.values()) | {"default_biggan_encoder.pt"} <= set(files)
    assert verify(weights_dir()) == []
    for name in DEFAULTS.values():
        assert files[name]["train_config"]["steps"] == files[name]["steps"] > 0
        assert files[name]["swd_x1e3_vs_test"]["mean"] > 0


def test_shipped_files_stay_small():
    total = sum(p.stat().st_size for p in weights_dir().glob("*.pt"))
    assert total <= 20 * 2**20


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_load_by_name_and_generate(name):
    model = load(name)
    assert isinstance(model, Generator) and not model.training
    with torch.no_grad():
        images = model(model.sample_z(4, 0))
        feats = model.features(model.sample_z(1, 0))
    assert images.shape == (4, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.1  # not a constant image
    assert list(feats)[-1] == "image" and list(feats)[0] == "res4"


def test_default_encoder_matches_the_default_biggan():
    encoder, biggan = load("default-biggan-encoder"), load("default-biggan")
    z = biggan.sample_z(64, 123)
    with torch.no_grad():
        z_hat = encoder(biggan(z))
    # better than guessing the prior mean, whose error is 1 per coordinate (the shipped encoder is at 0.90)
    assert torch.nn.functional.mse_loss(z_hat, z).item() < 0.95


def test_an_export_never_replaces_shipped_files_unless_allowed(tmp_path):
    from helpers.core.manifest import record, refuse_replacing
    from helpers.core.paths import weights_dir

    names = ["default_biggan.pt", "default_stylegan2.pt", "default_biggan_encoder.pt"]
    with pytest.raises(FileExistsError, match="holds the shipped default_biggan.pt, default_stylegan2.pt"):
        refuse_replacing(weights_dir(), names)  # the training notebook's default WEIGHTS_OUT
    refuse_replacing(weights_dir(), names, replace=True)
    refuse_replacing(tmp_path, names)  # an empty folder
    (tmp_path / "default_biggan.pt").write_bytes(b"mine")
    refuse_replacing(tmp_path, names)  # a file of one's own, not in a manifest
    record(tmp_path / "default_biggan.pt", {})
    with pytest.raises(FileExistsError, match="REPLACE_SHIPPED"):
        refuse_replacing(tmp_path, names)
