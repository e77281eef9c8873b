"""Tests of helpers.gans.stylegan2 and helpers.gans.convert.stylegan2: SAIC key layout, checkpoints, truncation,
noise."""

import pytest
import torch

from helpers.core.modules import CheckpointMismatchError
from helpers.gans.convert.stylegan2 import rosinality_to_saic, saic_to_rosinality
from helpers.gans.stylegan2 import StyleGAN2, bias_leaky_relu, infer_config, stylegan2_channels, upfirdn2d

SMALL = dict(resolution=32, dim_z=32, n_mlp=2, fmap_base=256, fmap_max=32)  # widths 32, 32, 32, 16


def _small(seed: int = 0) -> StyleGAN2:
    """A tiny model in eval mode with every parameter random (so biases, noise strengths and +1s all matter)."""
    torch.manual_seed(seed)
    model = StyleGAN2(**SMALL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "bias_orig", "scale_factors")):
                p.copy_(0.3 * torch.randn_like(p))
    model.estimate_latent_avg(256, seed=1)
    return model.eval()


def _spec_layout(n_blocks: int) -> set[str]:
    """The netGA key set listed in docs/reference.md#saic-checkpoint-layout for blocks 0 … n_blocks − 1."""
    keys = {"constant_tensor", "upscale2x.kernel"}
    keys |= {f"mapping.{i}.{p}" for i in range(1, 16, 2) for p in ("weight_orig", "bias_orig")}
    for k in range(n_blocks):
        for slot in ("1", "2") if k else ("2",):
            keys |= {
                f"blocks.{k}.conv{slot}.weight_orig",
                f"blocks.{k}.conv{slot}.affine.weight_orig",
                f"blocks.{k}.conv{slot}.affine.bias",
                f"blocks.{k}.addnoise{slot}.scale_factors",
                f"blocks.{k}.bias_act{slot}.bias",
            }
        if k:
            keys.add(f"blocks.{k}.conv1.blur.kernel")
        keys |= {
            f"to_rgbs.{k}.conv1.weight_orig",
            f"to_rgbs.{k}.conv1.affine.weight_orig",
            f"to_rgbs.{k}.conv1.affine.bias",
            f"to_rgbs.{k}.bias1.bias",
        }
    return keys


@pytest.mark.parametrize("resolution, n_keys, n_ros_keys, params_m", [(1024, 147, 171, 30.37), (512, 132, 153, 30.28)])
def test_full_size_layout_is_saic_netGA(resolution, n_keys, n_ros_keys, params_m):
    with torch.device("meta"):
        model = StyleGAN2(resolution)
    state = model.state_dict()
    assert len(state) == n_keys
    assert set(state) == _spec_layout(n_blocks=len(model.channels))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_m
    shapes = {
        "constant_tensor": (1, 512, 4, 4),
        "mapping.15.weight_orig": (512, 512),
        "mapping.1.bias_orig": (512,),
        "blocks.0.conv2.weight_orig": (512, 512, 3, 3),
        "blocks.0.conv2.affine.weight_orig": (512, 512),
        "blocks.5.conv1.weight_orig": (256, 512, 3, 3),
        "blocks.5.conv1.affine.weight_orig": (512, 512),
        "blocks.5.conv1.affine.bias": (512,),
        "blocks.6.conv2.affine.weight_orig": (128, 512),
        "blocks.7.bias_act1.bias": (64,),
        "blocks.3.addnoise1.scale_factors": (1, 1, 1, 1),
        "blocks.7.conv1.blur.kernel": (4, 4),
        "to_rgbs.7.conv1.weight_orig": (3, 64, 1, 1),
        "to_rgbs.7.conv1.affine.weight_orig": (64, 512),
        "to_rgbs.0.bias1.bias": (1, 3, 1, 1),
        "upscale2x.kernel": (4, 4),
    }
    if resolution == 1024:
        shapes.update({"blocks.8.conv2.weight_orig": (32, 32, 3, 3), "to_rgbs.8.conv1.affine.bias": (32,)})
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert "latent_avg" not in state and dict(model.named_buffers())["latent_avg"].shape == (512,)
    assert len(saic_to_rosinality(state)) == n_ros_keys


def test_channel_formula_is_config_f():
    assert stylegan2_channels(1024, 16384, 512) == [512] * 5 + [256, 128, 64, 32]
    assert stylegan2_channels(64, 512, 64) == [64, 64, 64, 32, 16]
    assert StyleGAN2(**SMALL).channels == [32, 32, 32, 16]
    with pytest.raises(ValueError, match="power of 2"):
        StyleGAN2(48)


