"""Tests of helpers.gans.convert.bigbigan: the TF → PyTorch mapping without TensorFlow, and with it the toy module.

The TF-free tests build BigBiGAN-named numpy variables from a PyTorch model with the inverse transforms,
written here independently of the converter, so torch → TF names → torch must be exact.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch

from helpers.gans import load
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import infer_biggan_config
from helpers.gans.convert.bigbigan import (
    BIGBIGAN_GENERATOR_PREFIX,
    TF_BN_EPS,
    ConversionError,
    config_from_variables,
    read_hub_variables,
    tf_to_torch_state_dict,
)

P = BIGBIGAN_GENERATOR_PREFIX
EMA = "/ema_0.9999"
SMALL = dict(resolution=64, ch=4, dim_z=20, shared_dim=8, n_classes=1000, attention=[32])
HAS_TF = all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorflow_hub"))
needs_tf = pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed: pip install -e '.[convert]'")


def _chw_rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """Inverse of the first linear's reorder: rows (c, h, w) → (h, w, c)."""
    return rows.reshape(-1, 4, 4, *rows.shape[1:]).transpose(1, 2, 0, *range(3, rows.ndim + 2)).reshape(rows.shape)


def _tf_name(key: str, shared_dim: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """BigBiGAN TF name (without prefix) and inverse transform of one PyTorch key (sv0 excluded)."""
    conv = lambda a: a.transpose(2, 3, 1, 0)  # noqa: E731  [out, in, kh, kw] -> [kh, kw, in, out]
    vector, row = (lambda a: a.reshape(-1)), (lambda a: a.reshape(1, -1))  # noqa: E731
    fixed = {
        "shared.weight": ("linear/w", lambda a: a[:1]),
        "linear.weight": ("GenZ/G_linear/w", lambda a: _chw_rows_to_hwc(a).T),
        "linear.bias": ("GenZ/G_linear/b", _chw_rows_to_hwc),
        "linear.u0": ("GenZ/G_linear/u0", lambda a: _chw_rows_to_hwc(a[0])[None]),
        "output_layer.0.gain": ("BatchNorm/scale", vector),
        "output_layer.0.bias": ("BatchNorm/offset", vector),
        "output_layer.0.stored_mean": ("BatchNorm/accumulated_mean", vector),
        "output_layer.0.stored_var": ("BatchNorm/accumulated_var", vector),
        "output_layer.2.weight": ("conv_2d/w", conv),
        "output_layer.2.bias": ("conv_2d/b", vector),
        "output_layer.2.u0": ("conv_2d/u0", row),
    }
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(r"blocks\.(\d+)\.(\d)\.(.+)", key)
    k, sub, rest = int(m.group(1)), m.group(2), m.group(3)
    block = "GBlock" + (f"_{k}" if k else "")
    if sub == "1":  # attention
        if rest == "gamma":
            return "attention/gamma", lambda a: a.reshape(1)
        layer, param = rest.split(".")
        layer = {"o": "o_conv"}.get(layer, layer)
        return f"attention/{layer}/{'w' if param == 'weight' else 'u0'}", conv if param == "weight" else row
    parts = rest.split(".")
    if parts[0].startswith("conv"):
        tf_conv = {"conv1": "conv0", "conv2": "conv1", "conv_sc": "conv_sc"}[parts[0]]
        param = {"weight": "w", "bias": "b", "u0": "u0"}[parts[1]]
        return f"{block}/{tf_conv}/{param}", {"w": conv, "b": vector, "u0": row}[param]
    bn = {"bn1": "BatchNorm", "bn2": "BatchNorm_1"}[parts[0]]
    if parts[1].startswith("stored_"):
        return f"{block}/{bn}/accumulated_{parts[1][7:]}", vector
    linear = {"gain": "scale", "bias": "offset"}[parts[1]]
    if parts[2] == "u0":
        return f"{block}/{bn}/{linear}/u0", row
    # [C, class | z_chunk] -> [z_chunk | class, C]
    return f"{block}/{bn}/{linear}/w", lambda a: np.concatenate([a[:, shared_dim:], a[:, :shared_dim]], axis=1).T


def to_tf_layout(state: dict[str, np.ndarray], shared_dim: int, raw_offset: float = 1.0) -> dict[str, np.ndarray]:
    """BigBiGAN TF variables holding ``state``: EMA copies hold the values, raw copies ``value + raw_offset``.

    Adds the variables the conversion drops (``u1``, ``accumulation_counter``).
    """
    out = {}
    for key, value in state.items():
        if key.endswith(".sv0"):
            continue
        name, inverse = _tf_name(key, shared_dim)
        tf_value = np.asarray(inverse(value), np.float32)
        if name.rsplit("/", 1)[-1] in {"w", "b", "scale", "offset", "gamma"}:
            out[P + name + EMA] = tf_value
            out[P + name] = tf_value + raw_offset if raw_offset else tf_value
        else:
            out[P + name] = tf_value
        if name.endswith("/u0"):
            out[P + name[:-2] + "u1"] = np.zeros((1, 3), np.float32)
        if name.endswith("/accumulated_mean"):
            out[P + name.replace("accumulated_mean", "accumulation_counter")] = np.float32(7)
    return out


def random_small_model(seed: int = 0, **config) -> BigGAN:
    """SMALL BigGAN with every tensor random (one embedding row repeated, as in BigBiGAN)."""
    torch.manual_seed(seed)
    model = BigGAN(**{**SMALL, **config}).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not key.endswith(".sv0"):
                t.copy_(torch.randn_like(t).abs() if key.endswith("stored_var") else torch.randn_like(t))
        model.shared.weight.copy_(model.shared.weight[:1].expand_as(model.shared.weight))
    return model


def numpy_state(model: BigGAN) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


# --- without TensorFlow ------------------------------------------------------------------------------------------


def test_round_trip_torch_to_tf_names_to_torch_is_exact() -> None:
    model = random_small_model()
    variables = to_tf_layout(numpy_state(model), SMALL["shared_dim"])
    assert config_from_variables(variables) == SMALL
    state = tf_to_torch_state_dict(variables)
    expected = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert state[key].shape == value.shape and torch.equal(state[key], value), key
    z = model.sample_z(2, seed=1)
    rebuilt = BigGAN(**SMALL).eval()
    rebuilt.load_state_dict(state)
    assert torch.equal(rebuilt(z), model(z))


def test_full_size_conversion_has_the_released_166_keys() -> None:
    with torch.device("meta"):
        reference = BigGAN.bigbigan().state_dict()
    zeros = {k: np.zeros(v.shape, np.float32) for k, v in reference.items()}
    variables = to_tf_layout(zeros, shared_dim=128, raw_offset=0)
    assert variables[P + "linear/w"].shape == (1, 128)
    assert variables[P + "GenZ/G_linear/w"].shape == (20, 24576)
    state = tf_to_torch_state_dict(variables)
    assert len(state) == 166 and set(state) == set(reference)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    assert all(torch.equal(state[k], torch.ones(1)) for k in state if k.endswith(".sv0"))
    assert infer_biggan_config(state) == dict(
        resolution=128, ch=96, dim_z=120, shared_dim=128, n_classes=1000, attention=[64]
    )


def test_ema_copies_are_preferred() -> None:
    model = random_small_model()
    expected = model.state_dict()
    variables = to_tf_layout(numpy_state(model), SMALL["shared_dim"], raw_offset=1.0)
    ema, raw = tf_to_torch_state_dict(variables), tf_to_torch_state_dict(variables, use_ema=False)
    for key in (
        "shared.weight",
        "linear.weight",
        "linear.bias",
        "blocks.1.0.conv_sc.weight",
        "blocks.0.0.bn2.gain.weight",
        "blocks.2.1.gamma",
        "output_layer.0.gain",
        "output_layer.2.bias",
    ):
        assert torch.equal(ema[key], expected[key]) and torch.allclose(raw[key], expected[key] + 1), key
    for key in ("linear.u0", "blocks.0.0.bn1.stored_var", "output_layer.0.stored_mean", "blocks.2.1.o.u0"):
        assert torch.equal(ema[key], expected[key]) and torch.equal(raw[key], expected[key]), key


def test_missing_ema_copies_are_errors_not_fallbacks() -> None:
    variables = to_tf_layout(numpy_state(random_small_model()), SMALL["shared_dim"])
    del variables[P + "GBlock_1/conv0/w" + EMA]
    missing = r"missing variables \(1\):\n\s+" + re.escape(P + "GBlock_1/conv0/w" + EMA)
    with pytest.raises(ConversionError, match=missing):
        tf_to_torch_state_dict(variables)
    no_ema = {k: v for k, v in variables.items() if not k.endswith(EMA)}
    with pytest.raises(ConversionError, match="use_ema=False converts the raw weights"):
        tf_to_torch_state_dict(no_ema)
    assert len(tf_to_torch_state_dict(no_ema, use_ema=False)) == len(BigGAN(**SMALL).state_dict())


def test_missing_unused_and_mis_shaped_variables_are_all_listed() -> None:
    variables = to_tf_layout(numpy_state(random_small_model()), SMALL["shared_dim"])
    del variables[P + "GBlock_2/BatchNorm_1/accumulated_var"]
    variables[P + "GBlock/extra/w"] = np.zeros(3, np.float32)
    variables[P + "GBlock_3/conv_sc/w" + EMA] = variables[P + "GBlock_3/conv_sc/w" + EMA].transpose(0, 1, 3, 2)
    with pytest.raises(ConversionError) as err:
        tf_to_torch_state_dict(variables)
    msg = str(err.value)
    assert "missing variables (1):\n    GenEncWrapper/Generator/GBlock_2/BatchNorm_1/accumulated_var" in msg
    assert "unused variables (1):\n    GenEncWrapper/Generator/GBlock/extra/w" in msg
    assert (
        "shape mismatches (1):\n    GenEncWrapper/Generator/GBlock_3/conv_sc/w/ema_0.9999: (1, 1, 8, 16), "
        "expected (1, 1, 16, 8) (for blocks.3.0.conv_sc.weight)" in msg
    )
    assert "/u1" not in msg and "accumulation_counter" not in msg  # dropped on purpose, never reported


def test_vectors_may_carry_singleton_dimensions() -> None:
    model = random_small_model()
    variables = to_tf_layout(numpy_state(model), SMALL["shared_dim"])
    for name in ("BatchNorm/scale" + EMA, "attention/gamma" + EMA, "GenZ/G_linear/b" + EMA, "conv_2d/u0"):
        variables[P + name] = variables[P + name].reshape(1, 1, 1, -1)
    state = tf_to_torch_state_dict(variables)
    for key in ("output_layer.0.gain", "blocks.2.1.gamma", "linear.bias", "output_layer.2.u0"):
        assert torch.equal(state[key], model.state_dict()[key]), key
    variables[P + "conv_2d/u0"] = variables[P + "conv_2d/u0"].reshape(3, 1)[:2]
    with pytest.raises(ConversionError, match=r"conv_2d/u0: \(2, 1\), expected \(1, 3\)"):
        tf_to_torch_state_dict(variables)


def test_config_inference_needs_help_only_when_attention_is_ambiguous() -> None:
    # three blocks of 16 channels each: the attention could follow any of them
    config = dict(resolution=32, ch=4, dim_z=16, shared_dim=8, n_classes=1000, attention=[16])
    model = random_small_model(**config)
    variables = to_tf_layout(numpy_state(model), config["shared_dim"])
    with pytest.raises(ConversionError, match=r"fits blocks at \[8, 16, 32\] px; pass attention"):
        config_from_variables(variables)
    assert config_from_variables(variables, attention=[16]) == config
    state = tf_to_torch_state_dict(variables, config_from_variables(variables, attention=[16]))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConversionError, match="is missing"):
        config_from_variables({k: v for k, v in variables.items() if "conv_2d" not in k})


