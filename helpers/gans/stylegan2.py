"""StyleGAN2 (config-f and narrower) in pure PyTorch, with the SAIC ``netGA`` parameter names
(docs/reference.md#saic-checkpoint-layout).

Runs on CPU and CUDA without compiled ops: upfirdn2d and the fused bias + leaky ReLU are plain torch.
Equalized LR is an explicit scale on each stored ``weight_orig`` in forward. The style affine follows
SAIC/TF: ``s = A(w) + 1`` with the ``+1`` outside the stored bias. ``latent_avg`` (for truncation) is a
buffer outside the state dict, because SAIC stores it beside ``netGA``.

Noise (one [B, 1, H, W] N(0, 1) map per conv layer) is random on every call unless a seed is given:
an int seeds one generator for the whole batch, a list of B ints seeds each sample on its own, so a
(z, noise seed) pair regenerates the same image and features whatever batch it is in.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.core.modules import CheckpointMismatchError, load_strict
from helpers.gans.base import Generator
from helpers.gans.convert.stylegan2 import rosinality_to_saic

SQRT2 = math.sqrt(2.0)
NoiseSeed = int | Sequence[int] | None


def upfirdn2d(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int]) -> Tensor:
    """Zero-insertion upsampling, padding (same on both axes; negative crops) and a true 2-D FIR convolution."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    if pad[0] == pad[1] >= 0:  # symmetric zero padding: the convolution's own, without a padded copy
        return F.conv2d(x, weight, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), weight, groups=c)


def _in_place(x: Tensor) -> bool:
    """Whether ops may overwrite ``x``, a fresh intermediate: when no gradient is recorded for it."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def bias_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """The fused bias + leaky ReLU(0.2) · √2 op: bias broadcast over dim 1."""
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.dim() - 2)), 0.2) * SQRT2


def _bias_leaky_relu_(x: Tensor, bias: Tensor) -> Tensor:
    """`bias_leaky_relu` overwriting x (same ops, same result, no new buffers) where `_in_place` allows it."""
    if not _in_place(x):
        return bias_leaky_relu(x, bias)
    return F.leaky_relu_(x.add_(bias.view(1, -1, *[1] * (x.dim() - 2))), 0.2).mul_(SQRT2)


class SynthesisTrunk(NamedTuple):
    """The state of a synthesis after its shared layers: the next block, whether that block's convs already
    ran (only its RGB output differs), the feature map and the RGB skip image so far (None before any)."""

    block: int
    block_done: bool
    x: Tensor
    image: Tensor | None


class PixelNorm(nn.Module):
    """Normalizes z to unit mean square over features."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


class MappingLinear(nn.Module):
    """Mapping-network layer: equalized LR on the weight, lr multiplier on weight and bias."""

    def __init__(self, dim: int, lr_mul: float, dim_in: int | None = None):
        super().__init__()
        dim_in = dim_in or dim
        self.weight_orig = nn.Parameter(torch.randn(dim, dim_in) / lr_mul)
        self.bias_orig = nn.Parameter(torch.zeros(dim))
        self.lr_mul = lr_mul
        self.weight_gain = lr_mul / math.sqrt(dim_in)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_orig * self.weight_gain, self.bias_orig * self.lr_mul)


class ScaledLeakyReLU(nn.Module):
    """leaky ReLU(0.2) · √2."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2) * SQRT2


class Affine(nn.Module):
    """Style affine A of a modulated conv: s = A(w) + 1; the stored bias excludes the +1 (SAIC/TF)."""

    def __init__(self, c_in: int, dim_w: int):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(c_in, dim_w))
        self.bias = nn.Parameter(torch.zeros(c_in))
        self.weight_gain = 1 / math.sqrt(dim_w)

    def forward(self, w: Tensor) -> Tensor:
        return F.linear(w, self.weight_orig * self.weight_gain, self.bias) + 1


class FirKernel(nn.Module):
    """Holds the [1, 3, 3, 1]⊗[1, 3, 3, 1] FIR kernel, normalized to sum 4 (gain for ×2 upsampling)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", torch.outer(k, k) / 64 * 4)


