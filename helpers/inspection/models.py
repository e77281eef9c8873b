"""Any segmentation model the project trains or the Big GANs paper released, rebuilt from its weights alone.

`load_model(source)` takes

* a notebook's output folder whose ``metrics.json`` names its final model under ``final_model`` (notebooks 04, 05),
  by path or by its name in the results folder;
* a trainer run folder (its ``checkpoint.pt``, `helpers.segmentation.SegmentationTrainer`);
* a state-dict file: a released ``u_net_*.pth``, a trainer's export, or a ``checkpoint.pt``.

The architecture is read from the state dict's keys and shapes: the U-Net of `helpers.segmentation.unet` (width
from the first convolution, classes from the last) or LayerMatch's backbone + decoder (`helpers.layermatch.models`:
width, stem and stage depths from the backbone's keys). Either is loaded strictly; anything else is refused with
the file named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from helpers.core.modules import load_strict, weights_fingerprint
from helpers.core.paths import resolve
from helpers.layermatch.backbones import ResNetBackbone
from helpers.layermatch.models import SegmentationModel
from helpers.segmentation import UNet

CHECKPOINT = "checkpoint.pt"


class InspectedModel(NamedTuple):
    """A model in eval mode, what it is, and where its weights came from."""

    model: nn.Module
    architecture: str
    path: Path
    fingerprint: str  # `helpers.core.modules.weights_fingerprint`


def find_weights(source: str | os.PathLike, results: Path | None = None) -> Path:
    """The weights file behind ``source``: a file itself, a run folder's checkpoint, or a notebook's final model;
    a name that is not a path may name a run of the ``results`` folder (e.g. ``04_unsupervised_segmentation``)."""
    path = resolve(source)
    if not path.exists() and results is not None and (results / source).exists():
        path = results / source
    if path.is_file():
        return path
    if (path / CHECKPOINT).is_file():
        return path / CHECKPOINT
    metrics = path / "metrics.json"
    if metrics.is_file():
        final = json.loads(metrics.read_text()).get("final_model")
        if final:
            return find_weights(final)
        raise ValueError(f"{metrics} names no final_model: point at a run folder or weights file instead")
    raise FileNotFoundError(f"{path}: no weights file, {CHECKPOINT} or metrics.json with a final_model")


def _backbone_config(state: dict[str, Tensor]) -> dict:
    stem = state["backbone.stem.0.weight"]
    depths = [len({key.split(".")[3] for key in state if key.startswith(f"backbone.stages.{i}.")}) for i in range(4)]
    stem_kind = "imagenet" if stem.shape[-1] == 7 else "small"
    return dict(width=stem.shape[0], depths=depths, stem=stem_kind, in_channels=stem.shape[1])


def model_from_state(state: dict[str, Tensor], source: str) -> tuple[nn.Module, str]:
    """The module whose strict load takes ``state``, and a one-line description of it."""
    if "inc.double_conv.0.weight" in state and "outc.conv.weight" in state:
        width, classes = state["inc.double_conv.0.weight"].shape[0], state["outc.conv.weight"].shape[0]
        model = UNet(n_channels=state["inc.double_conv.0.weight"].shape[1], n_classes=classes, width=width)
        return load_strict(model, state, source), f"U-Net, width {width}, {classes} classes"
    if "backbone.stem.0.weight" in state and "decoder.classifier.weight" in state:
        config = _backbone_config(state)
        classes = state["decoder.classifier.weight"].shape[0]
        model = SegmentationModel(ResNetBackbone(**config), classes)
        described = f"ResNet backbone (width {config['width']}, depths {config['depths']}) + U-Net decoder"
        return load_strict(model, state, source), f"{described}, {classes} classes"
    raise ValueError(f"{source}: not a U-Net or LayerMatch segmentation state dict (keys {sorted(state)[:4]} ...)")


def load_model(
    source: str | os.PathLike, device: str | torch.device = "cpu", results: Path | None = None
) -> InspectedModel:
    """The model behind ``source`` (module docstring, `find_weights`), strictly loaded, in eval mode on ``device``."""
    path = find_weights(source, results)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj["model"] if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a trainer checkpoint, got {type(state).__name__}")
    model, architecture = model_from_state(state, str(path))
    return InspectedModel(model.to(device).eval(), architecture, path, weights_fingerprint(model))


def synthetic_shards(weights: Path) -> Path | None:
    """The synthetic pairs the model of ``weights`` learnt from, found in the folders above it (up to its
    notebook's): ``shards/`` with a manifest (notebook 04's pre-generated or self-training pairs), or the
    ``synthetic_shards`` that a ``metrics.json`` names (notebook 05); None when there are none."""
    for folder in list(weights.parents)[1:4]:
        metrics = folder / "metrics.json"
        named = json.loads(metrics.read_text()).get("synthetic_shards") if metrics.is_file() else None
        for candidate in filter(None, [folder / "shards", named and Path(named)]):
            if (candidate / "manifest.json").is_file():
                return candidate
    return None
