"""Reading and writing model checkpoints: ours, the released BigBiGAN file, SAIC and rosinality StyleGAN2, and
StyleGAN2-ADA network pickles (``.pkl``, `helpers.gans.convert.ada_pickle`).

Everything is read with ``torch.load(weights_only=True)`` (network pickles with a restricted unpickler of the same
spirit): a checkpoint can hold tensors, numbers, strings and containers, never code. Our own format is
``{"format": FORMAT, "class": "BigGAN" | "StyleGAN2" | "LatentEncoder", "config": {...}, "state_dict": {...},
"buffers": {...}, "meta": {...}}`` where ``buffers`` carries non-persistent tensors such as
StyleGAN2's ``latent_avg``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.core.io import save_torch
from helpers.core.modules import load_strict
from helpers.core.paths import resolve, weights_dir
from helpers.gans.base import Generator, prefer_channels_last
from helpers.gans.biggan import ARCH, BOTTOM_WIDTH, BigGAN
from helpers.gans.convert.ada_pickle import NetworkPickleError, load_generator
from helpers.gans.encoder import LatentEncoder
from helpers.gans.stylegan2 import StyleGAN2

FORMAT = "gan-seg-notebooks/generator-v1"
CLASSES: dict[str, type[nn.Module]] = {"BigGAN": BigGAN, "StyleGAN2": StyleGAN2, "LatentEncoder": LatentEncoder}

# Names that ``load`` understands, relative to the weights folder.
KNOWN_FILES = {
    "default-biggan": "default_biggan.pt",
    "default-stylegan2": "default_stylegan2.pt",
    "default-biggan-encoder": "default_biggan_encoder.pt",
    "bigbigan": "BigBiGAN_x1.pth",
    "stylegan2-ffhq": "ffhq.tar",
    "stylegan2-cars": "cars.tar",
    "stylegan2-ada-ffhq": "stylegan2-ada-ffhq.pkl",
}


class CheckpointError(ValueError):
    """A file is missing, unreadable or not a generator checkpoint; the message names the file."""


def save_model(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Writes our checkpoint format atomically (state dict on CPU, ``model.config``, non-persistent buffers, meta)."""
    persistent = set(model.state_dict())
    buffers = {k: v.detach().cpu() for k, v in model.named_buffers() if k not in persistent}
    obj = {
        "format": FORMAT,
        "class": type(model).__name__,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "buffers": buffers,
        "meta": meta or {},
    }
    save_torch(obj, path)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True and an error that names the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # rosinality's train.py stores its args
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or pickled code
        raise CheckpointError(f"could not read {path} as a torch checkpoint: {type(err).__name__}: {err}") from err


def infer_biggan_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """BigGAN constructor arguments from a plain state dict's shapes (eps values: the BigBiGAN port's)."""
    n_blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    n_classes, shared_dim = state["shared.weight"].shape
    chunk = state["linear.weight"].shape[1]
    resolution = BOTTOM_WIDTH * 2**n_blocks
    if resolution not in ARCH:
        raise CheckpointError(f"a BigGAN state dict with {n_blocks} blocks ({resolution} px) is not a known layout")
    ch = state["output_layer.0.gain"].shape[0] // ARCH[resolution][1][-1]
    attention = [BOTTOM_WIDTH * 2 ** (i + 1) for i in range(n_blocks) if f"blocks.{i}.1.gamma" in state]
    return dict(
        resolution=resolution,
        ch=ch,
        dim_z=chunk * (n_blocks + 1),
        shared_dim=shared_dim,
        n_classes=n_classes,
        attention=attention,
    )


def _plain_biggan(state: dict[str, torch.Tensor], source: str) -> BigGAN:
    try:
        config = infer_biggan_config(state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(
            f"{source} looks like a BigGAN state dict but lacks what its layout needs ({type(err).__name__}: {err})"
        ) from None
    model = BigGAN(**config)
    expected = model.state_dict()
    # The conversion never produced the logging buffers sv0; fill them so that strict loading works.
    state = {**{k: v for k, v in expected.items() if k.endswith(".sv0")}, **state}
    return load_strict(model, state, source)


def _from_ours(obj: dict[str, Any], source: str) -> nn.Module:
    """Our format: the recorded class built from its config, loaded strictly; each problem is named with the file."""
    missing = [key for key in ("class", "config", "state_dict") if key not in obj]
    if missing:
        raise CheckpointError(f"{source}: a {FORMAT} checkpoint without {missing}")
    name, config = obj["class"], obj["config"]
    if name not in CLASSES:
        raise CheckpointError(f"{source}: unknown generator class {name!r}; known: {sorted(CLASSES)}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: config is a {type(config).__name__}, not a dict of {name} arguments")
    parameters = inspect.signature(CLASSES[name]).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [] if open_ended else sorted(set(config) - set(parameters))
    absent = [
        p
        for p, spec in parameters.items()
        if spec.default is inspect.Parameter.empty and spec.kind is spec.POSITIONAL_OR_KEYWORD and p not in config
    ]
    if unknown or absent:
        problems = ([f"unknown keys {unknown}"] if unknown else []) + ([f"no {absent}"] if absent else [])
        raise CheckpointError(
            f"{source}: its config does not fit the recorded class {name} ({'; '.join(problems)}); "
            f"{name} takes {list(parameters)}"
        )
    try:
        model = CLASSES[name](**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {name} cannot be built from its config {config}: {err}") from None
    load_strict(model, obj["state_dict"], source)
    buffers = dict(model.named_buffers())
    for key, value in obj.get("buffers", {}).items():
        if key not in buffers:
            raise CheckpointError(f"{source}: buffer {key!r} is not a buffer of {name}; it has {sorted(buffers)}")
        if not isinstance(value, torch.Tensor) or value.shape != buffers[key].shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"{source}: buffer {key!r} is {found}; {name} with this config needs {tuple(buffers[key].shape)}"
            )
        buffers[key].copy_(value)
    return model


def from_object(obj: Any, source: str) -> nn.Module:
    """Builds the right model for a loaded checkpoint object (see the module docstring for formats)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_ours(obj, source)
    if isinstance(obj, dict) and ("netGA" in obj or "g_ema" in obj):
        return StyleGAN2.from_checkpoint(obj, source)
    if isinstance(obj, dict) and "shared.weight" in obj and "linear.weight" in obj:
        return _plain_biggan(obj, source)
    keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{source} is not a generator checkpoint this project knows (ours, a BigGAN state dict, "
        f"SAIC {{'netGA', 'latent_avg'}} or rosinality {{'g_ema', ...}}); it holds: {keys}"
    )


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A known name (see KNOWN_FILES) in the weights folder, or a path (relative ones: from the repository root, as
    every path parameter of the notebooks, whatever the working directory)."""
    if str(name_or_path) in KNOWN_FILES:
        return weights_dir() / KNOWN_FILES[str(name_or_path)]
    return resolve(name_or_path)


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Reads a checkpoint, builds the matching model (a Generator or an encoder), loads it strictly, in eval mode;
    a generator on a CPU gets channels-last weights (`prefer_channels_last`)."""
    path = resolve_checkpoint(name_or_path)
    if not path.exists():
        hint = " (run download_all.sh for released weights)" if str(name_or_path) in KNOWN_FILES else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    if path.suffix == ".pkl":
        try:
            model = load_generator(path).to(device).eval()
        except NetworkPickleError as err:
            raise CheckpointError(str(err)) from None
    else:
        model = from_object(read_checkpoint(path), str(path)).to(device).eval()
    return prefer_channels_last(model) if isinstance(model, Generator) else model