def test_module_imports_without_tensorflow_and_names_the_extra(monkeypatch) -> None:
    code = "import sys, helpers.gans.convert.bigbigan; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[convert\]"'):
        read_hub_variables("/nowhere")


# --- with TensorFlow ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    from helpers.gans.convert.tf_toy import build_toy_module

    return build_toy_module(tmp_path_factory.mktemp("toy") / "bigbigan_toy")


@needs_tf
def test_toy_module_converts_and_agrees_with_tf_layer_by_layer(toy_dir, tmp_path) -> None:
    import tensorflow_hub as hub

    from helpers.gans.convert.bigbigan import compare_generate, compare_layers, convert
    from helpers.gans.convert.tf_toy import TOY_CONFIG

    variables = read_hub_variables(toy_dir)
    for name in (
        "GBlock_4/conv1/w",
        "GBlock_4/conv1/w" + EMA,
        "GBlock_4/conv1/u1",
        "attention/gamma" + EMA,
        "GBlock/BatchNorm/accumulation_counter",
        "linear/w" + EMA,
        "BatchNorm/offset" + EMA,
    ):
        assert P + name in variables, name
    assert not np.array_equal(variables[P + "linear/w"], variables[P + "linear/w" + EMA])

    out = convert(toy_dir, tmp_path / "toy.pth")
    state = torch.load(out, weights_only=True)
    released = load(out)
    assert released.config == BigGAN(**TOY_CONFIG).config
    assert list(state) == list(released.state_dict()) and len(state) == 166
    meta = json.loads((tmp_path / "toy.pth.json").read_text())
    assert meta["source"] == str(toy_dir) and meta["tensorflow_hub"] == hub.__version__ and meta["use_ema"]

    module = hub.load(str(toy_dir))
    faithful = BigGAN(**{**released.config, "output_bn_eps": TF_BN_EPS}).eval()  # TF's output-BN eps
    faithful.load_state_dict(state)
    diffs = compare_layers(module, faithful, seed=0)
    released_diff = compare_generate(module, released, seed=0)
    print(f"\nmax |TF - torch|: {diffs}; end to end with the released output-BN eps 1e-5: {released_diff:.2e}")
    assert set(diffs) == {"first_linear", "conv", "conditional_bn", "attention", "output_layer", "end_to_end"}
    assert all(d < 1e-4 for d in diffs.values()), diffs
    assert released_diff < 1e-3

    raw = BigGAN(**{**released.config, "output_bn_eps": TF_BN_EPS}).eval()  # control: the non-EMA weights
    raw.load_state_dict(tf_to_torch_state_dict(variables, use_ema=False))
    raw_diffs = compare_layers(module, raw, seed=0)
    assert all(d > 1e-2 for d in raw_diffs.values()), raw_diffs


def _tf1_saved_model(path, names: list[str]) -> str:
    """A TF1-format SavedModel (what hub.load sees for the released module) with the given variables."""
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        for i, name in enumerate(names):
            tf.compat.v1.get_variable(name, initializer=np.full((1, 2), i, np.float32))
        sess.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(sess, [])
        builder.save()
    return str(path)


@needs_tf
def test_tf1_format_variables_keep_only_the_generator(tmp_path) -> None:
    names = [P + "linear/w", P + "linear/w" + EMA, "GenEncWrapper/Encoder/w", "GenEncWrapper/Discriminator/b"]
    variables = read_hub_variables(_tf1_saved_model(tmp_path / "tf1", names))
    assert sorted(variables) == [P + "linear/w", P + "linear/w" + EMA]
    assert np.array_equal(variables[P + "linear/w" + EMA], np.full((1, 2), 1, np.float32))
    with pytest.raises(ConversionError, match="no variables under 'GenEncWrapper/Generator/'.*GenEncWrapper/Encoder/w"):
        read_hub_variables(_tf1_saved_model(tmp_path / "enc", names[2:]))
