"""Device choice and seeding shared by every notebook."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.core.paths import resolve


def pick_device(device: str = "auto") -> torch.device:
    """'auto' gives CUDA when present, else CPU; an explicit device must be available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"DEVICE={device!r} was asked for, but torch sees no CUDA device; use DEVICE='auto' or 'cpu'"
        )
    return dev


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices) so that runs repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_notebook(out_dir: str, seed: int, device: str = "auto") -> tuple[Path, torch.device]:
    """Common first step of a notebook: seeds, picks the device, creates and returns OUT_DIR."""
    seed_everything(seed)
    out = resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, pick_device(device)


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode for the block and restores their previous modes afterwards."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
