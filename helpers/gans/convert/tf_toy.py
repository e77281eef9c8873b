"""A small TF2 generator in BigBiGAN's variable layout, for checking the conversion without the real module.

`build_toy_module(path)` saves a ``tf.Module`` (``tf.saved_model.save``, loadable with ``hub.load``) whose
variables carry the names that ``helpers.gans.convert.bigbigan`` expects under ``GenEncWrapper/Generator/``,
at small shapes, with every variable the conversion reads or drops: ``ema_0.9999`` copies that differ from
the raw values (the forward pass uses the copies), ``u0``/``u1``, accumulated statistics and counters.
It exposes the ``generate`` signature (``z`` → ``{"default": NHWC image}``, like the real module) and the
layer functions that ``compare_layers`` evaluates (NHWC in and out).

The forward pass follows TF conventions and is written independently of the PyTorch model. From
docs/reference.md#forward-pass and #conversion-rules: NHWC; the first linear's output viewed as [B, 4, 4, C] (h, w,
c); conditional-BN
input [z_chunk | class embedding]; gain ``1 + scale(cond)``; nearest x2 upsampling of both branches;
attention after the block at its resolution, with 2x2 max-pooled keys and values; output BN, ReLU,
3x3 conv, tanh; BN eps 1e-4 throughout. Inferred, not confirmed against the real graph: spectral norm
as one power step from ``u0`` normalising with ``x / max(|x|, 1e-4)`` (the PyTorch port's; ``u1``
unused), statistics used as stored (``accumulation_counter`` ignored), the class embedding as
``ones[B, 1] @ linear/w``, and the shapes of vectors (``u0`` [1, out], ``gamma`` [1], BN vectors [C]).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from helpers.gans.biggan import ARCH, BOTTOM_WIDTH
from helpers.gans.convert.bigbigan import (
    BIGBIGAN_GENERATOR_PREFIX,
    CHECK_BLOCKS,
    EMA_SUFFIX,
    TF_BN_EPS,
    import_tensorflow,
)

tf, _ = import_tensorflow()

# 128 px like the released generator (five blocks, attention at 64 px), at a small width
TOY_CONFIG: dict[str, Any] = dict(resolution=128, ch=4, dim_z=24, shared_dim=16, attention=[64])
SN_EPS = 1e-4


class _Variables:
    """Creates the toy's named variables from a seeded generator and keeps all of them, used or not."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.created: list[tf.Variable] = []

    def new(self, name: str, value: np.ndarray, ema: bool = False) -> tf.Variable:
        """``<prefix><name>``; with ``ema`` also a different ``…/ema_0.9999`` copy, which is the one returned."""
        values = {name: value}
        if ema:
            noise = self.rng.standard_normal(value.shape) * (np.abs(value).mean() + 0.01)
            values[name + EMA_SUFFIX] = value + 0.5 * noise
        for suffix_name, v in values.items():
            self.created.append(tf.Variable(np.asarray(v, np.float32), name=BIGBIGAN_GENERATOR_PREFIX + suffix_name))
        return self.created[-1]

    def normal(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return scale * self.rng.standard_normal(shape)


def _normalize(x: tf.Tensor) -> tf.Tensor:
    return x / tf.maximum(tf.norm(x), SN_EPS)


def _upsample(x: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour x2 in H and W."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


class SNLayer(tf.Module):
    """A spectral-normed linear (``w`` [in, out]) or conv (``w`` [kh, kw, in, out]): ``w``, ``b``, ``u0``, ``u1``."""

    def __init__(self, vs: _Variables, scope: str, w_shape: tuple[int, ...], bias: bool):
        super().__init__()
        fan_in, n_out = int(np.prod(w_shape[:-1])), w_shape[-1]
        self.w = vs.new(f"{scope}/w", vs.normal(*w_shape, scale=fan_in**-0.5), ema=True)
        self.b = vs.new(f"{scope}/b", vs.normal(n_out, scale=0.1), ema=True) if bias else None
        self.u0 = vs.new(f"{scope}/u0", vs.normal(1, n_out))
        vs.new(f"{scope}/u1", vs.normal(1, fan_in))  # the right singular vector: not used at inference

    def weight(self) -> tf.Tensor:
        """w / sigma, with sigma from one power-iteration step that starts at u0."""
        w_mat = tf.reshape(self.w, [-1, self.w.shape[-1]])
        v = _normalize(tf.matmul(self.u0, w_mat, transpose_b=True))
        u = _normalize(tf.matmul(v, w_mat))
        return self.w / tf.matmul(tf.matmul(v, w_mat), u, transpose_b=True)[0, 0]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if len(self.w.shape) == 2:
            out = tf.matmul(x, self.weight())
        else:
            out = tf.nn.conv2d(x, self.weight(), strides=1, padding="SAME")
        return out if self.b is None else out + self.b


class _Statistics(tf.Module):
    """Accumulated BN statistics (and the counter, which inference does not use)."""

    def __init__(self, vs: _Variables, scope: str, channels: int):
        super().__init__()
        self.mean = vs.new(f"{scope}/accumulated_mean", vs.normal(channels, scale=0.2))
        self.var = vs.new(f"{scope}/accumulated_var", vs.rng.uniform(0.5, 2.0, channels))
        vs.new(f"{scope}/accumulation_counter", np.array(1.0))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return (x - self.mean) / tf.sqrt(self.var + TF_BN_EPS)


class ConditionalBN(tf.Module):
    """BN from stored statistics, then ``* (1 + scale(cond)) + offset(cond)`` with spectral-normed linears."""

    def __init__(self, vs: _Variables, scope: str, channels: int, cond_dim: int):
        super().__init__()
        self.stats = _Statistics(vs, scope, channels)
        self.scale = SNLayer(vs, f"{scope}/scale", (cond_dim, channels), bias=False)
        self.offset = SNLayer(vs, f"{scope}/offset", (cond_dim, channels), bias=False)

    def __call__(self, x: tf.Tensor, cond: tf.Tensor) -> tf.Tensor:
        gain, offset = 1 + self.scale(cond), self.offset(cond)
        return self.stats(x) * gain[:, None, None, :] + offset[:, None, None, :]


class OutputBN(tf.Module):
    """The output layer's BN: stored statistics, learned ``scale`` and ``offset``."""

    def __init__(self, vs: _Variables, scope: str, channels: int):
        super().__init__()
        self.stats = _Statistics(vs, scope, channels)
        self.scale = vs.new(f"{scope}/scale", 1 + vs.normal(channels, scale=0.2), ema=True)
        self.offset = vs.new(f"{scope}/offset", vs.normal(channels, scale=0.1), ema=True)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.stats(x) * self.scale + self.offset


class Attention(tf.Module):
    """Self-attention with max-pooled keys and values, added to the input with a learned ``gamma``."""

    def __init__(self, vs: _Variables, channels: int):
        super().__init__()
        self.channels = channels
        self.theta = SNLayer(vs, "attention/theta", (1, 1, channels, channels // 8), bias=False)
        self.phi = SNLayer(vs, "attention/phi", (1, 1, channels, channels // 8), bias=False)
        self.g = SNLayer(vs, "attention/g", (1, 1, channels, channels // 2), bias=False)
        self.o_conv = SNLayer(vs, "attention/o_conv", (1, 1, channels // 2, channels), bias=False)
        self.gamma = vs.new("attention/gamma", np.array([0.5]), ema=True)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        c = self.channels

        def pooled(t: tf.Tensor) -> tf.Tensor:
            return tf.nn.max_pool2d(t, 2, 2, "VALID")

        theta = tf.reshape(self.theta(x), [b, h * w, c // 8])
        phi = tf.reshape(pooled(self.phi(x)), [b, -1, c // 8])
        g = tf.reshape(pooled(self.g(x)), [b, -1, c // 2])
        beta = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True), axis=-1)
        return x + self.gamma * self.o_conv(tf.reshape(tf.matmul(beta, g), [b, h, w, c // 2]))


class GBlock(tf.Module):
    """CBN, ReLU, upsample, conv0, CBN, ReLU, conv1, plus the upsampled 1x1 ``conv_sc`` skip."""

    def __init__(self, vs: _Variables, scope: str, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.bn0 = ConditionalBN(vs, f"{scope}/BatchNorm", c_in, cond_dim)
        self.conv0 = SNLayer(vs, f"{scope}/conv0", (3, 3, c_in, c_out), bias=True)
        self.bn1 = ConditionalBN(vs, f"{scope}/BatchNorm_1", c_out, cond_dim)
        self.conv1 = SNLayer(vs, f"{scope}/conv1", (3, 3, c_out, c_out), bias=True)
        self.conv_sc = SNLayer(vs, f"{scope}/conv_sc", (1, 1, c_in, c_out), bias=True)

    def __call__(self, x: tf.Tensor, cond: tf.Tensor) -> tf.Tensor:
        h = self.conv0(_upsample(tf.nn.relu(self.bn0(x, cond))))
        h = self.conv1(tf.nn.relu(self.bn1(h, cond)))
        return h + self.conv_sc(_upsample(x))


class ToyBigBiGAN(tf.Module):
    """The generator (see the module docstring) with ``generate`` and the per-layer tf.functions."""

    def __init__(self, config: dict[str, Any], seed: int):
        super().__init__()
        vs = _Variables(seed)
        c_in, c_out = ([m * config["ch"] for m in mults] for mults in ARCH[config["resolution"]])
        chunk = config["dim_z"] // (len(c_in) + 1)
        cond_dim = chunk + config["shared_dim"]
        block_res = [BOTTOM_WIDTH * 2 ** (k + 1) for k in range(len(c_in))]
        (self.attention_after,) = [block_res.index(r) for r in config["attention"]]  # one attention scope in TF
        self.first_channels = c_in[0]
        self.embedding = vs.new("linear/w", vs.normal(1, config["shared_dim"]), ema=True)
        self.z_linear = SNLayer(vs, "GenZ/G_linear", (chunk, c_in[0] * BOTTOM_WIDTH**2), bias=True)
        self.blocks = [
            GBlock(vs, "GBlock" + (f"_{k}" if k else ""), ci, co, cond_dim)
            for k, (ci, co) in enumerate(zip(c_in, c_out))
        ]
        self.attention_layer = Attention(vs, c_out[self.attention_after])
        self.output_bn = OutputBN(vs, "BatchNorm", c_out[-1])
        self.output_conv = SNLayer(vs, "conv_2d", (3, 3, c_out[-1], 3), bias=True)
        self.all_variables = vs.created  # tracked, so that the unused raw copies are saved too

        def spec(*shape: int | None) -> tf.TensorSpec:
            return tf.TensorSpec(shape, tf.float32)

        def nhwc(channels: int) -> tf.TensorSpec:
            return spec(None, None, None, channels)

        conv_block, bn_block = self.blocks[CHECK_BLOCKS["conv"]], self.blocks[CHECK_BLOCKS["conditional_bn"]]
        self.first_linear = tf.function(self._first_linear, input_signature=[spec(None, chunk)])
        self.conv = tf.function(conv_block.conv0, input_signature=[nhwc(c_in[CHECK_BLOCKS["conv"]])])
        self.conditional_bn = tf.function(
            lambda x, z_chunk: bn_block.bn1(x, self._condition(z_chunk)),
            input_signature=[nhwc(c_out[CHECK_BLOCKS["conditional_bn"]]), spec(None, chunk)],
        )
        self.attention = tf.function(self.attention_layer, input_signature=[nhwc(c_out[self.attention_after])])
        self.output_layer = tf.function(self._output_layer, input_signature=[nhwc(c_out[-1])])
        self.generate = tf.function(self._generate, input_signature=[spec(None, config["dim_z"])])

    def _condition(self, z_chunk: tf.Tensor) -> tf.Tensor:
        """[z_chunk | class embedding]: BigBiGAN's single class, as the one-hot ones[B, 1] times linear/w."""
        return tf.concat([z_chunk, tf.matmul(tf.ones([tf.shape(z_chunk)[0], 1]), self.embedding)], axis=1)

    def _first_linear(self, z0: tf.Tensor) -> tf.Tensor:
        return tf.reshape(self.z_linear(z0), [-1, BOTTOM_WIDTH, BOTTOM_WIDTH, self.first_channels])

    def _output_layer(self, x: tf.Tensor) -> tf.Tensor:
        """Before the tanh."""
        return self.output_conv(tf.nn.relu(self.output_bn(x)))

    def _generate(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        zs = tf.split(z, len(self.blocks) + 1, axis=1)
        h = self._first_linear(zs[0])
        for k, (block, z_chunk) in enumerate(zip(self.blocks, zs[1:])):
            h = block(h, self._condition(z_chunk))
            if k == self.attention_after:
                h = self.attention_layer(h)
        return {"default": tf.tanh(self._output_layer(h))}


def build_toy_module(path: str | os.PathLike, config: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """Saves the toy generator (``TOY_CONFIG`` unless given) as a SavedModel directory for ``hub.load``."""
    module = ToyBigBiGAN(dict(config or TOY_CONFIG), seed)
    tf.saved_model.save(module, os.fspath(path), signatures={"generate": module.generate})
    return Path(path)