class Blur(FirKernel):
    """Low-pass after the stride-2 transposed conv: (2H + 1) → 2H."""

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=1, pad=(1, 1))


class Upscale2x(FirKernel):
    """FIR ×2 upsampling of the RGB skip: H → 2H."""

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=(2, 1))


class ModulatedConv(nn.Module):
    """Modulated (and optionally demodulated, ×2-upsampling) conv; the style scales the input channels."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, dim_w: int, demodulate: bool = True, upsample: bool = False
    ):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size))
        self.affine = Affine(c_in, dim_w)
        self.blur = Blur() if upsample else None
        self.demodulate = demodulate
        self.weight_gain = 1 / math.sqrt(c_in * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        s = self.affine(w)
        weight = self.weight_orig * self.weight_gain
        x = x * s[:, :, None, None]
        if self.blur is not None:
            x = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            d = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).T + 1e-8)[:, :, None, None]
            x = x.mul_(d) if _in_place(x) and not d.requires_grad else x * d
        return x


class AddNoise(nn.Module):
    """x + strength · noise with one learned strength for all channels."""

    def __init__(self):
        super().__init__()
        self.scale_factors = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        if _in_place(x) and not self.scale_factors.requires_grad:
            return x.add_(self.scale_factors * noise)
        return x + self.scale_factors * noise


def _clamp(x: Tensor, clamp: float | None) -> Tensor:
    """x clamped to [-clamp, clamp] (StyleGAN2-ADA's ``conv_clamp``), or x itself for None."""
    if clamp is None:
        return x
    return x.clamp_(-clamp, clamp) if _in_place(x) else x.clamp(-clamp, clamp)


class BiasAct(nn.Module):
    """Per-channel bias then leaky ReLU · √2, then the optional clamp."""

    def __init__(self, channels: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: Tensor) -> Tensor:
        if self.bias.requires_grad and torch.is_grad_enabled():
            return _clamp(bias_leaky_relu(x, self.bias), self.clamp)
        return _clamp(_bias_leaky_relu_(x, self.bias), self.clamp)


class Bias(nn.Module):
    """Per-channel bias of the ToRGB output, then the optional clamp."""

    def __init__(self, channels: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.clamp = clamp

    def forward(self, x: Tensor) -> Tensor:
        return _clamp(x + self.bias, self.clamp)


class SynthesisBlock(nn.Module):
    """One resolution: [upsampling conv1, noise, act] (not in block 0), then conv2, noise, act."""

    def __init__(self, c_in: int, c_out: int, dim_w: int, first: bool, clamp: float | None = None):
        super().__init__()
        if not first:
            self.conv1 = ModulatedConv(c_in, c_out, 3, dim_w, upsample=True)
            self.addnoise1 = AddNoise()
            self.bias_act1 = BiasAct(c_out, clamp)
        self.conv2 = ModulatedConv(c_out, c_out, 3, dim_w)
        self.addnoise2 = AddNoise()
        self.bias_act2 = BiasAct(c_out, clamp)
        self.first = first

    def forward(self, x: Tensor, ws: Sequence[Tensor], noise: Sequence[Tensor]) -> Tensor:
        if not self.first:
            x = self.bias_act1(self.addnoise1(self.conv1(x, ws[0]), noise[0]))
        return self.bias_act2(self.addnoise2(self.conv2(x, ws[-1]), noise[-1]))


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation, plus bias."""

    def __init__(self, c_in: int, dim_w: int, clamp: float | None = None):
        super().__init__()
        self.conv1 = ModulatedConv(c_in, 3, 1, dim_w, demodulate=False)
        self.bias1 = Bias(3, clamp)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.bias1(self.conv1(x, w))


def stylegan2_channels(resolution: int, fmap_base: int, fmap_max: int) -> list[int]:
    """Widths of blocks 4 px … resolution: min(fmap_base // 2**(log2 res − 1), fmap_max)."""
    return [min(fmap_base // 2 ** (r - 1), fmap_max) for r in range(2, int(math.log2(resolution)) + 1)]


class StyleGAN2(Generator):
    """StyleGAN2 generator with skip ToRGBs; ``features`` are each block's output after its last activation.

    Beyond config-f, for StyleGAN2-ADA networks (helpers.gans.convert.ada_pickle): ``conv_clamp`` clamps every
    conv layer's activations and every RGB output to [-conv_clamp, conv_clamp] (ADA trains with 256); a
    class-conditional network (``c_dim`` classes) embeds class ``class_index`` and feeds it to the mapping
    network beside z, so every image is of that class; ``source`` records the file format it came from.
    """

    def __init__(
        self,
        resolution: int,
        dim_z: int = 512,
        n_mlp: int = 8,
        fmap_base: int = 16384,
        fmap_max: int = 512,
        truncation_psi: float = 0.5,
        lr_mul: float = 0.01,
        conv_clamp: float | None = None,
        c_dim: int = 0,
        class_index: int = 0,
        source: str = "",
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of 2 >= 8, got {resolution}")
        channels = stylegan2_channels(resolution, fmap_base, fmap_max)
        if min(channels) < 1:
            raise ValueError(f"fmap_base={fmap_base} gives zero channels at {resolution} px")
        self.config = dict(
            resolution=resolution,
            dim_z=dim_z,
            n_mlp=n_mlp,
            fmap_base=fmap_base,
            fmap_max=fmap_max,
            truncation_psi=truncation_psi,
            lr_mul=lr_mul,
            conv_clamp=conv_clamp,
            c_dim=c_dim,
            class_index=class_index,
            source=source,
        )
        if c_dim and not 0 <= class_index < c_dim:
            raise ValueError(f"class_index must lie in [0, {c_dim}) for a {c_dim}-class generator; got {class_index}")
        self.resolution, self.dim_z, self.channels = resolution, dim_z, channels
        self.n_styles, self.n_noises = 2 * len(channels), 2 * len(channels) - 1

        self.constant_tensor = nn.Parameter(torch.randn(1, channels[0], 4, 4))
        mapping: list[nn.Module] = [PixelNorm()]
        for i in range(n_mlp):  # a class embedding doubles the first layer's input
            mapping += [MappingLinear(dim_z, lr_mul, 2 * dim_z if c_dim and i == 0 else dim_z), ScaledLeakyReLU()]
        self.mapping = nn.Sequential(*mapping)
        self.embed = MappingLinear(dim_z, 1.0, c_dim) if c_dim else None
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels[max(k - 1, 0)], c, dim_z, k == 0, conv_clamp) for k, c in enumerate(channels)
        )
        self.to_rgbs = nn.ModuleList(ToRGB(c, dim_z, conv_clamp) for c in channels)
        self.upscale2x = Upscale2x()
        self.register_buffer("latent_avg", torch.full((dim_z,), math.nan), persistent=False)

    def mapping_forward(self, z: Tensor) -> Tensor:
        """w = mapping(z), [B, dim_z], before truncation (for a class-conditional network: of class_index)."""
        if self.embed is None:
            return self.mapping(z)
        c = F.one_hot(torch.tensor(self.config["class_index"], device=z.device), self.config["c_dim"]).to(z.dtype)
        y = self.mapping[0](self.embed(c[None]).expand(z.shape[0], -1))
        return self.mapping[1:](torch.cat([self.mapping[0](z), y], 1))

    def truncate(self, w: Tensor, psi: float) -> Tensor:
        """w ← latent_avg + ψ (w − latent_avg); ψ = 1 leaves w unchanged."""
        if psi == 1:
            return w
        if torch.isnan(self.latent_avg).any():
            raise RuntimeError("latent_avg is unknown: load a checkpoint with one or call estimate_latent_avg()")
        return self.latent_avg + psi * (w - self.latent_avg)

    def styles(self, z: Tensor, truncation: float | None = None) -> Tensor:
        """Truncated w for z; truncation None means the configured ψ in eval mode and none while training."""
        psi = truncation if truncation is not None else (1.0 if self.training else self.config["truncation_psi"])
        return self.truncate(self.mapping_forward(z), psi)

    def make_noise(self, batch: int, noise_seed: NoiseSeed = None) -> list[Tensor]:
        """One [batch, 1, H, W] map per conv layer: random, from one seed, or from one seed per sample."""
        device, dtype = self.constant_tensor.device, self.constant_tensor.dtype
        sizes = [4 * 2 ** ((i + 1) // 2) for i in range(self.n_noises)]
        if noise_seed is None:
            return [torch.randn(batch, 1, s, s, device=device, dtype=dtype) for s in sizes]
        if isinstance(noise_seed, numbers.Integral):
            gens, per_gen = [torch.Generator().manual_seed(int(noise_seed))], batch
        else:
            if len(noise_seed) != batch:
                raise ValueError(f"{len(noise_seed)} noise seeds for a batch of {batch}")
            gens, per_gen = [torch.Generator().manual_seed(int(s)) for s in noise_seed], 1
        return [torch.cat([torch.randn(per_gen, 1, s, s, generator=g) for g in gens]).to(device, dtype) for s in sizes]

    def _synthesize(
        self,
        ws: Tensor,
        noise: Sequence[Tensor],
        keep: bool,
        inject: tuple[int, Tensor] | None = None,
        until: str | None = None,
    ) -> tuple[Tensor, OrderedDict]:
        if ws.dim() == 2:
            ws = ws.unsqueeze(1).expand(-1, self.n_styles, -1)
        if ws.shape[1] != self.n_styles or len(noise) != self.n_noises:
            raise ValueError(
                f"need {self.n_styles} styles and {self.n_noises} noise maps, got {ws.shape[1]} and {len(noise)}"
            )
        x = self.constant_tensor.expand(ws.shape[0], -1, -1, -1)
        image, features = None, OrderedDict()
        for k, (block, to_rgb) in enumerate(zip(self.blocks, self.to_rgbs)):
            if inject is not None and k == inject[0]:  # this block's output is given
                x = inject[1]
            else:
                layers = range(max(2 * k - 1, 0), 2 * k + 1)  # style and noise indices of the block's convs
                x = block(x, [ws[:, i] for i in layers], [noise[i] for i in layers])
            rgb = to_rgb(x, ws[:, 2 * k + 1])
            image = rgb if image is None else self.upscale2x(image) + rgb
            if keep:
                features[f"res{x.shape[-1]}"] = x
            if until == f"res{x.shape[-1]}":  # the later blocks are not needed
                return image, features
        if not self.training:  # images in [-1, 1], as SAIC's conversion to pixels clips; training keeps raw values
            image = image.clamp(-1, 1)
        features["image"] = image
        return image, features

    def synthesis(self, ws: Tensor, noise: Sequence[Tensor]) -> Tensor:
        """Image from w ([B, dim_z], or [B, n_styles, dim_z] per layer) and make_noise-style noise maps."""
        return self._synthesize(ws, noise, keep=False)[0]

    def synthesis_trunk(self, ws: Tensor, noise: Sequence[Tensor], first_style: int) -> SynthesisTrunk:
        """The layers before style ``first_style`` run on styles ws [B, n_styles, dim_z]: what every styles that
        agree with ws below ``first_style`` share (`synthesis_finish` completes the image for such styles)."""
        x, image, k, block_done = self.constant_tensor.expand(ws.shape[0], -1, -1, -1), None, 0, False
        for k, (block, to_rgb) in enumerate(zip(self.blocks, self.to_rgbs)):
            layers = range(max(2 * k - 1, 0), 2 * k + 1)  # style and noise indices of the block's convs
            if layers[-1] >= first_style:
                break
            x = block(x, [ws[:, i] for i in layers], [noise[i] for i in layers])
            if 2 * k + 1 >= first_style:  # the block is shared, its RGB output is not
                block_done = True
                break
            rgb = to_rgb(x, ws[:, 2 * k + 1])
            image = rgb if image is None else self.upscale2x(image) + rgb
        else:
            k = len(self.blocks)
        return SynthesisTrunk(k, block_done, x, image)

    def synthesis_finish(self, trunk: SynthesisTrunk, styles: Tensor, noise: Sequence[Tensor]) -> Tensor:
        """``synthesis(styles, noise)`` from a `synthesis_trunk` of styles that agree with ``styles`` up to there."""
        x, image = trunk.x, trunk.image
        for k in range(trunk.block, len(self.blocks)):
            layers = range(max(2 * k - 1, 0), 2 * k + 1)
            if not (k == trunk.block and trunk.block_done):
                x = self.blocks[k](x, [styles[:, i] for i in layers], [noise[i] for i in layers])
            rgb = self.to_rgbs[k](x, styles[:, 2 * k + 1])
            image = rgb if image is None else self.upscale2x(image) + rgb
        return image if self.training else image.clamp(-1, 1)

    def synthesis_pair(
        self, ws: Tensor, moved: Tensor, noise: Sequence[Tensor], first_style: int
    ) -> tuple[Tensor, Tensor]:
        """``synthesis(ws, noise)`` and ``synthesis(moved, noise)`` for per-layer styles that differ only from style
        ``first_style`` on: the layers before it run once for both, the rest for each (so a backward pass from
        the moved image only goes through the layers its styles change)."""
        trunk = self.synthesis_trunk(ws, noise, first_style)
        return self.synthesis_finish(trunk, ws, noise), self.synthesis_finish(trunk, moved, noise)

    def synthesis_features(
        self, ws: Tensor, noise: Sequence[Tensor], until: str | None = None
    ) -> OrderedDict[str, Tensor]:
        """Like synthesis, but every block's output (res4 … resR) and the image; with ``until`` (a block's name)
        the outputs up to that block only."""
        return self._synthesize(ws, noise, keep=True, until=until)[1]

    def _noise(self, z: Tensor, noise_seed: NoiseSeed, noise: Sequence[Tensor] | None) -> Sequence[Tensor]:
        if noise is not None and noise_seed is not None:
            raise ValueError("pass noise_seed or noise, not both")
        return noise if noise is not None else self.make_noise(z.shape[0], noise_seed)

    def forward(
        self,
        z: Tensor,
        noise_seed: NoiseSeed = None,
        truncation: float | None = None,
        noise: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Image [B, 3, R, R] (no tanh; clamped to [-1, 1] in eval mode); noise from noise_seed or given."""
        return self.synthesis(self.styles(z, truncation), self._noise(z, noise_seed, noise))

    def render(self, z: Tensor, noise_seeds: Sequence[int]) -> Tensor:
        """G(z) with sample i's noise maps drawn from ``noise_seeds[i]``."""
        return self(z, noise_seed=list(noise_seeds))

    def pair(self, z: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and G(z + shift) in one forward, with one random set of noise maps per sample used by both."""
        noise = [torch.cat([n, n]) for n in self.make_noise(z.shape[0])]
        return self(torch.cat([z, z + shift]), noise=noise).chunk(2)

    def features(
        self,
        z: Tensor,
        noise_seed: NoiseSeed = None,
        truncation: float | None = None,
        noise: Sequence[Tensor] | None = None,
        until: str | None = None,
    ) -> OrderedDict[str, Tensor]:
        """Block outputs res4 … resR (after the block's second activation), then "image"; only up to block
        ``until`` when given (the same maps, without running the later blocks)."""
        return self.synthesis_features(self.styles(z, truncation), self._noise(z, noise_seed, noise), until)

    def synthesis_from(
        self,
        name: str,
        x: Tensor,
        z: Tensor,
        noise_seed: NoiseSeed = None,
        truncation: float | None = None,
        noise: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """The image G(z) gives when block output ``name`` is replaced by ``x`` (re-injection).

        The injected map goes through its own ToRGB and every later block; the RGB skip of the earlier
        blocks is the generator's own for (z, noise). Noise and truncation work as in ``forward``.
        """
        names = [f"res{4 * 2**k}" for k in range(len(self.blocks))]
        if name not in names:
            raise ValueError(f"cannot inject at {name!r}; injectable features: {names}")
        ws, noise = self.styles(z, truncation), self._noise(z, noise_seed, noise)
        return self._synthesize(ws, noise, keep=False, inject=(names.index(name), x))[0]

    @torch.no_grad()
    def estimate_latent_avg(self, n: int = 4096, seed: int = 0) -> Tensor:
        """Sets latent_avg to the mean of mapping(z) over n seeded z (for models without a stored one)."""
        z = self.sample_z(n, seed)
        self.latent_avg.copy_(torch.cat([self.mapping_forward(c) for c in z.split(1024)]).mean(0))
        return self.latent_avg.clone()

    def saic_checkpoint(self) -> dict[str, Tensor | dict[str, Tensor]]:
        """{'netGA': state dict, 'latent_avg': tensor} on CPU, the layout SAIC's code loads."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {"netGA": state, "latent_avg": self.latent_avg.detach().cpu()}

    @classmethod
    def from_checkpoint(
        cls, obj: Mapping[str, Any], source: str = "checkpoint", truncation_psi: float = 0.5
    ) -> StyleGAN2:
        """Model in eval mode from SAIC {'netGA', 'latent_avg'} or rosinality {'g_ema', ...}, loaded strictly."""
        if "netGA" in obj:
            state = dict(obj["netGA"])
        elif "g_ema" in obj:
            state = rosinality_to_saic(obj["g_ema"])[0]
        else:
            raise CheckpointMismatchError(
                f"{source} has neither 'netGA' (SAIC) nor 'g_ema' (rosinality): {sorted(obj)[:10]}"
            )
        model = cls(**infer_config(state, source), truncation_psi=truncation_psi)
        load_strict(model, state, source)
        avg = None if obj.get("latent_avg") is None else torch.as_tensor(obj["latent_avg"])
        if avg is None:
            warnings.warn(f"{source} has no latent_avg; estimating it from 4096 samples of mapping(z)")
            model.estimate_latent_avg()
        elif avg.numel() != model.dim_z:
            raise CheckpointMismatchError(
                f"{source}: latent_avg has shape {tuple(avg.shape)}, expected ({model.dim_z},)"
            )
        else:
            model.latent_avg.copy_(avg.reshape(-1))
        return model.eval()


def _max_index(state: Mapping[str, Tensor], prefix: str) -> int:
    return max((int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))), default=-1)


def infer_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, int]:
    """resolution, dim_z, n_mlp, fmap_base, fmap_max of a SAIC state dict, from its keys and shapes."""
    n_blocks = 1 + _max_index(state, "blocks")
    needed = ["mapping.1.weight_orig"] + [f"blocks.{k}.bias_act2.bias" for k in range(n_blocks)]
    missing = [k for k in needed if k not in state]
    if n_blocks < 2 or missing:
        raise CheckpointMismatchError(
            f"{source}: cannot infer the StyleGAN2 configuration; {n_blocks} blocks, missing {missing}"
        )
    channels = [state[f"blocks.{k}.bias_act2.bias"].shape[0] for k in range(n_blocks)]
    fmap_max = channels[0]
    narrower = [(r, c) for r, c in enumerate(channels, start=2) if c < fmap_max]
    fmap_base = narrower[0][1] * 2 ** (narrower[0][0] - 1) if narrower else fmap_max * 2 ** len(channels)
    return dict(
        resolution=2 ** (n_blocks + 1),
        dim_z=state["mapping.1.weight_orig"].shape[1],
        n_mlp=(_max_index(state, "mapping") + 1) // 2,
        fmap_base=fmap_base,
        fmap_max=fmap_max,
    )
