"""Semantic projection: a lightweight decoder from a frozen generator's feature maps to K-class masks.

The decoder follows the released semantic-projection code (Galeev et al.): a "lateral" block
(3x3 conv → LeakyReLU(0.2) → Dropout(0.1)) turns each generator map of increasing resolution into
``width`` (128) channels; a main chain upsamples bilinearly (align_corners=True), convolves
(3x3 → LeakyReLU(0.2)) and concatenates the next lateral output, prev first; after the finest map, tail
stages upsample up to ``out_resolution`` (the last one with ``width // 2`` channels) and a 3x3 conv gives
the logits, resized bilinearly to the image resolution if they are smaller. Convolutions use the
reference's equalized learning rate (weights stored ~N(0, 1), scaled by 1/sqrt(fan_in) at run time,
biases 0), so Adam at lr 1e-3 behaves as in the reference.

Defaults, chosen to reproduce the reference where it is defined:

* maps: every ``resN`` map with N <= 128 (the reference feeds StyleGAN2's 4…128 px maps; 64 px generators
  give all their maps);
* ``out_resolution = min(image resolution, 4 x finest map)``: 512 for FFHQ (two tail stages 128 → 512,
  then logits resized to 1024, as in the reference); 64 px generators get one tail stage without upsampling.

Unlike the reference, which never calls ``eval()`` and so keeps dropout on while predicting, `predict` puts the
decoder (and generator) in eval mode.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.core.io import save_torch
from helpers.core.modules import load_strict
from helpers.core.runtime import eval_mode
from helpers.gans.base import Generator, to_uint8

MAX_FEATURE_RES = 128  # default: use generator maps up to this resolution (the reference's choice)


DECODER_FORMAT = "gan-seg-notebooks/projection-decoder-v1"


NoiseSeeds = int | Sequence[int] | None


class EqualizedConv2d(nn.Module):
    """A same-padded conv with equalized learning rate: weight ~N(0, 1), scaled by 1/sqrt(fan_in) when used."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = 1 / math.sqrt(c_in * kernel_size * kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)


