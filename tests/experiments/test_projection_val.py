"""experiments.projection_val: a tiny run of notebook 05's pipeline is timed per stage, scored and logged."""

from __future__ import annotations

import numpy as np

from experiments import projection_val
from helpers.core.io import read_jsonl
from helpers.semantic_projection import pipeline


def test_a_tiny_run_logs_stage_times_and_val_scores(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    val = rng.integers(0, 256, (4, 64, 64, 3), np.uint8), rng.integers(0, 3, (4, 64, 64), np.uint8)
    monkeypatch.setattr(projection_val, "load_split", lambda spec, split: val if split == "val" else None)
    originals = {name: getattr(pipeline, name) for name in projection_val.STAGES}
    args = ["--k", "2", "--n-synthetic", "4", "--unet-steps", "2", "--refiner-steps", "2", "--refiner-members", "1"]
    projection_val.main([str(tmp_path / "out"), *args, "--val-images", "3", "--device", "cpu"])

    (record,) = read_jsonl(tmp_path / "out" / "runs.jsonl")
    assert set(record["seconds"]) == {*projection_val.STAGES.values(), "total", "scoring"}
    assert all(s >= 0 for s in record["seconds"].values())
    assert record["val"]["k"] == 2 and 0 <= record["val"]["binary_iou"] <= 1
    assert record["settings"]["refiner_steps"] == 2
    assert {name: getattr(pipeline, name) for name in projection_val.STAGES} == originals  # unwrapped again
