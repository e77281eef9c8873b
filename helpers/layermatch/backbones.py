"""A ResNet-style encoder of our own (BasicBlock stages) that returns multi-scale features, and its file format.

Layout: a stem, then four stages of BasicBlocks (two 3x3 conv-BN layers with an identity or 1x1-conv-BN
shortcut); stage widths are ``width * (1, 2, 4, 8)`` and the stem has ``width`` channels. ``forward``
returns an ordered dict ``stem, layer1, layer2, layer3, layer4`` (shallow to deep). Two stems:

* ``"imagenet"``, the usual one: 7x7 conv stride 2 + BN + ReLU (the ``stem`` map), 3x3 max-pool stride 2,
  then stages with strides 1, 2, 2, 2: feature strides 2 / 4 / 8 / 16 / 32.
* ``"small"`` (the default), adapted for 64 px inputs: 3x3 conv stride 1 + BN + ReLU, no max-pool, and every
  stage starts with stride 2: feature strides 1 / 2 / 4 / 8 / 16, so a 64 px image gives 64 / 32 / 16 / 8 / 4 px
  maps, exactly the resolutions of a 64 px generator's res64 … res4 features.

Every strided layer pads so that a map of size n becomes ceil(n / 2): any input size works, odd ones included.
The shortcut of a stage's first block is a 1x1 conv-BN on every second row and column (a strided 1x1 conv).
Images are expected in [-1, 1], the generators' output range. Initialisation: Kaiming-normal (fan-out, ReLU)
convs, BN weight 1 and bias 0. A saved backbone is ``{"format": FORMAT, "class": "ResNetBackbone",
"config": {...}, "state_dict": {...}, "meta": {...}}``, read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.core.io import save_torch
from helpers.core.modules import load_strict

FORMAT = "gan-seg-notebooks/backbone-v1"
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
STEMS = ("imagenet", "small")


class Subsample(nn.Module):
    """Keeps every ``stride``-th row and column (n → ceil(n / stride)): the sampling of a strided 1x1 conv."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[..., :: self.stride, :: self.stride]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between, added to a shortcut (1x1 conv-BN when the shape changes).

    The strided 1x1 shortcut conv is written as Subsample + 1x1 conv (the same function): torch 2.13's CPU
    backward of a strided 1x1 conv corrupts memory on channels-last inputs, such as permuted HWC batches.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(Subsample(stride), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """Stem + four BasicBlock stages; ``forward`` gives the five feature maps named in STAGES (default stem: small)."""

    def __init__(
        self,
        width: int = 64,
        depths: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        stem: str = "small",
        in_channels: int = 3,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if len(depths) != 4 or min(depths) < 1 or width < 1:
            raise ValueError(f"need four stage depths >= 1 and width >= 1, got depths={depths}, width={width}")
        self.config: dict[str, Any] = dict(width=width, depths=list(depths), stem=stem, in_channels=in_channels)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
            self.pool: nn.Module = nn.MaxPool2d(3, 2, 1)
            first_stride, self.strides = 1, [2, 4, 8, 16, 32]
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
            self.pool = nn.Identity()
            first_stride, self.strides = 2, [1, 2, 4, 8, 16]
        self.channels = [width] + [width * m for m in (1, 2, 4, 8)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            c_in, c_out = self.channels[i], self.channels[i + 1]
            stride = first_stride if i == 0 else 2
            self.stages.append(
                nn.Sequential(
                    *[BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1) for j in range(depth)]
                )
            )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stage_sizes(self, size: int) -> list[int]:
        """Side length of each stage's map for a side-``size`` input: repeated ceil(n / 2)."""
        sizes, n = [], size
        for prev, stride in zip([1] + self.strides, self.strides):
            for _ in range(stride.bit_length() - prev.bit_length()):
                n = -(-n // 2)
            sizes.append(n)
        return sizes

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Feature maps stem, layer1 … layer4 (strides in ``self.strides``) of images in [-1, 1]."""
        h = self.stem(x)
        features = OrderedDict(stem=h)
        h = self.pool(h)
        for name, stage in zip(STAGES[1:], self.stages):
            h = stage(h)
            features[name] = h
        return features


def save_backbone(backbone: ResNetBackbone, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Writes a backbone (config, state dict on CPU, meta) atomically; returns the path."""
    obj = {
        "format": FORMAT,
        "class": type(backbone).__name__,
        "config": backbone.config,
        "state_dict": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "meta": meta or {},
    }
    save_torch(obj, path)
    return Path(path)


def read_backbone(path: str | os.PathLike) -> dict[str, Any]:
    """The saved object (format, class, config, state_dict, meta), checked to be a backbone file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("class") != "ResNetBackbone":
        raise ValueError(f"{path} is not a backbone file of format {FORMAT!r}")
    return obj


def load_backbone(path: str | os.PathLike) -> ResNetBackbone:
    """A ResNetBackbone rebuilt from its saved config and loaded strictly."""
    obj = read_backbone(path)
    return load_strict(ResNetBackbone(**obj["config"]), obj["state_dict"], str(path))


DEFAULT_BACKBONE: dict[str, Any] = dict(width=32, depths=[2, 2, 2, 2], stem="small", in_channels=3)
