"""StyleGAN2 state dicts: rosinality's ``g_ema`` layout ↔ the SAIC ``netGA`` layout our model uses.

The two are a 1:1 re-labelling (docs/reference.md#rosinality-to-saic): rosinality's conv weights carry a leading batch
dim of 1,
its modulation biases include the ``+1`` that SAIC adds explicitly, its noise strengths are [1]
instead of [1, 1, 1, 1], its per-ToRGB upsampling kernels are one shared ``upscale2x.kernel`` in SAIC,
and it stores fixed noise maps (``noises.noise_i``) that SAIC does not. Keys that fit no rule are
passed through unchanged, so that strict loading names them as unexpected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

# kind -> (rosinality -> SAIC, SAIC -> rosinality)
_TRANSFORMS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "same": (lambda v: v, lambda v: v),
    "weight": (lambda v: v.squeeze(0), lambda v: v.unsqueeze(0)),
    "modulation_bias": (lambda v: v - 1, lambda v: v + 1),
    "noise_strength": (lambda v: v.reshape(1, 1, 1, 1), lambda v: v.reshape(1)),
}


def _modulated_conv(ros: str, saic: str) -> list[tuple[str, str, str]]:
    return [
        (f"{ros}.weight", f"{saic}.weight_orig", "weight"),
        (f"{ros}.modulation.weight", f"{saic}.affine.weight_orig", "same"),
        (f"{ros}.modulation.bias", f"{saic}.affine.bias", "modulation_bias"),
    ]


def key_rules(n_mlp: int, n_blocks: int) -> list[tuple[str, str, str]]:
    """(rosinality key, SAIC key, transform kind) for every tensor of a generator with this structure."""
    rules = [("input.input", "constant_tensor", "same")]
    for i in range(1, n_mlp + 1):
        rules += [
            (f"style.{i}.weight", f"mapping.{2 * i - 1}.weight_orig", "same"),
            (f"style.{i}.bias", f"mapping.{2 * i - 1}.bias_orig", "same"),
        ]
    for k in range(n_blocks):
        block = f"blocks.{k}"
        layers = [("conv1", "2")] if k == 0 else [(f"convs.{2 * k - 2}", "1"), (f"convs.{2 * k - 1}", "2")]
        for ros, slot in layers:
            rules += _modulated_conv(f"{ros}.conv", f"{block}.conv{slot}")
            rules += [
                (f"{ros}.noise.weight", f"{block}.addnoise{slot}.scale_factors", "noise_strength"),
                (f"{ros}.activate.bias", f"{block}.bias_act{slot}.bias", "same"),
            ]
            if slot == "1":
                rules.append((f"{ros}.conv.blur.kernel", f"{block}.conv1.blur.kernel", "same"))
        rgb = "to_rgb1" if k == 0 else f"to_rgbs.{k - 1}"
        rules += _modulated_conv(f"{rgb}.conv", f"to_rgbs.{k}.conv1")
        rules.append((f"{rgb}.bias", f"to_rgbs.{k}.bias1.bias", "same"))
        if k > 0:
            rules.append((f"{rgb}.upsample.kernel", "upscale2x.kernel", "same"))
    return rules


def _max_index(keys: Sequence[str], pattern: str) -> int:
    return max((int(m.group(1)) for k in keys if (m := re.match(pattern, k))), default=-1)


def _noise_index(key: str) -> int | None:
    m = re.fullmatch(r"noises\.noise_(\d+)", key)
    return int(m.group(1)) if m else None


def rosinality_to_saic(g_ema: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
    """A rosinality ``g_ema`` state dict as a SAIC ``netGA`` state dict, plus its stored noise maps in order."""
    keys = list(g_ema)
    n_mlp = _max_index(keys, r"style\.(\d+)\.")
    n_blocks = 1 + (_max_index(keys, r"convs\.(\d+)\.") + 1) // 2
    state: dict[str, Tensor] = {}
    used = set()
    for ros, saic, kind in key_rules(n_mlp, n_blocks):
        if ros not in g_ema:
            continue
        value = _TRANSFORMS[kind][0](g_ema[ros])
        if saic in state and not torch.equal(state[saic], value):
            raise ValueError(f"{ros} differs from the other kernels that SAIC stores once as {saic}")
        state[saic] = value
        used.add(ros)
    noise_keys = sorted((k for k in keys if _noise_index(k) is not None), key=_noise_index)
    state.update({k: v for k, v in g_ema.items() if k not in used and k not in noise_keys})
    return state, [g_ema[k] for k in noise_keys]


def default_noises(n_blocks: int, seed: int = 0) -> list[Tensor]:
    """Seeded N(0, 1) maps [1, 1, H, W] for every noise input, like the ones rosinality draws at init."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [4 * 2 ** ((i + 1) // 2) for i in range(2 * n_blocks - 1)]
    return [torch.randn(1, 1, s, s, generator=gen) for s in sizes]


def saic_to_rosinality(netGA: Mapping[str, Tensor], noises: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
    """A SAIC ``netGA`` state dict as a rosinality ``g_ema`` state dict; ``noises`` default to default_noises()."""
    keys = list(netGA)
    n_mlp = (_max_index(keys, r"mapping\.(\d+)\.") + 1) // 2
    n_blocks = 1 + _max_index(keys, r"blocks\.(\d+)\.")
    rules = key_rules(n_mlp, n_blocks)
    g_ema = {ros: _TRANSFORMS[kind][1](netGA[saic]) for ros, saic, kind in rules if saic in netGA}
    known = {saic for _, saic, _ in rules}
    g_ema.update({k: v for k, v in netGA.items() if k not in known})
    noises = default_noises(n_blocks) if noises is None else noises
    g_ema.update({f"noises.noise_{i}": n for i, n in enumerate(noises)})
    return g_ema
