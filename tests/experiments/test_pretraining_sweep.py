"""The val-split sweep of pre-training settings (experiments.pretraining_sweep): variant tables, a tiny end-to-end
sweep on the default StyleGAN2, and its resumption at no cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.pretraining_sweep import VAL_SWEEP, run_sweep, sweep_variants
from helpers.layermatch.pretraining import AutoencoderConfig, LayerMatchConfig

BASE = dict(
    generator="default-stylegan2",
    backbone=dict(width=4, depths=[1, 1, 1, 1]),
    steps=2,
    batch_size=2,
    log_every=1,
    seed=0,
)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, (n, 32, 32), dtype=np.uint8)


def test_the_documented_table_builds_one_change_per_variant():
    variants = sweep_variants({**BASE, "steps": 300})
    assert list(variants) == list(VAL_SWEEP) and variants["random"] is None
    default = variants["layermatch (res4-16, inject res8)"]
    assert isinstance(default, LayerMatchConfig) and default == LayerMatchConfig(**{**BASE, "steps": 300})
    assert variants["no reconstruction term"].inject is None
    assert variants["2x pre-training steps"].steps == 600
    assert isinstance(variants["autoencoder"], AutoencoderConfig) and variants["autoencoder"].steps == 300
    changed = {name for name, config in variants.items() if isinstance(config, LayerMatchConfig) and config != default}
    assert changed == set(VAL_SWEEP) - {"random", "layermatch (res4-16, inject res8)", "autoencoder"}
    with pytest.raises(TypeError):
        sweep_variants(BASE, {"typo": {"rec_wieght": 2.0}})


def test_tiny_sweep_scores_every_arm_on_val_and_resumes_for_free(tmp_path, monkeypatch):
    table = {"random": None, "layermatch": {}, "no rec": {"inject": None}, "autoencoder": {"method": "autoencoder"}}
    train, (val_images, val_labels) = _data(6, seed=0), _data(4, seed=1)
    args = (tmp_path, sweep_variants(BASE, table), train, (val_images, val_labels > 0), [2, 3], [0, 1], 2, 1e-3, 2)
    result = run_sweep(*args)
    assert list(result["iou"]) == list(table)
    assert len(result["runs"]) == len(table) * 2 * 2
    assert all(r["n_images"] == 4 and 0 <= r["iou"] <= 1 for r in result["runs"])
    assert {cell["n"] for per_k in result["iou"].values() for cell in per_k.values()} == {2}
    assert set(result["pretraining"]) == {"layermatch", "no rec", "autoencoder"}
    assert "rec" in result["pretraining"]["layermatch"]["last_log"]
    assert "rec" not in result["pretraining"]["no rec"]["last_log"]
    json.dumps(result)  # the script writes it as is

    monkeypatch.setattr(
        "helpers.layermatch.fewshot.evaluate_arrays", lambda *a, **k: pytest.fail("a finished run is re-scored")
    )
    again = run_sweep(*args)
    assert again["runs"] == result["runs"]