def _conv_block(c_in: int, c_out: int, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv → LeakyReLU(0.2) (→ Dropout)."""
    layers: list[nn.Module] = [EqualizedConv2d(c_in, c_out), nn.LeakyReLU(0.2)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def feature_resolution(name: str) -> int:
    """The resolution encoded in a feature name ``resN`` (the naming of every helpers.gans generator)."""
    match = re.fullmatch(r"res(\d+)", name)
    if not match:
        raise ValueError(f"feature names must look like 'res64'; got {name!r}")
    return int(match.group(1))


def _upsample(x: Tensor, size: int) -> Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


class SemanticDecoder(nn.Module):
    """Lateral conv blocks on generator maps + concatenate-and-upsample chain → K-class logits (module docstring)."""

    def __init__(
        self,
        channels: Mapping[str, int],
        num_classes: int = 2,
        width: int = 128,
        dropout: float = 0.1,
        out_resolution: int | None = None,
        image_resolution: int | None = None,
    ):
        super().__init__()
        names = list(channels)
        if not names:
            raise ValueError("the decoder needs at least one feature map")
        resolutions = [feature_resolution(n) for n in names]
        if any(b <= a for a, b in zip(resolutions, resolutions[1:])):
            raise ValueError(f"feature maps must be ordered by increasing resolution; got {names}")
        out_resolution = out_resolution or 4 * resolutions[-1]
        n_tail = math.log2(out_resolution / resolutions[-1])
        if n_tail < 0 or n_tail != int(n_tail):
            raise ValueError(
                f"out_resolution {out_resolution} must be the finest map's ({resolutions[-1]}) times a power of two"
            )
        self.config = dict(
            channels=dict(channels),
            num_classes=num_classes,
            width=width,
            dropout=dropout,
            out_resolution=out_resolution,
            image_resolution=image_resolution or out_resolution,
        )
        self.names, self.resolutions = names, resolutions
        self.lateral = nn.ModuleList(_conv_block(channels[n], width, dropout) for n in names)
        self.fuse = nn.ModuleList(_conv_block(width if i == 0 else 2 * width, width) for i in range(len(names) - 1))
        c_in = width if len(names) == 1 else 2 * width
        # one upsampling stage per doubling up to out_resolution, or a single plain stage when there is none
        self.tail_upsamples = [True] * int(n_tail) or [False]
        widths = [width] * (len(self.tail_upsamples) - 1) + [width // 2]
        self.tail = nn.ModuleList(_conv_block(a, b) for a, b in zip([c_in] + widths[:-1], widths))
        self.classifier = EqualizedConv2d(width // 2, num_classes)

    @property
    def num_classes(self) -> int:
        """Number of output classes K."""
        return self.config["num_classes"]

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Logits [B, K, R, R] at the image resolution from a generator's feature dict (extra maps are ignored)."""
        missing = [n for n in self.names if n not in features]
        if missing:
            raise KeyError(f"the decoder needs feature maps {missing}; got {list(features)}")
        x = self.lateral[0](features[self.names[0]])
        for i in range(1, len(self.names)):
            x = self.fuse[i - 1](_upsample(x, self.resolutions[i]))
            x = torch.cat([x, self.lateral[i](features[self.names[i]])], dim=1)
        for upsample, block in zip(self.tail_upsamples, self.tail):
            x = block(_upsample(x, 2 * x.shape[-1]) if upsample else x)
        logits = self.classifier(x)
        size = self.config["image_resolution"]
        return logits if logits.shape[-1] == size else _upsample(logits, size)


def accepts(G: Generator, argument: str) -> bool:
    """Whether ``G.features`` takes ``argument`` (StyleGAN2: noise_seed and truncation; BigGAN: neither)."""
    return argument in inspect.signature(G.features).parameters


def generator_features(
    G: Generator, z: Tensor, noise_seed: NoiseSeeds = None, truncation: float | None = None
) -> OrderedDict[str, Tensor]:
    """G.features(z) with the noise seed(s) and truncation passed to generators that take them (no grad)."""
    kwargs: dict[str, Any] = {}
    for name, value in (("noise_seed", noise_seed), ("truncation", truncation)):
        if value is not None:
            if not accepts(G, name):
                raise ValueError(f"{type(G).__name__}.features takes no {name}; pass None")
            kwargs[name] = value
    with torch.no_grad():
        return G.features(z, **kwargs)


def feature_channels(G: Generator, names: Sequence[str] | None = None) -> OrderedDict[str, int]:
    """Channel count of each named map (default: every ``resN`` with N <= 128), from one G.features call."""
    with eval_mode(G):
        features = generator_features(G, G.sample_z(1, seed=0))
    available = [n for n in features if n != "image"]
    if names is None:
        names = [n for n in available if feature_resolution(n) <= MAX_FEATURE_RES]
    unknown = [n for n in names if n not in features]
    if unknown:
        raise KeyError(f"{type(G).__name__} has no feature maps {unknown}; available: {available}")
    return OrderedDict((n, features[n].shape[1]) for n in names)


def build_decoder(
    G: Generator,
    num_classes: int = 2,
    feature_names: Sequence[str] | None = None,
    width: int = 128,
    dropout: float = 0.1,
) -> SemanticDecoder:
    """A fresh decoder for any helpers.gans generator; output at the image resolution (module docstring)."""
    channels = feature_channels(G, feature_names)
    finest = feature_resolution(next(reversed(channels)))
    return SemanticDecoder(
        channels,
        num_classes,
        width,
        dropout,
        out_resolution=min(G.resolution, 4 * finest),
        image_resolution=G.resolution,
    )


def save_decoder(decoder: SemanticDecoder, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Writes the decoder (config + state dict + meta) atomically."""
    obj = {
        "format": DECODER_FORMAT,
        "config": decoder.config,
        "meta": meta or {},
        "state_dict": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
    }
    save_torch(obj, path)
    return Path(path)


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> SemanticDecoder:
    """Reads a decoder written by save_decoder (weights only), in eval mode."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != DECODER_FORMAT:
        raise ValueError(f"{path} is not a projection decoder file (format {DECODER_FORMAT})")
    decoder = SemanticDecoder(**obj["config"])
    return load_strict(decoder, obj["state_dict"], str(path)).to(device).eval()


@dataclass
class Prediction:
    """Generated images with the decoder's class maps and class probabilities."""

    images: np.ndarray  # uint8 [B, R, R, 3]
    labels: np.ndarray  # uint8 [B, R, R], argmax class
    probs: np.ndarray  # float32 [B, K, R, R], softmax


def _as_z(G: Generator, z: Tensor | np.ndarray) -> Tensor:
    z = torch.as_tensor(np.asarray(z, dtype=np.float32) if isinstance(z, np.ndarray) else z)
    return (z.unsqueeze(0) if z.dim() == 1 else z).to(G.device, torch.float32)


def generate_images(
    G: Generator, z: Tensor | np.ndarray, noise_seed: NoiseSeeds = None, truncation: float | None = None
) -> np.ndarray:
    """uint8 [B, R, R, 3] images of the generator in eval mode for the given inputs."""
    with eval_mode(G):
        return to_uint8(generator_features(G, _as_z(G, z), noise_seed, truncation)["image"])


def predict(
    G: Generator,
    decoder: SemanticDecoder,
    z: Tensor | np.ndarray,
    noise_seed: NoiseSeeds = None,
    truncation: float | None = None,
) -> Prediction:
    """Images, class maps and probabilities for latents; generator and decoder run in eval mode (dropout off)."""
    with eval_mode(G, decoder), torch.no_grad():
        features = generator_features(G, _as_z(G, z), noise_seed, truncation)
        probs = decoder(features).softmax(1)
    return Prediction(to_uint8(features["image"]), probs.argmax(1).byte().cpu().numpy(), probs.float().cpu().numpy())
