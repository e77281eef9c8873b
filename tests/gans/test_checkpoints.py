import json

import numpy as np
import pytest
import torch

from helpers.core.manifest import read_manifest, record, verify
from helpers.gans import CheckpointError, CheckpointMismatchError, load, save_model, to_uint8
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import infer_biggan_config
from helpers.gans.encoder import LatentEncoder
from helpers.gans.stylegan2 import StyleGAN2

SMALL_BIGGAN = dict(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[16])


def test_our_format_round_trips_every_class(tmp_path):
    models = [
        BigGAN(**SMALL_BIGGAN),
        StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16),
        LatentEncoder(16, 32, 8, 16),
    ]
    models[1].estimate_latent_avg(64)
    for i, model in enumerate(models):
        model.eval()
        path = save_model(model, tmp_path / f"m{i}.pt", {"note": "x"})
        loaded = load(path)
        assert type(loaded) is type(model) and not loaded.training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
        if isinstance(model, LatentEncoder):
            x = torch.randn(2, 3, 32, 32)
        else:  # a generator on a CPU is loaded with channels-last weights (faster convolutions)
            x = model.sample_z(2, 0)
            model.to(memory_format=torch.channels_last)
            assert all(p.is_contiguous(memory_format=torch.channels_last) for p in loaded.parameters() if p.dim() == 4)
        kwargs = {"noise_seed": 3} if isinstance(model, StyleGAN2) else {}
        assert torch.equal(model(x, **kwargs), loaded(x, **kwargs))


def test_plain_biggan_state_dict_with_or_without_sv0(tmp_path):
    model = BigGAN(**SMALL_BIGGAN).eval()
    state = model.state_dict()
    model.to(memory_format=torch.channels_last)  # as `load` stores a CPU generator's weights
    assert infer_biggan_config(state) == {k: v for k, v in model.config.items() if "eps" not in k}
    torch.save({k: v for k, v in state.items() if not k.endswith("sv0")}, tmp_path / "plain.pth")
    z = model.sample_z(2, 0)
    assert torch.equal(load(tmp_path / "plain.pth")(z), model(z))


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pt"):
        load(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="could not read .*corrupt.pt"):
        load(tmp_path / "corrupt.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a generator checkpoint .*'weights'"):
        load(tmp_path / "other.pt")
    state = BigGAN(**SMALL_BIGGAN).state_dict()
    state.pop("blocks.0.0.conv1.bias")
    state["blocks.0.0.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load(tmp_path / "broken.pth")
    assert "broken.pth" in str(err.value) and "blocks.0.0.conv1.bias" in str(err.value)
    assert "blocks.0.0.conv2.weight: checkpoint (1, 1, 3, 3)" in str(err.value)


def test_a_plain_state_dict_missing_layout_keys_is_named(tmp_path):
    state = BigGAN(**SMALL_BIGGAN).state_dict()
    state.pop("output_layer.0.gain")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial.pth looks like a BigGAN state dict but lacks .*output_layer"):
        load(tmp_path / "partial.pth")


def test_our_format_with_a_wrong_class_config_or_buffer_is_named(tmp_path):
    """Each structural fault of our format names the file and the problem (not a raw TypeError or KeyError)."""
    model = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    good = torch.load(save_model(model, tmp_path / "good.pt"), weights_only=True)
    faults = {
        "class.pt": ({**good, "class": "BigGAN"}, r"config does not fit the recorded class BigGAN \(unknown keys"),
        "extra.pt": ({**good, "config": {**good["config"], "depth": 3}}, r"unknown keys \['depth'\]"),
        "short.pt": ({**good, "config": {}}, r"config does not fit the recorded class StyleGAN2 \(no \['resolution'\]"),
        "noconfig.pt": ({k: v for k, v in good.items() if k != "config"}, r"checkpoint without \['config'\]"),
        "listconfig.pt": ({**good, "config": [32]}, "config is a list"),
        "buffer.pt": ({**good, "buffers": {"latent_avg": torch.zeros(3)}}, r"buffer 'latent_avg' is \(3,\)"),
        "stray.pt": ({**good, "buffers": {"avg": torch.zeros(3)}}, "buffer 'avg' is not a buffer of StyleGAN2"),
    }
    for name, (obj, message) in faults.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(CheckpointError, match=message) as err:
            load(tmp_path / name)
        assert name in str(err.value)


def test_relative_paths_start_at_the_repository_root(tmp_path, monkeypatch):
    """Notebooks run in notebooks/: "weights/default_biggan.pt" still means the repository's weights folder."""
    monkeypatch.chdir(tmp_path)
    assert isinstance(load("weights/default_biggan.pt"), BigGAN)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"f": print}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="could not read"):
        load(tmp_path / "code.pt")


def test_known_name_points_to_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"BigBiGAN_x1.pth \(run download_all.sh"):
        load("bigbigan")


def test_manifest_records_and_detects_changes(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc")
    entry = record(path, {"steps": 3})
    assert entry["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" and entry["bytes"] == 3
    assert read_manifest(tmp_path)["w.pt"]["steps"] == 3 and verify(tmp_path) == []
    path.write_bytes(b"abd")
    assert verify(tmp_path) == [f"{path}: sha256 differs from MANIFEST.json (file changed or corrupt)"]
    path.unlink()
    assert "missing" in verify(tmp_path)[0]
    assert json.loads((tmp_path / "MANIFEST.json").read_text())["files"]["w.pt"]["code_version"]


def test_to_uint8_rounds_clamps_and_goes_channels_last():
    x = torch.tensor([-1.5, -1.0, -0.996, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7).expand(2, 3, 1, 7)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 7, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 1, 128, 191, 255, 255]  # (x + 1) * 127.5, rounded half to even
    np.testing.assert_array_equal(to_uint8(x.numpy().astype(np.float64)), out)
