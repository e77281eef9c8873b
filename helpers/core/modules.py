"""Checks and fingerprints of torch modules' weights: strict state-dict loading whose errors name the file and
every mismatch, and a short hash that tells retrained weights apart."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor, nn


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model; the message lists missing, unexpected and mis-shaped keys."""


def format_listing(title: str, items: list[str], limit: int = 25) -> str:
    """An indented, titled list for error messages, cut after ``limit`` items with a count."""
    shown = items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])
    return f"\n  {title} ({len(items)}):" + "".join(f"\n    {item}" for item in shown)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raises CheckpointMismatchError unless ``state`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        msg = f"{source} does not fit {type(model).__name__}"
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                msg += format_listing(title, items)
        raise CheckpointMismatchError(msg)


def weights_fingerprint(module: nn.Module) -> str:
    """Short sha256 of the state dict (names, shapes, dtypes, bytes), so retrained weights are told apart."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> nn.Module:
    """load_state_dict(strict=True), after a check whose error names the file and every mismatch."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model
