"""Device choice, seeding and mixed precision shared by every notebook."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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


AMP_MODES = ("auto", "off", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (without it, bf16 autocast is emulated and slower)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of training mode ``amp`` (one of AMP_MODES) on ``device``, or None for full precision.
    'auto' is bf16 where the hardware computes it natively (CUDA with bf16, else fp16; a CPU with AVX512-BF16 or
    AMX, about 2x faster small convolutions than float32), else full precision."""
    device = torch.device(device)
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}; got {amp!r}")
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(dtype: torch.dtype | None, device: torch.device | str) -> AbstractContextManager:
    """torch.autocast to ``dtype`` on ``device``'s type, or nothing for None (full precision)."""
    return nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)


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
