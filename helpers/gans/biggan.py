"""BigGAN generator in the BigGAN-PyTorch layout that the converted BigBiGAN (``BigBiGAN_x1.pth``) uses.

Hierarchical z (one chunk for the first linear, one per block), a shared class embedding concatenated
*before* each z chunk into the conditional BatchNorms, spectral norm with a stored ``u0`` vector
(one power-iteration step per call, ``u0`` updated only in training), stored BN statistics used in
eval, optional self-attention, and a tanh output. BigBiGAN has no real classes: every row of its
embedding is the same vector and ``forward(z)`` always uses class 0. ``BigGAN.bigbigan()`` is the
released 128 px configuration; small configurations of the same class serve as the embedded default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.gans.base import Generator

BOTTOM_WIDTH = 4  # the first linear's output is viewed as (C, 4, 4)
# in/out channel multipliers of the blocks per output resolution (BigGAN-PyTorch's G_arch)
ARCH: dict[int, tuple[list[int], list[int]]] = {
    32: ([4, 4, 4], [4, 4, 4]),
    64: ([16, 16, 8, 4], [16, 8, 4, 2]),
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
}


class SpectralNorm:
    """Mixin: divides the weight by its top singular value, estimated with one power step from ``u0``."""

    def _init_sn(self, n_out: int, eps: float) -> None:
        self.sn_eps = eps
        self.register_buffer("u0", torch.randn(1, n_out))
        self.register_buffer("sv0", torch.ones(1))  # last estimate, for logging only

    def normalized_weight(self) -> Tensor:
        w = self.weight.reshape(self.weight.size(0), -1)  # reshape: weights may be channels_last
        with torch.no_grad():
            v = F.normalize(self.u0 @ w, eps=self.sn_eps)
            u = F.normalize(v @ w.t(), eps=self.sn_eps)
            if self.training:
                self.u0.copy_(u)
        sigma = ((v @ w.t()) @ u.t()).squeeze()
        if self.training:
            self.sv0.copy_(sigma.detach())
        return self.weight / sigma


class SNConv2d(nn.Conv2d, SpectralNorm):
    """Conv2d with BigGAN-PyTorch's spectral norm (buffers ``u0``, ``sv0``)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, bias: bool = True, eps: float = 1e-4):
        super().__init__(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)
        self._init_sn(c_out, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class SNLinear(nn.Linear, SpectralNorm):
    """Linear with BigGAN-PyTorch's spectral norm (buffers ``u0``, ``sv0``)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, eps: float = 1e-4):
        super().__init__(n_in, n_out, bias=bias)
        self._init_sn(n_out, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class ConditionalBN(nn.Module):
    """BatchNorm without affine, then ``x * (1 + gain(y)) + bias(y)`` with spectral-normed linears of y."""

    def __init__(self, channels: int, cond_dim: int, eps: float, sn_eps: float):
        super().__init__()
        self.eps, self.momentum = eps, 0.1
        self.gain = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training, self.momentum, self.eps)
        return out * (1 + self.gain(y))[:, :, None, None] + self.bias(y)[:, :, None, None]


class OutputBN(nn.Module):
    """Plain BatchNorm with ``gain``/``bias`` parameters and stored statistics (the output layer's)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps, self.momentum = eps, 0.1
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training, self.momentum, self.eps
        )


class GBlock(nn.Module):
    """Residual up-block: CBN, ReLU, nearest x2, conv3x3, CBN, ReLU, conv3x3, plus an upsampled 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, bn_eps: float, sn_eps: float):
        super().__init__()
        self.bn1 = ConditionalBN(c_in, cond_dim, bn_eps, sn_eps)
        self.conv1 = SNConv2d(c_in, c_out, 3, eps=sn_eps)
        self.bn2 = ConditionalBN(c_out, cond_dim, bn_eps, sn_eps)
        self.conv2 = SNConv2d(c_out, c_out, 3, eps=sn_eps)
        self.conv_sc = SNConv2d(c_in, c_out, 1, eps=sn_eps)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2))


class Attention(nn.Module):
    """SAGAN self-attention with 2x2 max-pooled keys and values, added with a learned ``gamma``."""

    def __init__(self, ch: int, sn_eps: float):
        super().__init__()
        self.theta = SNConv2d(ch, ch // 8, 1, bias=False, eps=sn_eps)
        self.phi = SNConv2d(ch, ch // 8, 1, bias=False, eps=sn_eps)
        self.g = SNConv2d(ch, ch // 2, 1, bias=False, eps=sn_eps)
        self.o = SNConv2d(ch // 2, ch, 1, bias=False, eps=sn_eps)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).view(b, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).view(b, c // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).view(b, c // 2, h * w // 4)
        beta = F.softmax(theta.transpose(1, 2) @ phi, dim=-1)
        return x + self.gamma * self.o((g @ beta.transpose(1, 2)).view(b, c // 2, h, w))


class BigGAN(Generator):
    """BigGAN-PyTorch generator with hierarchical z and a shared embedding (see the module docstring)."""

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        dim_z: int = 120,
        shared_dim: int = 128,
        n_classes: int = 1000,
        attention: tuple[int, ...] | list[int] = (64,),
        bn_eps: float = 1e-4,
        sn_eps: float = 1e-4,
        output_bn_eps: float = 1e-5,
    ):
        super().__init__()
        if resolution not in ARCH:
            raise ValueError(f"resolution must be one of {sorted(ARCH)}, got {resolution}")
        c_in, c_out = ([m * ch for m in mults] for mults in ARCH[resolution])
        n_slots = len(c_in) + 1
        if dim_z % n_slots:
            raise ValueError(f"dim_z={dim_z} must split into {n_slots} equal chunks at resolution {resolution}")
        block_res = [BOTTOM_WIDTH * 2 ** (i + 1) for i in range(len(c_in))]
        for res in attention:
            if res not in block_res:
                raise ValueError(f"attention at {res} px: blocks output {block_res} px at resolution {resolution}")
            if c_out[block_res.index(res)] < 8:
                raise ValueError(
                    f"attention at {res} px needs >= 8 channels there; ch={ch} gives {c_out[block_res.index(res)]}"
                )
        self.config: dict[str, Any] = dict(
            resolution=resolution,
            ch=ch,
            dim_z=dim_z,
            shared_dim=shared_dim,
            n_classes=n_classes,
            attention=list(attention),
            bn_eps=bn_eps,
            sn_eps=sn_eps,
            output_bn_eps=output_bn_eps,
        )
        self.dim_z, self.resolution = dim_z, resolution
        self.chunk = dim_z // n_slots
        self.shared = nn.Embedding(n_classes, shared_dim)
        self.linear = SNLinear(self.chunk, c_in[0] * BOTTOM_WIDTH**2, eps=sn_eps)
        blocks = []
        for cin, cout, res in zip(c_in, c_out, block_res):
            block = [GBlock(cin, cout, shared_dim + self.chunk, bn_eps, sn_eps)]
            if res in attention:
                block.append(Attention(cout, sn_eps))
            blocks.append(nn.ModuleList(block))
        self.blocks = nn.ModuleList(blocks)
        self.output_layer = nn.Sequential(
            OutputBN(c_out[-1], output_bn_eps), nn.ReLU(), SNConv2d(c_out[-1], 3, 3, eps=sn_eps)
        )

    @classmethod
    def bigbigan(cls) -> BigGAN:
        """The released BigBiGAN generator configuration (128 px, ch 96, dim_z 120, attention at 64)."""
        return cls()

    def _maps(self, z: Tensor, class_index: int = 0, start: int = 0, h: Tensor | None = None):
        """Yields (name, map) for the 4x4 input and every block output, then the image.

        With ``h`` given, it replaces the map after the first ``start`` blocks and only the later blocks run.
        """
        zs = torch.split(z, self.chunk, dim=1)
        y = self.shared(torch.full((z.size(0),), class_index, dtype=torch.long, device=z.device))
        if h is None:
            h = self.linear(zs[0]).view(z.size(0), -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        yield f"res{h.size(-1)}", h
        for blocks, z_chunk in zip(self.blocks[start:], zs[1 + start :]):
            cond = torch.cat([y, z_chunk], dim=1)
            for block in blocks:
                h = block(h, cond)
            yield f"res{h.size(-1)}", h
        yield "image", torch.tanh(self.output_layer(h))

    def forward(self, z: Tensor, class_index: int = 0) -> Tensor:
        """Images in [-1, 1], [B, 3, R, R]; BigBiGAN always uses class 0."""
        for _, h in self._maps(z, class_index):
            pass
        return h

    def features(self, z: Tensor, class_index: int = 0, until: str | None = None) -> OrderedDict[str, Tensor]:
        """res4 (reshaped first linear), the output of every block (after attention) and the image; only up to
        map ``until`` when given (the later blocks do not run)."""
        features = OrderedDict()
        for name, h in self._maps(z, class_index):
            features[name] = h
            if name == until:
                break
        return features

    def synthesis_from(self, name: str, h: Tensor, z: Tensor, class_index: int = 0) -> Tensor:
        """The image G(z) gives when feature ``name`` is replaced by ``h``: only the later blocks run (re-injection)."""
        names = [f"res{BOTTOM_WIDTH * 2**i}" for i in range(len(self.blocks) + 1)]
        if name not in names:
            raise ValueError(f"cannot inject at {name!r}; injectable features: {names}")
        *_, (_, image) = self._maps(z, class_index, names.index(name), h)
        return image


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, sample: Callable[[int], Tensor], n_batches: int = 16) -> None:
    """Standing statistics: resets stored BN stats and sets them to the average over n_batches forwards.

    ``sample(i)`` returns the i-th batch of model inputs. The model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, (ConditionalBN, OutputBN))]
    for m in norms:
        m.stored_mean.zero_()
        m.stored_var.fill_(1)
    sn_layers = [m for m in model.modules() if isinstance(m, SpectralNorm)]
    model.train()
    for m in sn_layers:  # keep u0 as it is: only the statistics may change here
        m.training = False
    for i in range(n_batches):
        for m in norms:
            m.momentum = 1 / (i + 1)  # cumulative average
        model(sample(i))
    for m in norms:
        m.momentum = 0.1
    model.eval()
