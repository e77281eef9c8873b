"""BigGAN generator (helpers.gans.biggan): equivalence with the reference BigGAN-PyTorch code, layout and semantics.

The reference equivalence is kept by a golden fixture, ``tests/gans/fixtures/biggan_reference_small.pt``: a small
configuration with attention whose random state dict (reference key layout), inputs and outputs were produced
with the reference code of anvoynov/BigGANsAreWatching (see the fixture's ``note``). No test runs a full-size
forward pass.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from helpers.core.modules import CheckpointMismatchError, load_strict
from helpers.gans.biggan import BigGAN, ConditionalBN, OutputBN, SpectralNorm, recompute_bn_stats

FIXTURE = Path(__file__).parent / "fixtures" / "biggan_reference_small.pt"
SMALL = dict(resolution=32, ch=2, dim_z=16, shared_dim=8, n_classes=2, attention=[16])


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE, weights_only=True)


def _from_fixture(ref) -> BigGAN:
    model = BigGAN(**ref["config"])
    load_strict(model, ref["state_dict"], FIXTURE.name)
    return model.eval()


def _randomized(seed: int = 0, **config) -> BigGAN:
    """A small model with random parameters, u0 and BN statistics (so that every part of the state matters)."""
    torch.manual_seed(seed)
    model = BigGAN(**{**SMALL, **config})
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if name.endswith("bias") else 0.5))
            if name.endswith("gamma"):
                p.fill_(0.7)
        for m in model.modules():
            if isinstance(m, (ConditionalBN, OutputBN)):
                m.stored_mean.copy_(0.1 * torch.randn_like(m.stored_mean))
                m.stored_var.uniform_(0.5, 1.5)
    return model.eval()


def _buffers(model, suffixes):
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(suffixes)}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- equivalence with the reference code (golden fixture) ---------------------------------------------------


def test_fixture_is_plain_and_small(reference):
    assert FIXTURE.stat().st_size < 200_000
    assert reference["reference_repo"] == "anvoynov/BigGANsAreWatching" and "338378a" in reference["note"]
    assert reference["config"]["attention"] and reference["out"].shape == (2, 3, 32, 32)


def test_matches_reference_outputs(reference):
    model = _from_fixture(reference)
    z, shift = reference["z"], reference["shift"]
    with torch.no_grad():
        out = model(z)
        out_shifted = model.shifted(z, shift)
    torch.testing.assert_close(out, reference["out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_shifted, reference["out_shifted"], atol=1e-5, rtol=0)
    assert (out - out_shifted).abs().max() > 0.1  # the shift is not a no-op
    # the shift goes into the raw z before the split, i.e. it is G(z + shift)
    torch.testing.assert_close(model(z + shift), out_shifted, atol=0, rtol=0)
    # eval forwards leave the whole state as loaded (u0, sv0, BN statistics)
    _assert_same({k: v for k, v in model.state_dict().items()}, dict(reference["state_dict"]))


def test_train_forward_updates_buffers_like_reference(reference):
    """One train-mode forward moves u0, sv0 (one power step) and the BN statistics exactly as the reference."""
    model = _from_fixture(reference).train()
    with torch.no_grad():
        model(reference["z"])
    got = model.state_dict()
    for k, expected in reference["train_buffers"].items():
        torch.testing.assert_close(got[k], expected, atol=1e-5, rtol=1e-5, msg=k)
    assert not torch.equal(got["linear.u0"], reference["state_dict"]["linear.u0"])


def test_class_index_selects_embedding_row(reference):
    model = _from_fixture(reference)
    z = reference["z"]
    with torch.no_grad():
        out1 = model(z, class_index=1)
        model.shared.weight.copy_(model.shared.weight.flip(0))
        swapped0 = model(z)
    torch.testing.assert_close(out1, swapped0, atol=0, rtol=0)
    assert (out1 - reference["out"]).abs().max() > 0.1


# --- full-size layout (docs/reference.md#checkpoint-layout-of-bigbigan_x1pth),
# built on the meta device: no memory, no forward

BLOCKS = [(1536, 1536), (1536, 768), (768, 384), (384, 192), (192, 96)]
PATTERNS = {
    r"shared\.weight": 1,
    r"linear\.(weight|bias|u0|sv0)": 4,
    r"blocks\.[0-4]\.0\.(conv1|conv2|conv_sc)\.(weight|bias|u0|sv0)": 60,
    r"blocks\.[0-4]\.0\.bn[12]\.(stored_mean|stored_var)": 20,
    r"blocks\.[0-4]\.0\.bn[12]\.(gain|bias)\.(weight|u0|sv0)": 60,
    r"blocks\.3\.1\.gamma": 1,
    r"blocks\.3\.1\.(theta|phi|g|o)\.(weight|u0|sv0)": 12,
    r"output_layer\.0\.(gain|bias|stored_mean|stored_var)": 4,
    r"output_layer\.2\.(weight|bias|u0|sv0)": 4,
}


@pytest.fixture(scope="module")
def bigbigan_meta():
    with torch.device("meta"):
        return BigGAN.bigbigan()


def test_bigbigan_state_dict_layout(bigbigan_meta):
    model = bigbigan_meta
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 166
    assert sum(PATTERNS.values()) == 166
    for pattern, count in PATTERNS.items():
        assert sum(bool(re.fullmatch(pattern, k)) for k in shapes) == count, pattern
    unmatched = [k for k in shapes if not any(re.fullmatch(p, k) for p in PATTERNS)]
    assert unmatched == []
    assert sum(k.endswith("sv0") for k in shapes) == 41
    assert not any("num_batches_tracked" in k for k in shapes)

    assert shapes["shared.weight"] == (1000, 128)
    assert shapes["linear.weight"] == (24576, 20) and shapes["linear.bias"] == (24576,)
    assert shapes["linear.u0"] == (1, 24576) and shapes["linear.sv0"] == (1,)
    for i, (c_in, c_out) in enumerate(BLOCKS):
        p = f"blocks.{i}.0."
        assert shapes[p + "conv1.weight"] == (c_out, c_in, 3, 3)
        assert shapes[p + "conv1.u0"] == (1, c_out)
        assert shapes[p + "conv2.weight"] == (c_out, c_out, 3, 3)
        assert shapes[p + "conv_sc.weight"] == (c_out, c_in, 1, 1) and shapes[p + "conv_sc.bias"] == (c_out,)
        assert shapes[p + "bn1.gain.weight"] == (c_in, 148) and shapes[p + "bn1.bias.u0"] == (1, c_in)
        assert shapes[p + "bn1.stored_mean"] == (c_in,) and shapes[p + "bn2.stored_var"] == (c_out,)
        assert shapes[p + "bn2.bias.weight"] == (c_out, 148)
    assert shapes["blocks.3.1.gamma"] == ()
    assert shapes["blocks.3.1.theta.weight"] == (24, 192, 1, 1) and shapes["blocks.3.1.phi.u0"] == (1, 24)
    assert shapes["blocks.3.1.g.weight"] == (96, 192, 1, 1) and shapes["blocks.3.1.o.weight"] == (192, 96, 1, 1)
    assert shapes["output_layer.0.gain"] == (96,) and shapes["output_layer.0.stored_var"] == (96,)
    assert shapes["output_layer.2.weight"] == (3, 96, 3, 3) and shapes["output_layer.2.u0"] == (1, 3)


def test_bigbigan_config_and_parameter_count(bigbigan_meta):
    model = bigbigan_meta
    assert sum(p.numel() for p in model.parameters()) == 70_433_988
    assert model.shared.weight.numel() == 128_000
    assert model.dim_z == 120 and model.resolution == 128 and model.chunk == 20
    assert model.config == dict(
        resolution=128,
        ch=96,
        dim_z=120,
        shared_dim=128,
        n_classes=1000,
        attention=[64],
        bn_eps=1e-4,
        sn_eps=1e-4,
        output_bn_eps=1e-5,
    )
    assert model.output_layer[0].eps == 1e-5 and model.blocks[0][0].bn1.eps == 1e-4
    assert model.linear.sn_eps == 1e-4


# --- spectral norm and batch-norm semantics ------------------------------------------------------------------


def test_u0_kept_in_eval_and_updated_in_train():
    model = _randomized()
    z = model.sample_z(3, seed=1)
    before = _buffers(model, ("u0", "sv0"))
    with torch.no_grad():
        model(z)
    _assert_same(_buffers(model, ("u0", "sv0")), before)
    model.train()
    with torch.no_grad():
        model(z)
    after = _buffers(model, ("u0", "sv0"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # every u0 and sv0 moved
    assert all(torch.allclose(after[k].norm(), torch.tensor(1.0)) for k in after if k.endswith("u0"))


def test_eval_uses_stored_u0():
    model = _randomized()
    z = model.sample_z(2, seed=1)
    with torch.no_grad():
        out = model(z)
        model.blocks[1][0].conv1.u0.copy_(torch.randn_like(model.blocks[1][0].conv1.u0))
        assert (model(z) - out).abs().max() > 1e-4


@pytest.mark.parametrize("layer", ["blocks.0.0.bn1", "blocks.2.0.bn2", "output_layer.0"])
def test_stored_bn_stats_used_and_kept_in_eval(layer):
    model = _randomized()
    z = model.sample_z(2, seed=2)
    before = _buffers(model, ("stored_mean", "stored_var"))
    with torch.no_grad():
        out = model(z)
        _assert_same(_buffers(model, ("stored_mean", "stored_var")), before)
        bn = model.get_submodule(layer)
        bn.stored_mean.add_(0.5)
        shifted_mean = model(z)
        bn.stored_mean.sub_(0.5)
        bn.stored_var.mul_(3.0)
        scaled_var = model(z)
    assert (shifted_mean - out).abs().max() > 1e-3
    assert (scaled_var - out).abs().max() > 1e-3


def test_output_bn_eps_matters(reference):
    """The output BN runs with eps 1e-5 (BigGAN-PyTorch's layers.bn default), not the blocks' 1e-4."""
    model = _from_fixture(reference)
    assert model.output_layer[0].eps == 1e-5
    with torch.no_grad():
        model.output_layer[0].eps = 1e-4
        assert (model(reference["z"]) - reference["out"]).abs().max() > 1e-3


# --- standing statistics --------------------------------------------------------------------------------------


def _sampler(model, seed=0, batch=4):
    return lambda i: model.sample_z(batch, seed=seed * 1000 + i)


def test_recompute_bn_stats_keeps_u0_and_is_deterministic():
    model = _randomized()
    twin = copy.deepcopy(model)
    with torch.no_grad():  # stale, even non-finite, statistics must not leak into the new ones
        for m in model.modules():
            if isinstance(m, (ConditionalBN, OutputBN)):
                m.stored_mean.fill_(float("nan"))
                m.stored_var.fill_(float("inf"))
    sn_before = _buffers(model, ("u0", "sv0"))
    params_before = {k: v.clone() for k, v in model.named_parameters()}
    recompute_bn_stats(model, _sampler(model), n_batches=3)
    recompute_bn_stats(twin, _sampler(twin), n_batches=3)
    _assert_same(_buffers(model, ("u0", "sv0")), sn_before)
    _assert_same({k: v for k, v in model.named_parameters()}, params_before)
    stats = _buffers(model, ("stored_mean", "stored_var"))
    _assert_same(stats, _buffers(twin, ("stored_mean", "stored_var")))
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert all((v > 0).all() for k, v in stats.items() if k.endswith("stored_var"))
    assert not model.training and not any(m.training for m in model.modules())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, (ConditionalBN, OutputBN)))


def test_recompute_bn_stats_is_the_average_over_batches():
    """The first BN sees the first linear's output, so its stats are the mean of the per-batch batch stats."""
    model = _randomized()
    sample = _sampler(model, seed=3)
    recompute_bn_stats(model, sample, n_batches=2)
    with torch.no_grad():
        hs = [model.features(sample(i))["res4"] for i in range(2)]
    means = [h.mean((0, 2, 3)) for h in hs]
    variances = [h.var((0, 2, 3), unbiased=True) for h in hs]
    bn = model.blocks[0][0].bn1
    torch.testing.assert_close(bn.stored_mean, (means[0] + means[1]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.stored_var, (variances[0] + variances[1]) / 2, atol=1e-5, rtol=1e-5)


# --- features, sampling, configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, names",
    [
        (dict(resolution=32, ch=2, dim_z=16, attention=[16]), ["res4", "res8", "res16", "res32", "image"]),
        (dict(resolution=64, ch=2, dim_z=20, attention=[32]), ["res4", "res8", "res16", "res32", "res64", "image"]),
    ],
)
def test_features_names_and_shapes(config, names):
    model = _randomized(**config)
    c_out = {32: [4, 4, 4], 64: [16, 8, 4, 2]}[config["resolution"]]
    c_in0 = {32: 4, 64: 16}[config["resolution"]]
    z = model.sample_z(2, seed=0)
    with torch.no_grad():
        feats = model.features(z)
        out = model(z)
    assert list(feats) == names
    assert feats["res4"].shape == (2, c_in0 * config["ch"], 4, 4)
    for i, name in enumerate(names[1:-1]):
        size = 8 * 2**i
        assert feats[name].shape == (2, c_out[i] * config["ch"], size, size), name
    assert feats["image"].shape == (2, 3, config["resolution"], config["resolution"])
    torch.testing.assert_close(feats["image"], out, atol=0, rtol=0)
    assert feats["image"].abs().max() <= 1
    with torch.no_grad():
        first = model.features(z, until="res8")
    assert list(first) == ["res4", "res8"] and all(torch.equal(first[k], feats[k]) for k in first)


def test_features_are_taken_after_attention():
    model = _randomized()  # attention at 16
    z = model.sample_z(2, seed=0)
    with torch.no_grad():
        feats = model.features(z)
        model.blocks[1][1].gamma.fill_(0.0)
        no_attn = model.features(z)
    torch.testing.assert_close(no_attn["res8"], feats["res8"], atol=0, rtol=0)
    assert (no_attn["res16"] - feats["res16"]).abs().max() > 1e-4
    assert len(model.blocks[1]) == 2 and all(len(b) == 1 for i, b in enumerate(model.blocks) if i != 1)


def test_sample_z_is_seeded():
    model = _randomized()
    a, b = model.sample_z(5, seed=7), model.sample_z(5, seed=7)
    assert a.shape == (5, 16) and torch.equal(a, b)
    assert not torch.equal(a, model.sample_z(5, seed=8))


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(resolution=100), r"resolution must be one of \[32, 64, 128, 256, 512\], got 100"),
        (dict(resolution=48, dim_z=16), "resolution"),
        (dict(resolution=32, dim_z=18), r"dim_z=18 must split into 4 equal chunks at resolution 32"),
        (dict(resolution=128, dim_z=128), r"dim_z=128 must split into 6 equal chunks"),
    ],
)
def test_invalid_configs_raise(config, match):
    with pytest.raises(ValueError, match=match):
        BigGAN(**{**SMALL, **config})


