"""Segmentation models on an encoder backbone, for few-label fine-tuning after pre-training.

``SegmentationModel`` is the backbone plus a ``UNetDecoder``: from the deepest stage up, upsample to the
next shallower stage's size, concatenate it, one 3x3 conv-BN-ReLU with that stage's width; a 1x1 conv to the
classes; bilinear resize to the input size. Inputs in [-1, 1], logits [B, n_classes, H, W]: it fits
``helpers.segmentation.SegmentationTrainer`` as is. ``comparison_models`` builds the random / LayerMatch /
autoencoder arms with identical decoder initialisations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.layermatch.backbones import DEFAULT_BACKBONE, ResNetBackbone, load_backbone, read_backbone


class UNetDecoder(nn.Module):
    """Light U-Net decoder over the backbone stages: per level upsample, concatenate the skip, conv-BN-ReLU."""

    def __init__(self, channels: list[int], n_classes: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        c = channels[-1]
        for skip in reversed(channels[:-1]):
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(c + skip, skip, 3, padding=1, bias=False), nn.BatchNorm2d(skip), nn.ReLU(inplace=True)
                )
            )
            c = skip
        self.classifier = nn.Conv2d(c, n_classes, 1)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        maps = list(features.values())
        h = maps[-1]
        for block, skip in zip(self.blocks, reversed(maps[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return self.classifier(h)


class SegmentationModel(nn.Module):
    """Backbone + UNetDecoder: images [B, 3, H, W] in [-1, 1] → logits [B, n_classes, H, W]."""

    def __init__(self, backbone: ResNetBackbone, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.decoder = UNetDecoder(backbone.channels, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.decoder(self.backbone(x))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def build_segmentation_model(
    n_classes: int,
    backbone: str | os.PathLike | None = None,
    backbone_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> SegmentationModel:
    """A segmentation model on a saved backbone, or a random one (``backbone`` None); decoder init from seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = (
            ResNetBackbone(**{**DEFAULT_BACKBONE, **(backbone_config or {})})
            if backbone is None
            else load_backbone(backbone)
        )
        torch.manual_seed(seed + 1)
        return SegmentationModel(encoder, n_classes)


def comparison_models(
    n_classes: int,
    arms: Mapping[str, str | os.PathLike | None],
    backbone_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, SegmentationModel]:
    """One model per arm, e.g. {"random": None, "layermatch": path, "autoencoder": path}, with identical decoders.

    A random arm uses ``backbone_config``, or else the saved arms' common configuration; saved backbones must
    all share one configuration so that only their weights differ.
    """
    configs = {name: read_backbone(path)["config"] for name, path in arms.items() if path is not None}
    if backbone_config is not None:
        configs["requested"] = {**DEFAULT_BACKBONE, **backbone_config}
    if len({json.dumps(c, sort_keys=True) for c in configs.values()}) > 1:
        raise ValueError(f"the backbone configurations differ: {configs}")
    backbone_config = next(iter(configs.values()), backbone_config)
    return {name: build_segmentation_model(n_classes, path, backbone_config, seed) for name, path in arms.items()}
