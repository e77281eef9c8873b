"""TF-Hub BigBiGAN generator (``bigbigan-resnet50/1``) → our `BigGAN` state dict in the released layout.

The route is TensorFlow 2 + tensorflow_hub 0.16: ``hub.load`` (no ``hub.Module``, no sessions) dumps the
generator variables to numpy; everything after that is numpy and torch, so the mapping is testable without
TensorFlow. TensorFlow is imported lazily, only by the functions that read a module (extra ``[convert]``).

TF variable names (docs/reference.md#variable-names): the generator's variables sit under
``GenEncWrapper/Generator/``. The names
below are the ones that the reference's renaming rules (``bikey_to_key``) map onto TF-Hub BigGAN-128's
names, which ajbrock's converter reads. The BigGAN-128 names are in those sources; the BigBiGAN names are
inferred by inverting the rules, and their shapes from the BigGAN-128 shapes and transforms
(docs/reference.md#conversion-rules).
``GBlock[_k]`` is ``GBlock`` for block 0, then ``GBlock_1`` ...; S = shared_dim, C0 = channels at 4x4.

* ``linear/w`` [1, S] → ``shared.weight``: the row repeated ``n_classes`` (1000) times.
* ``GenZ/G_linear/w`` [chunk, 16·C0] → ``linear.weight``: transposed, rows reordered (h, w, c) → (c, h, w);
  ``GenZ/G_linear/{b,u0}`` → ``linear.{bias,u0}``: the same reorder.
* ``GBlock[_k]/{conv0,conv1,conv_sc}/w`` [kh, kw, in, out] → ``blocks.k.0.{conv1,conv2,conv_sc}.weight``:
  permute (3, 2, 0, 1).
* ``GBlock[_k]/{BatchNorm,BatchNorm_1}/{scale,offset}/w`` [chunk + S, C] →
  ``blocks.k.0.{bn1,bn2}.{gain,bias}.weight``: transposed, columns [z_chunk | class] → [class | z_chunk].
* ``GBlock[_k]/{BatchNorm,BatchNorm_1}/accumulated_{mean,var}`` → ``blocks.k.0.{bn1,bn2}.stored_{mean,var}``: raw.
* ``attention/{theta,phi,g,o_conv}/w`` [1, 1, in, out] → ``blocks.a.1.{theta,phi,g,o}.weight``: permute
  (3, 2, 0, 1); ``attention/gamma`` [1] → ``blocks.a.1.gamma`` [] (a = the block the attention follows).
* ``BatchNorm/{scale,offset}`` [C] and ``BatchNorm/accumulated_{mean,var}`` →
  ``output_layer.0.{gain,bias,stored_mean,stored_var}``.
* ``conv_2d/{w,b,u0}`` → ``output_layer.2.{weight,bias,u0}``: permute (3, 2, 0, 1).

Biases ``b`` and spectral-norm vectors ``u0`` follow their weight (``u0`` becomes [1, out]). Every ``w``,
``b``, ``scale``, ``offset`` and ``gamma`` has an ``…/ema_0.9999`` copy, which is used by default. ``u1`` (the
other singular vector) and ``accumulation_counter`` are read and deliberately dropped
(docs/reference.md#conversion-rules: the
statistics are copied without dividing by the counter). Vectors and scalars may come with extra
singleton dimensions; everything else must have exactly the shape above, or the conversion fails with
a list of every missing, unused and mis-shaped variable (the reference silently skipped shape errors).
The ``sv0`` logging buffers, which the TF module does not have, are filled with ones.

`convert` writes a plain ``torch.save(state_dict)`` with exactly the released ``BigBiGAN_x1.pth`` layout
(166 keys at full size, loadable by ``helpers.gans.load``) and a ``<file>.json`` provenance record beside it.
`compare_layers` evaluates the toy module's layers (``helpers.gans.convert.tf_toy``) and the ``generate``
signature in TF and PyTorch on the same inputs.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from helpers.core.io import save_torch, write_json
from helpers.core.manifest import sha256_file
from helpers.core.modules import format_listing, load_strict
from helpers.gans.biggan import ARCH, BOTTOM_WIDTH, BigGAN
from helpers.gans.checkpoints import infer_biggan_config

BIGBIGAN_GENERATOR_PREFIX = "GenEncWrapper/Generator/"
EMA_SUFFIX = "/ema_0.9999"
DROPPED_SUFFIXES = ("/u1", "/accumulation_counter")  # present in TF, not needed at inference (see above)
N_CLASSES = 1000  # the released file repeats BigBiGAN's single class embedding into 1000 rows
TF_BN_EPS = 1e-4  # TF's BN eps, block and output BNs alike; the released port uses 1e-5 for the output BN
# Which layers `compare_layers` checks: the first 3x3 conv of block 1 (TF conv0 = torch conv1) and the
# second conditional BN of block 2 (TF BatchNorm_1 = torch bn2).
CHECK_BLOCKS = {"conv": 1, "conditional_bn": 2}
CONVERT_HINT = (
    'TensorFlow and tensorflow_hub are needed, which the base install leaves out: pip install -e ".[convert]"'
)


class ConversionError(ValueError):
    """TF variables do not fit the BigGAN layout; the message lists missing, unused and mis-shaped ones."""


@dataclass(frozen=True)
class Rule:
    """One PyTorch tensor: its TF source (name without prefix or EMA suffix), TF shape, transform, EMA copy."""

    torch_key: str
    tf_name: str
    tf_shape: tuple[int, ...]
    kind: str
    ema: bool


def _hwc_to_chw(rows: np.ndarray) -> np.ndarray:
    """Reorders the first axis of the first linear's output from TF's (h, w, c) to PyTorch's (c, h, w)."""
    hwc = rows.reshape(BOTTOM_WIDTH, BOTTOM_WIDTH, -1, *rows.shape[1:])
    return np.moveaxis(hwc, 2, 0).reshape(rows.shape)