def test_output_shape_and_features():
    model = _small()
    z = model.sample_z(3, seed=0)
    image = model(z, noise_seed=5)
    assert image.shape == (3, 3, 32, 32)
    feats = model.features(z, noise_seed=5)
    assert list(feats) == ["res4", "res8", "res16", "res32", "image"]
    sizes = {k: tuple(v.shape) for k, v in feats.items()}
    assert sizes == {
        "res4": (3, 32, 4, 4),
        "res8": (3, 32, 8, 8),
        "res16": (3, 32, 16, 16),
        "res32": (3, 16, 32, 32),
        "image": (3, 3, 32, 32),
    }
    assert torch.equal(feats["image"], image)
    first = model.features(z, noise_seed=5, until="res8")  # the later blocks do not run
    assert list(first) == ["res4", "res8"] and all(torch.equal(first[k], feats[k]) for k in first)
    after_act = []
    hooks = [block.bias_act2.register_forward_hook(lambda m, i, o: after_act.append(o)) for block in model.blocks]
    model.features(z, noise_seed=5)
    for hook in hooks:
        hook.remove()
    assert all(torch.equal(a, f) for a, f in zip(after_act, list(feats.values())[:-1], strict=True))


def test_every_parameter_gets_a_gradient():
    model = _small().train()
    model(model.sample_z(2, seed=0)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_saic_checkpoint_round_trip(tmp_path):
    model = _small()
    torch.save(model.saic_checkpoint(), tmp_path / "g.tar")
    obj = torch.load(tmp_path / "g.tar", weights_only=True)
    assert set(obj) == {"netGA", "latent_avg"}
    loaded = StyleGAN2.from_checkpoint(obj, "g.tar")
    assert loaded.config == model.config and not loaded.training
    assert torch.equal(loaded.latent_avg, model.latent_avg)
    z = model.sample_z(2, seed=3)
    assert torch.equal(loaded(z, noise_seed=4), model(z, noise_seed=4))


def test_rosinality_round_trip_and_conventions():
    model = _small()
    state = model.state_dict()
    noises = model.make_noise(1, noise_seed=0)
    ros = saic_to_rosinality(state, noises)
    assert ros["conv1.conv.weight"].shape == (1, *state["blocks.0.conv2.weight_orig"].shape)
    assert torch.equal(ros["convs.2.conv.modulation.bias"], state["blocks.2.conv1.affine.bias"] + 1)
    assert torch.equal(ros["convs.5.activate.bias"], state["blocks.3.bias_act2.bias"])
    assert ros["convs.3.noise.weight"].shape == (1,)
    assert torch.equal(ros["style.2.weight"], state["mapping.3.weight_orig"])
    assert torch.equal(ros["to_rgbs.2.conv.weight"][0], state["to_rgbs.3.conv1.weight_orig"])
    assert all(torch.equal(ros[f"to_rgbs.{j}.upsample.kernel"], state["upscale2x.kernel"]) for j in range(3))
    assert torch.equal(ros["noises.noise_6"], noises[6])

    back, back_noises = rosinality_to_saic(ros)
    assert set(back) == set(state)
    for key, value in state.items():
        if key.endswith("affine.bias"):  # b + 1 − 1 is exact only up to float rounding
            torch.testing.assert_close(back[key], value, rtol=0, atol=1e-6)
        else:
            assert torch.equal(back[key], value), key
    assert all(torch.equal(a, b) for a, b in zip(back_noises, noises, strict=True))

    loaded = StyleGAN2.from_checkpoint({"g_ema": ros, "latent_avg": model.latent_avg}, "ros")
    z = model.sample_z(2, seed=3)
    torch.testing.assert_close(loaded(z, noise=noises), model(z, noise=noises), rtol=0, atol=1e-5)


def test_rosinality_kernels_must_agree():
    ros = saic_to_rosinality(_small().state_dict())
    ros["to_rgbs.1.upsample.kernel"] = ros["to_rgbs.1.upsample.kernel"] * 2
    with pytest.raises(ValueError, match="to_rgbs.1.upsample.kernel"):
        rosinality_to_saic(ros)


def test_strict_load_names_missing_unexpected_and_misshaped_keys():
    obj = _small().saic_checkpoint()
    state = obj["netGA"]
    del state["blocks.1.addnoise1.scale_factors"]
    state["blocks.1.extra"] = torch.zeros(1)
    state["to_rgbs.2.conv1.weight_orig"] = torch.zeros(3, 31, 1, 1)
    with pytest.raises(CheckpointMismatchError) as err:
        StyleGAN2.from_checkpoint(obj, "broken.tar")
    msg = str(err.value)
    assert "broken.tar" in msg and "blocks.1.addnoise1.scale_factors" in msg and "blocks.1.extra" in msg
    assert "to_rgbs.2.conv1.weight_orig: checkpoint (3, 31, 1, 1) vs model (3, 32, 1, 1)" in msg

    ros = saic_to_rosinality(_small().state_dict())
    del ros["convs.2.noise.weight"]
    with pytest.raises(CheckpointMismatchError, match="blocks.2.addnoise1.scale_factors"):
        StyleGAN2.from_checkpoint({"g_ema": ros}, "ros.pt")
    with pytest.raises(CheckpointMismatchError, match="neither"):
        StyleGAN2.from_checkpoint({"g": {}}, "other.pt")
    with pytest.raises(CheckpointMismatchError, match="latent_avg"):
        StyleGAN2.from_checkpoint({"netGA": _small().state_dict(), "latent_avg": torch.zeros(7)}, "x")


def test_infer_config_from_shapes():
    assert infer_config(_small().state_dict()) == SMALL
    with torch.device("meta"):
        assert infer_config(StyleGAN2(512).state_dict())["fmap_base"] == 16384
    state = _small().state_dict()
    del state["blocks.2.bias_act2.bias"]
    with pytest.raises(CheckpointMismatchError, match="blocks.2.bias_act2.bias"):
        infer_config(state)


def test_missing_latent_avg_is_estimated():
    model = _small()
    with pytest.warns(UserWarning, match="no latent_avg"):
        loaded = StyleGAN2.from_checkpoint({"netGA": model.state_dict()}, "no_avg")
    assert torch.equal(loaded.latent_avg, model.estimate_latent_avg())


def test_truncation():
    model = _small()
    z = model.sample_z(3, seed=0)
    w = model.mapping_forward(z)
    torch.testing.assert_close(model.styles(z, 0.25), model.latent_avg + 0.25 * (w - model.latent_avg))
    assert torch.equal(model.styles(z, 1.0), w)

    flat = model(z, noise_seed=[1, 1, 1], truncation=0.0)
    torch.testing.assert_close(flat, flat[:1].expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    free = model(z, noise_seed=[1, 1, 1], truncation=1.0)
    assert (free[0] - free[1]).abs().max() > 1e-2
    assert torch.equal(model(z, noise_seed=2), model(z, noise_seed=2, truncation=0.5))  # eval default: ψ = 0.5
    assert torch.equal(model.train()(z, noise_seed=2), model(z, noise_seed=2, truncation=1.0))  # training: none

    fresh = StyleGAN2(**SMALL).eval()
    with pytest.raises(RuntimeError, match="latent_avg is unknown"):
        fresh(z)


def test_noise_seeds():
    model = _small()
    z = model.sample_z(3, seed=0)
    a, b = model.features(z, noise_seed=7), model.features(z, noise_seed=7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (model(z, noise_seed=8) - a["image"]).abs().max() > 1e-3
    assert (model(z) - model(z)).abs().max() > 1e-3  # no seed: fresh noise every call

    batch_noise, single_noise = model.make_noise(3, [10, 11, 12]), model.make_noise(1, [11])
    assert all(torch.equal(b[1], s[0]) for b, s in zip(batch_noise, single_noise, strict=True))
    together = model.features(z, noise_seed=[10, 11, 12])
    alone = model.features(z[1:2], noise_seed=[11])
    reordered = model.features(z[[2, 0]], noise_seed=[12, 10])
    for key in together:
        torch.testing.assert_close(alone[key][0], together[key][1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reordered[key][0], together[key][2], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reordered[key][1], together[key][0], rtol=1e-5, atol=1e-5)
    assert torch.equal(model(z[:1], noise_seed=11), model(z[:1], noise_seed=[11]))

    noise = model.make_noise(2, noise_seed=3)
    assert [tuple(n.shape) for n in noise] == [(2, 1, s, s) for s in (4, 8, 8, 16, 16, 32, 32)]
    assert torch.equal(model(z[:2], noise=noise), model(z[:2], noise_seed=3))
    with pytest.raises(ValueError, match="2 noise seeds for a batch of 3"):
        model(z, noise_seed=[1, 2])


def test_pairs_share_noise_so_a_zero_shift_changes_nothing():
    model = _small()
    z = model.sample_z(3, seed=0)
    image, shifted = model.pair(z, torch.zeros(1, model.dim_z))
    assert (image - shifted).abs().max() < 1e-5  # float rounding only; unshared noise moves pixels by ~0.5
    assert (image[0] - image[1]).abs().max() > 1e-3  # and different samples still differ
    image, shifted = model.pair(z, 0.5 * torch.randn(1, model.dim_z))
    assert (image - shifted).abs().max() > 1e-3
    seeds = [4, 5, 6]
    assert torch.equal(model.render(z, seeds), model(z, noise_seed=seeds))
    assert torch.equal(model.render(z[1:], seeds[1:]), model.render(z, seeds)[1:])


def test_upfirdn2d_is_a_true_convolution_and_keeps_dc():
    kernel = torch.arange(16.0).reshape(4, 4)
    delta = torch.ones(1, 1, 1, 1)
    assert torch.equal(upfirdn2d(delta, kernel, up=1, pad=(3, 3))[0, 0], kernel)  # correlation would flip it
    up = StyleGAN2(**SMALL).upscale2x(torch.full((1, 2, 8, 8), 0.5))
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 2, 12, 12), 0.5))
    x, bias = torch.tensor([[[[-1.0]], [[1.0]]]]), torch.tensor([0.5, 0.5])
    torch.testing.assert_close(bias_leaky_relu(x, bias).flatten(), torch.tensor([-0.1, 1.5]) * 2**0.5)
