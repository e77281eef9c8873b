"""Choosing pre-training settings on the val split: pre-train each variant, fine-tune it on k labelled train
images for several seeds, score it on val images. The test split is never touched, so a choice made here can
be reported on test afterwards (notebook 06).

A variant is a named `LayerMatchConfig`, `AutoencoderConfig`, or None for random init. All variants share one
backbone configuration, so only the pre-training differs; per (k, seed) every variant gets the same labelled
images, batch order and decoder initialisation (`comparison_models`). Every pre-training and fine-tune is
resumable in its own folder under ``out_dir``: a killed sweep continues, a finished one is re-read at no cost.

``python -m experiments.pretraining_sweep OUT_DIR`` runs `VAL_SWEEP`, the documented LayerMatch sweep (layer
choice, re-injection and loss weights, head routing, schedule) around notebook 06's defaults, and writes
``OUT_DIR/metrics.json`` and ``OUT_DIR/val_iou.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.core.io import save_figure, write_json
from helpers.core.plots import metric_vs_k
from helpers.data.splits import ProceduralSplits, load_split
from helpers.layermatch.fewshot import finetune_and_evaluate, finetune_settings, pick_labelled, summarise
from helpers.layermatch.models import comparison_models
from helpers.layermatch.pretraining import (
    AutoencoderConfig,
    AutoencoderTrainer,
    LayerMatchConfig,
    LayerMatchTrainer,
    PretrainConfig,
)

Variant = PretrainConfig | None

# Notebook 06's defaults, and one change at a time: what the paper leaves open (module docstring of
# helpers.layermatch.pretraining). The autoencoder is the "other pre-training" reference at the same budget.
VAL_SWEEP: dict[str, dict[str, Any] | None] = {
    "random": None,
    "layermatch (res4-16, inject res8)": {},
    "no reconstruction term": {"inject": None},
    "reconstruction weight 10": {"rec_weight": 10.0},
    "deeper maps (res8-32, inject res16)": {"layers": ("res8", "res16", "res32"), "inject": "res16"},
    "heads on the deepest stage": {"head_source": "deepest"},
    "2x pre-training steps": {"steps_factor": 2},
    "autoencoder": {"method": "autoencoder"},
}


def sweep_variants(
    base: Mapping[str, Any], table: Mapping[str, Mapping[str, Any] | None] = VAL_SWEEP
) -> dict[str, Variant]:
    """Configurations from a table of changes to ``base`` (PretrainConfig fields, plus ``steps_factor`` that
    multiplies the base steps and ``method`` "autoencoder" for an `AutoencoderConfig`)."""
    variants: dict[str, Variant] = {}
    for name, change in table.items():
        if change is None:
            variants[name] = None
            continue
        change = dict(change)
        fields = {**base, "steps": base["steps"] * change.pop("steps_factor", 1)}
        if change.pop("method", "layermatch") == "autoencoder":
            variants[name] = AutoencoderConfig(**fields, **change)
        else:
            variants[name] = LayerMatchConfig(**fields, **change)
    return variants


def pretrain(run_dir: str | os.PathLike, config: PretrainConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Runs (or resumes, or re-reads) one pre-training; returns its backbone path, time and last logged losses."""
    trainer_class = AutoencoderTrainer if isinstance(config, AutoencoderConfig) else LayerMatchTrainer
    trainer = trainer_class(run_dir, config, device)
    start = time.monotonic()
    trainer.train()
    log = (trainer.run_dir / "log.jsonl").read_text().splitlines()
    return {
        "backbone": str(trainer.run_dir / "backbone.pt"),
        "seconds_this_call": time.monotonic() - start,
        "last_log": json.loads(log[-1]) if log else {},
        "config": asdict(config),
    }


def run_sweep(
    out_dir: str | os.PathLike,
    variants: Mapping[str, Variant],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    k_values: Sequence[int],
    seeds: Sequence[int],
    finetune_steps: int,
    finetune_lr: float,
    finetune_batch: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Pre-trains every variant, then fine-tunes all of them per (k, seed) on train images, scored on ``val``.

    ``train`` is (uint8 images, labels), ``val`` is (uint8 images, bool object masks). Returns the pre-training
    records, the per-run records (``arm``, ``k``, ``seed`` and the scores) and their IoU / max-F summaries.
    """
    out_dir = Path(out_dir)
    pretrained = {
        name: pretrain(out_dir / "pretrain" / _folder(name), config, device)
        for name, config in variants.items()
        if config is not None
    }
    arms = {name: pretrained[name]["backbone"] if name in pretrained else None for name in variants}
    records = []
    for k in k_values:
        for seed in seeds:
            idx = pick_labelled(len(train[0]), k, seed)
            for arm, model in comparison_models(2, arms, seed=seed).items():
                scores = finetune_and_evaluate(
                    out_dir / "finetune" / f"{_folder(arm)}_k{k}_seed{seed}",
                    model,
                    train[0][idx],
                    train[1][idx],
                    val[0],
                    val[1],
                    finetune_settings(finetune_steps, finetune_lr, seed),
                    finetune_batch,
                    device,
                )
                records.append({"arm": arm, "k": k, "seed": seed, **scores})
    return {
        "pretraining": pretrained,
        "runs": records,
        "iou": summarise(records, "iou"),
        "f_max": summarise(records, "f_max"),
    }


def _folder(name: str) -> str:
    """A folder name for a variant name."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: the `VAL_SWEEP` around notebook 06's defaults (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--generator", default="default-stylegan2")
    parser.add_argument("--width", type=int, default=16, help="backbone width (notebook 06: 16)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="base pre-training steps of every variant")
    parser.add_argument("--pretrain-batch", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-batch", type=int, default=8)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val-images", type=int, default=300, help="first images of the val split that are scored")
    parser.add_argument("--only", nargs="+", help="run these variants of the table only")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = ProceduralSplits()
    train_images, train_labels = load_split(splits, "train")
    val_images, val_labels = load_split(splits, "val")
    table = {name: VAL_SWEEP[name] for name in args.only} if args.only else VAL_SWEEP
    base = dict(
        generator=args.generator,
        backbone=dict(width=args.width),
        steps=args.pretrain_steps,
        batch_size=args.pretrain_batch,
        log_every=min(10, args.pretrain_steps),
        seed=0,
    )
    start = time.monotonic()
    result = run_sweep(
        args.out_dir,
        sweep_variants(base, table),
        (train_images, train_labels),
        (val_images[: args.val_images], val_labels[: args.val_images] > 0),
        args.k,
        args.seeds,
        args.finetune_steps,
        args.finetune_lr,
        args.finetune_batch,
        args.device,
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("out_dir", "only", "device")}
    write_json(
        Path(args.out_dir) / "metrics.json",
        {"settings": settings, "split": "val", **result, "seconds": time.monotonic() - start},
    )
    save_figure(
        metric_vs_k(result["iou"], "val IoU", f"pre-training variants, {len(args.seeds)} seeds"),
        Path(args.out_dir) / "val_iou.png",
    )
    for arm, per_k in result["iou"].items():
        print(f"{arm:>40}: " + ", ".join(f"k {k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in per_k.items()))


if __name__ == "__main__":
    main()