def _y_first(w: np.ndarray, shared_dim: int) -> np.ndarray:
    """Columns of a conditional-BN linear from TF's [z_chunk | class] to PyTorch's [class | z_chunk] order."""
    return np.concatenate([w[:, -shared_dim:], w[:, :-shared_dim]], axis=1)


# kind -> (TF array, BigGAN config) -> PyTorch array
TRANSFORMS: dict[str, Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]] = {
    "vector": lambda a, cfg: a.reshape(-1),
    "row": lambda a, cfg: a.reshape(1, -1),
    "scalar": lambda a, cfg: a.reshape(()),
    "conv": lambda a, cfg: a.transpose(3, 2, 0, 1),
    "embedding": lambda a, cfg: np.repeat(a, cfg["n_classes"], axis=0),
    "first_linear": lambda a, cfg: _hwc_to_chw(a.T),
    "first_linear_vector": lambda a, cfg: _hwc_to_chw(a.reshape(-1)),
    "first_linear_row": lambda a, cfg: _hwc_to_chw(a.reshape(-1))[None],
    "cbn_linear": lambda a, cfg: _y_first(a.T, cfg["shared_dim"]),
}
# kinds whose TF shape may carry extra singleton dimensions
LOOSE_KINDS = {"vector", "row", "scalar", "first_linear_vector", "first_linear_row"}


def _sn_layer(torch_prefix: str, tf_prefix: str, w_shape: tuple[int, ...], kind: str, bias: bool) -> list[Rule]:
    n_out = w_shape[-1]
    rules = [Rule(f"{torch_prefix}.weight", f"{tf_prefix}/w", w_shape, kind, True)]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", f"{tf_prefix}/b", (n_out,), "vector", True))
    return rules + [Rule(f"{torch_prefix}.u0", f"{tf_prefix}/u0", (1, n_out), "row", False)]


def _cbn(torch_prefix: str, tf_prefix: str, channels: int, cond_dim: int) -> list[Rule]:
    rules = []
    for torch_name, tf_name in (("gain", "scale"), ("bias", "offset")):
        w_shape = (cond_dim, channels)
        rules += _sn_layer(f"{torch_prefix}.{torch_name}", f"{tf_prefix}/{tf_name}", w_shape, "cbn_linear", False)
    for stat in ("mean", "var"):
        tf_name = f"{tf_prefix}/accumulated_{stat}"
        rules.append(Rule(f"{torch_prefix}.stored_{stat}", tf_name, (channels,), "vector", False))
    return rules