# --- strict loading ----------------------------------------------------------------------------------------


def test_load_strict_names_every_mismatch(reference):
    model = BigGAN(**reference["config"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(reference["state_dict"])
    del state["blocks.1.1.gamma"]
    del state["linear.sv0"]
    state["blocks.9.0.conv1.weight"] = torch.zeros(1)
    state["output_layer.2.weight"] = torch.zeros(3, 4, 3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_strict(model, state, "broken.pth")
    msg = str(info.value)
    assert "broken.pth" in msg and "BigGAN" in msg
    assert "missing keys (2)" in msg and "blocks.1.1.gamma" in msg and "linear.sv0" in msg
    assert "unexpected keys (1)" in msg and "blocks.9.0.conv1.weight" in msg
    assert "shape mismatches (1)" in msg
    assert "output_layer.2.weight: checkpoint (3, 4, 3, 3) vs model (3, 8, 3, 3)" in msg
    _assert_same(model.state_dict(), before)  # nothing was loaded


@pytest.mark.parametrize("drop", ["missing", "unexpected", "shape"])
def test_load_strict_rejects_each_kind_alone(reference, drop):
    model = BigGAN(**reference["config"])
    state = dict(reference["state_dict"])
    if drop == "missing":
        state.pop("blocks.0.0.bn1.gain.u0")
        expected = "missing keys (1):\n    blocks.0.0.bn1.gain.u0"
    elif drop == "unexpected":
        state["extra.weight"] = torch.zeros(2)
        expected = "unexpected keys (1):\n    extra.weight"
    else:
        state["shared.weight"] = torch.zeros(1000, 8)
        expected = "shape mismatches (1):\n    shared.weight: checkpoint (1000, 8) vs model (2, 8)"
    with pytest.raises(CheckpointMismatchError) as info:
        load_strict(model, state, "ckpt")
    assert expected in str(info.value)
    assert str(info.value).count("(1):") == 1


def test_load_strict_accepts_exact_state(reference):
    model = BigGAN(**reference["config"])
    assert load_strict(model, reference["state_dict"], "ok") is model
    assert all(isinstance(m, SpectralNorm) for m in [model.linear, model.blocks[1][1].theta, model.output_layer[2]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resolution=32, ch=4, dim_z=16, attention=[64]), r"attention at 64 px: blocks output \[8, 16, 32\] px"),
        (dict(resolution=32, ch=1, dim_z=16, attention=[16]), r"attention at 16 px needs >= 8 channels"),
    ],
)
def test_attention_placement_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BigGAN(**kwargs)
