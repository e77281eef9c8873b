"""Few-label experiments (helpers.layermatch.fewshot) and their plot: label picking, binary targets, cached resumable
runs."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import helpers.layermatch.fewshot as fewshot
from helpers.core.plots import metric_vs_k
from helpers.data.splits import ProceduralSplits
from helpers.layermatch.fewshot import (
    BinaryTargets,
    FinetuneJob,
    few_label_data,
    finetune_and_evaluate,
    finetune_many,
    pick_labelled,
    summarise,
)
from helpers.layermatch.models import comparison_models
from helpers.segmentation import ArrayBatches, SegmentationSettings

TINY = dict(width=4, depths=[1, 1, 1, 1])


def _data(n: int = 6, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 3, (n, size, size), dtype=np.uint8)


def test_pick_labelled_is_nested_distinct_and_seeded():
    small, large = pick_labelled(100, 5, seed=3), pick_labelled(100, 20, seed=3)
    assert len(set(large.tolist())) == 20 and np.array_equal(large[:5], small)
    assert np.array_equal(pick_labelled(100, 5, seed=3), small)
    assert not np.array_equal(pick_labelled(100, 20, seed=4), large)
    with pytest.raises(ValueError):
        pick_labelled(4, 5, seed=0)


def test_binary_targets_merge_every_object_label():
    images, labels = _data()
    x, y = BinaryTargets(ArrayBatches(images, labels, 4, seed=0, augment="none"))(1)
    _, y_raw = ArrayBatches(images, labels, 4, seed=0, augment="none")(1)
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.long
    assert torch.equal(y, (y_raw > 0).long())


def test_finetune_resumes_and_caches_scores(tmp_path, monkeypatch):
    images, labels = _data()
    eval_images, eval_labels = _data(4, seed=1)
    settings = SegmentationSettings(steps=2, lr_step=10, checkpoint_every=1, seed=0)

    def run(steps: int) -> dict:
        model = comparison_models(2, {"random": None}, TINY, seed=0)["random"]
        settings.steps = steps
        return finetune_and_evaluate(
            tmp_path / "run", model, images[:3], labels[:3], eval_images, eval_labels > 0, settings, batch_size=8
        )

    first = run(2)
    assert first["n_images"] == 4 and 0 <= first["iou"] <= 1
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["step"] == 2
    monkeypatch.setattr(fewshot, "evaluate_arrays", lambda *a, **k: pytest.fail("a finished run is re-scored"))
    assert run(2) == first  # finished and scored: nothing recomputed
    monkeypatch.undo()
    run(3)  # more steps: resumes from step 2 and scores again
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["step"] == 3


def test_finetunes_in_processes_score_as_one_process_and_train_their_folders(tmp_path):
    images, labels = _data()
    eval_images, eval_labels = _data(4, seed=1)

    def jobs(root):
        return [
            FinetuneJob(
                root / f"seed{seed}",
                comparison_models(2, {"random": None}, TINY, seed=seed)["random"],
                images[: 2 + seed],
                labels[: 2 + seed],
                SegmentationSettings(steps=3, lr_step=10, checkpoint_every=10, seed=seed),
            )
            for seed in range(3)
        ]

    two = finetune_many(jobs(tmp_path / "two"), eval_images, eval_labels > 0, 4, workers=2, progress=False)
    one = finetune_many(jobs(tmp_path / "one"), eval_images, eval_labels > 0, 4, workers=1, progress=False)
    assert two == one and len({s["iou"] for s in two}) > 1  # in job order, each job single-threaded either way
    assert all((tmp_path / "two" / f"seed{seed}" / "checkpoint.pt").exists() for seed in range(3))


def test_summarise_and_plot():
    records = [
        {"arm": arm, "k": k, "seed": s, "iou": base + 0.01 * s + 0.001 * k}
        for arm, base in (("random", 0.2), ("layermatch", 0.5))
        for k in (5, 10)
        for s in (0, 1, 2)
    ]
    summary = summarise(records)
    assert list(summary) == ["random", "layermatch"] and list(summary["random"]) == ["5", "10"]
    cell = summary["layermatch"]["10"]
    assert cell["n"] == 3 and cell["values"] == pytest.approx([0.51, 0.52, 0.53])
    assert cell["mean"] == pytest.approx(0.52) and cell["std"] == pytest.approx(0.01)
    assert summarise(records[:1])["random"]["5"]["std"] == 0.0
    fig = metric_vs_k(summary)
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    plt.close(fig)


def test_few_label_data_comes_from_the_splits_or_two_labelled_folders(tmp_path, write_labelled):
    write_labelled(tmp_path / "train", n=3)
    write_labelled(tmp_path / "test", n=2, seed=1)
    data = few_label_data(None, str(tmp_path / "train"), str(tmp_path / "test"), 24)
    assert data.train_images.shape == (3, 24, 24, 3) and data.test_labels.shape == (2, 24, 24)
    with pytest.raises(ValueError, match="needs a TEST_FOLDER"):
        few_label_data(None, str(tmp_path / "train"), "", 24)
    for splits, train in [(None, ""), (ProceduralSplits(16, 4, 2, 2, 0), str(tmp_path / "train"))]:
        with pytest.raises(ValueError, match="from one place"):
            few_label_data(splits, train, str(tmp_path / "test"), 24)