def conversion_rules(config: Mapping[str, Any]) -> list[Rule]:
    """Every PyTorch tensor of ``BigGAN(**config)`` except the ``sv0`` buffers, with its TF source."""
    resolution, ch, shared_dim = config["resolution"], config["ch"], config["shared_dim"]
    c_in, c_out = ([m * ch for m in mults] for mults in ARCH[resolution])
    chunk = config["dim_z"] // (len(c_in) + 1)
    cond_dim = shared_dim + chunk
    attention = list(config.get("attention", []))
    if len(attention) > 1:
        raise ConversionError(f"the TF generator has one 'attention' scope; config asks for {attention}")
    first = c_in[0] * BOTTOM_WIDTH**2
    rules = [
        Rule("shared.weight", "linear/w", (1, shared_dim), "embedding", True),
        Rule("linear.weight", "GenZ/G_linear/w", (chunk, first), "first_linear", True),
        Rule("linear.bias", "GenZ/G_linear/b", (first,), "first_linear_vector", True),
        Rule("linear.u0", "GenZ/G_linear/u0", (1, first), "first_linear_row", False),
    ]
    for k, (cin, cout) in enumerate(zip(c_in, c_out)):
        tf_block, block = "GBlock" + (f"_{k}" if k else ""), f"blocks.{k}.0"
        rules += _cbn(f"{block}.bn1", f"{tf_block}/BatchNorm", cin, cond_dim)
        rules += _sn_layer(f"{block}.conv1", f"{tf_block}/conv0", (3, 3, cin, cout), "conv", True)
        rules += _cbn(f"{block}.bn2", f"{tf_block}/BatchNorm_1", cout, cond_dim)
        rules += _sn_layer(f"{block}.conv2", f"{tf_block}/conv1", (3, 3, cout, cout), "conv", True)
        rules += _sn_layer(f"{block}.conv_sc", f"{tf_block}/conv_sc", (1, 1, cin, cout), "conv", True)
        if BOTTOM_WIDTH * 2 ** (k + 1) in attention:
            rules.append(Rule(f"blocks.{k}.1.gamma", "attention/gamma", (1,), "scalar", True))
            layers = (
                ("theta", "theta", cout, cout // 8),
                ("phi", "phi", cout, cout // 8),
                ("g", "g", cout, cout // 2),
                ("o", "o_conv", cout // 2, cout),
            )
            for torch_name, tf_name, n_in, n_out in layers:
                w_shape = (1, 1, n_in, n_out)
                rules += _sn_layer(f"blocks.{k}.1.{torch_name}", f"attention/{tf_name}", w_shape, "conv", False)
    rules += [
        Rule("output_layer.0.gain", "BatchNorm/scale", (c_out[-1],), "vector", True),
        Rule("output_layer.0.bias", "BatchNorm/offset", (c_out[-1],), "vector", True),
        Rule("output_layer.0.stored_mean", "BatchNorm/accumulated_mean", (c_out[-1],), "vector", False),
        Rule("output_layer.0.stored_var", "BatchNorm/accumulated_var", (c_out[-1],), "vector", False),
    ]
    return rules + _sn_layer("output_layer.2", "conv_2d", (3, 3, c_out[-1], 3), "conv", True)


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...], loose: bool) -> bool:
    if loose:
        return [d for d in shape if d != 1] == [d for d in expected if d != 1]
    return shape == expected


def _find_shape(variables: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    """The shape of a TF variable (raw or EMA copy), or ConversionError naming it."""
    for candidate in (BIGBIGAN_GENERATOR_PREFIX + name, BIGBIGAN_GENERATOR_PREFIX + name + EMA_SUFFIX):
        if candidate in variables:
            return tuple(np.shape(variables[candidate]))
    raise ConversionError(f"cannot infer the generator configuration: {BIGBIGAN_GENERATOR_PREFIX + name} is missing")


def config_from_variables(variables: Mapping[str, np.ndarray], attention: list[int] | None = None) -> dict[str, Any]:
    """BigGAN constructor arguments from the TF variables' shapes, so that any size of module converts.

    ``attention`` (resolutions) is inferred from the channel count of the attention layer; pass it when
    several blocks have that count. The eps values are the released port's (BigGAN defaults).
    """
    prefix = BIGBIGAN_GENERATOR_PREFIX
    block_scope = re.compile(re.escape(prefix) + r"(GBlock(_\d+)?)/")
    n_blocks = len({m.group(1) for name in variables if (m := block_scope.match(name))})
    resolution = BOTTOM_WIDTH * 2**n_blocks
    if resolution not in ARCH:
        raise ConversionError(f"{n_blocks} generator blocks ({resolution} px) is not a known BigGAN layout")
    c_out = ARCH[resolution][1]
    chunk = _find_shape(variables, "GenZ/G_linear/w")[0]
    ch = _find_shape(variables, "conv_2d/w")[2] // c_out[-1]
    if attention is None:
        attention = []
        if any(name.startswith(prefix + "attention/") for name in variables):
            channels = _find_shape(variables, "attention/theta/w")[2]
            attention = [BOTTOM_WIDTH * 2 ** (k + 1) for k, m in enumerate(c_out) if m * ch == channels]
            if len(attention) != 1:
                raise ConversionError(
                    f"attention over {channels} channels fits blocks at {attention} px; pass attention=[...]"
                )
    return dict(
        resolution=resolution,
        ch=ch,
        dim_z=chunk * (n_blocks + 1),
        shared_dim=_find_shape(variables, "linear/w")[1],
        n_classes=N_CLASSES,
        attention=list(attention),
    )


def tf_to_torch_state_dict(
    variables: Mapping[str, np.ndarray], config: Mapping[str, Any] | None = None, *, use_ema: bool = True
) -> dict[str, Tensor]:
    """The BigGAN state dict (``sv0`` filled with ones) from BigBiGAN TF generator variables, full names.

    Uses the ``ema_0.9999`` copies unless ``use_ema`` is False; raises ConversionError listing every
    missing, unused or mis-shaped variable rather than skipping any.
    """
    config = dict(config) if config is not None else config_from_variables(variables)
    state: dict[str, Tensor] = {}
    missing, shapes, used = [], [], set()
    for rule in conversion_rules(config):
        raw = BIGBIGAN_GENERATOR_PREFIX + rule.tf_name
        names = [raw + EMA_SUFFIX, raw] if rule.ema else [raw]
        source = names[0] if use_ema else raw
        used.update(names)  # the copy not chosen is expected and dropped
        if source not in variables:
            missing.append(source)
            continue
        value = np.asarray(variables[source], dtype=np.float32)
        if not _shape_fits(value.shape, rule.tf_shape, rule.kind in LOOSE_KINDS):
            shapes.append(f"{source}: {value.shape}, expected {rule.tf_shape} (for {rule.torch_key})")
            continue
        state[rule.torch_key] = torch.from_numpy(np.array(TRANSFORMS[rule.kind](value, config), order="C"))
        if rule.torch_key.endswith(".u0"):
            state[rule.torch_key[: -len("u0")] + "sv0"] = torch.ones(1)
    unused = sorted(name for name in variables if name not in used and not name.endswith(DROPPED_SUFFIXES))
    if missing or unused or shapes:
        msg = f"the TF variables do not fit BigGAN({config})"
        for title, items in (
            ("missing variables", sorted(set(missing))),
            ("unused variables", unused),
            ("shape mismatches", shapes),
        ):
            if items:
                msg += format_listing(title, items, limit=30)
        if use_ema and not any(name.endswith(EMA_SUFFIX) for name in variables):
            msg += "\n  there are no ema_0.9999 copies: use_ema=False converts the raw weights"
        raise ConversionError(msg)
    return state


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """(tensorflow, tensorflow_hub), or an ImportError that names the ``[convert]`` extra."""
    try:
        import tensorflow as tf
        import tensorflow_hub as hub
    except ImportError as err:
        raise ImportError(CONVERT_HINT) from err
    return tf, hub


def _checkpoint_variables(tf: ModuleType, module_dir: str) -> dict[str, Callable[[], np.ndarray]]:
    """Variable name -> reader, from a TF2 SavedModel's checkpoint (its object graph holds the names)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    checkpoint = os.path.join(module_dir, "variables", "variables")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_variable(checkpoint, "_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {
        attr.full_name: (lambda key=attr.checkpoint_key: tf.train.load_variable(checkpoint, key))
        for node in graph.nodes
        for attr in node.attributes
        if attr.name == "VARIABLE_VALUE"
    }


def read_hub_variables(handle_or_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The BigBiGAN generator variables of a TF-Hub module (URL or directory), by name without ``:0``.

    ``hub.load`` gives TF1 Hub modules (the released one) a ``.variables`` list; for TF2 SavedModels (the
    toy module) the names come from the checkpoint's object graph.
    """
    tf, hub = import_tensorflow()
    handle = os.fspath(handle_or_dir)
    module = hub.load(handle)
    if hasattr(module, "variables"):
        readers = {re.sub(r":\d+$", "", v.name): v.numpy for v in module.variables}
    else:
        readers = _checkpoint_variables(tf, hub.resolve(handle))
    prefix = BIGBIGAN_GENERATOR_PREFIX
    variables = {name: np.asarray(read()) for name, read in readers.items() if name.startswith(prefix)}
    if not variables:
        raise ConversionError(f"{handle}: no variables under {prefix!r}; it has e.g. {sorted(readers)[:10]}")
    return variables


def convert(handle_or_dir: str | os.PathLike, out_path: str | os.PathLike, *, use_ema: bool = True) -> Path:
    """Converts a TF-Hub BigBiGAN module to a plain state dict in the released layout, plus ``<out>.json``."""
    tf, hub = import_tensorflow()
    variables = read_hub_variables(handle_or_dir)
    state = tf_to_torch_state_dict(variables, use_ema=use_ema)
    config = infer_biggan_config(state)
    model = load_strict(BigGAN(**config), state, f"conversion of {handle_or_dir}")
    out_path = Path(out_path)
    save_torch(model.state_dict(), out_path)
    write_json(
        out_path.with_name(out_path.name + ".json"),
        {
            "source": os.fspath(handle_or_dir),
            "use_ema": use_ema,
            "config": config,
            "tensorflow": tf.__version__,
            "tensorflow_hub": hub.__version__,
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tf_variables": len(variables),
            "sha256": sha256_file(out_path),
        },
    )
    return out_path


def _nchw(x: Any) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)


def _max_diff(tf_nchw: np.ndarray, torch_out: Tensor) -> float:
    return float(np.abs(tf_nchw - torch_out.numpy()).max())


@torch.no_grad()
def compare_generate(tf_module: Any, torch_model: BigGAN, seed: int = 0, batch: int = 2) -> float:
    """Max |TF ``generate`` signature − torch_model(z)| on the same z ~ N(0, I); works for the real module too."""
    z = np.random.default_rng(seed).standard_normal((batch, torch_model.dim_z)).astype(np.float32)
    image = tf_module.signatures["generate"](z=z)["default"]
    return _max_diff(_nchw(image), torch_model.eval()(torch.from_numpy(z)))


@torch.no_grad()
def compare_layers(tf_module: Any, torch_model: BigGAN, seed: int = 0, batch: int = 2) -> dict[str, float]:
    """Max |TF − PyTorch| per layer on identical random inputs, plus ``end_to_end`` (`compare_generate`).

    ``tf_module`` is the loaded toy module (``helpers.gans.convert.tf_toy``), which exposes the layer functions
    ``first_linear``, ``conv``, ``conditional_bn``, ``attention`` and ``output_layer`` (NHWC in and out).
    """
    model = torch_model.eval()
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    def nhwc_input(channels: int, size: int) -> tuple[np.ndarray, Tensor]:
        x = normal(batch, size, size, channels)
        return x, torch.from_numpy(_nchw(x).copy())

    diffs = {}
    z0 = normal(batch, model.chunk)
    first = model.linear(torch.from_numpy(z0)).view(batch, -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
    diffs["first_linear"] = _max_diff(_nchw(tf_module.first_linear(z0)), first)
    k = CHECK_BLOCKS["conv"]
    conv = model.blocks[k][0].conv1
    x, xt = nhwc_input(conv.in_channels, BOTTOM_WIDTH * 2 ** (k + 1))
    diffs["conv"] = _max_diff(_nchw(tf_module.conv(x)), conv(xt))
    k = CHECK_BLOCKS["conditional_bn"]
    bn = model.blocks[k][0].bn2
    x, xt = nhwc_input(bn.stored_mean.numel(), BOTTOM_WIDTH * 2 ** (k + 1))
    z_chunk = normal(batch, model.chunk)
    cond = torch.cat([model.shared.weight[:1].expand(batch, -1), torch.from_numpy(z_chunk)], dim=1)
    diffs["conditional_bn"] = _max_diff(_nchw(tf_module.conditional_bn(x, z_chunk)), bn(xt, cond))
    ((k, attention),) = [(i, blocks[1]) for i, blocks in enumerate(model.blocks) if len(blocks) > 1]
    x, xt = nhwc_input(attention.theta.in_channels, BOTTOM_WIDTH * 2 ** (k + 1))
    diffs["attention"] = _max_diff(_nchw(tf_module.attention(x)), attention(xt))
    x, xt = nhwc_input(model.output_layer[0].gain.numel(), model.resolution)
    diffs["output_layer"] = _max_diff(_nchw(tf_module.output_layer(x)), model.output_layer(xt))
    diffs["end_to_end"] = compare_generate(tf_module, model, seed, batch)
    return diffs
