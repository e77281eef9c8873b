import json

import numpy as np
import pytest

from helpers.gans import load
from helpers.semantic_projection.annotations import MULTICLASS_IGNORE, AnnotationStore
from helpers.semantic_projection.dataset import draw_inputs
from helpers.semantic_projection.fitting import IGNORE_INDEX
from helpers.semantic_projection.simulated_annotator import (
    CLASSES,
    REPORT_NAME,
    LabellerConfig,
    confident_labels,
    label_fractions,
    main,
    simulate,
)

TINY = LabellerConfig(width=4, steps=3, batch_size=4, lr_step=2, n_train=16, n_val=8, n_test=8)


def test_confident_labels_leave_an_ignore_band():
    probs = np.zeros((1, 3, 1, 4), np.float32)
    probs[0, :, 0, 0] = [0.95, 0.03, 0.02]  # confident background
    probs[0, :, 0, 1] = [0.10, 0.85, 0.05]  # object, below the threshold
    probs[0, :, 0, 2] = [0.00, 0.05, 0.95]  # confident part
    probs[0, :, 0, 3] = [0.00, 0.10, 0.90]  # exactly at the threshold counts
    masks = confident_labels(probs, 0.9)
    assert masks.dtype == np.uint8 and masks.tolist() == [[[0, MULTICLASS_IGNORE, 2, 2]]]
    fractions = label_fractions(masks)
    assert fractions == {"background": 0.25, "object": 0.0, "part": 0.5, "ignore": 0.25}


def test_simulate_writes_a_multiclass_store_and_resumes(tmp_path):
    store_dir, run_dir = tmp_path / "annotations", tmp_path / "run"
    report = simulate(store_dir, n=3, run_dir=run_dir, threshold=0.5, config=TINY, progress=False)
    store = AnnotationStore(store_dir)
    assert (store.mode, store.classes, store.ids()) == ("multiclass", CLASSES, [0, 1, 2])
    G = load("default-stylegan2")
    z, seeds = draw_inputs(G, 0, range(3))  # the annotator's image sequence for seed 0
    samples = store.training_samples()
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample.z, z[i])
        assert sample.noise_seed == seeds[i] and sample.truncation == G.config["truncation_psi"]
        assert set(np.unique(sample.labels)) <= {IGNORE_INDEX, 0, 1, 2}
    on_disk = json.loads((store_dir / REPORT_NAME).read_text())
    assert on_disk["labeller"]["steps_reached"] == TINY.steps and on_disk["threshold"] == 0.5
    assert sum(report["label_fractions"].values()) == pytest.approx(1)
    assert set(report["labeller_val_scores"]["class_iou"]) == set(CLASSES)

    pngs = {p.name: p.read_bytes() for p in store.samples_dir.glob("*.png")}
    main(
        [
            str(store_dir),
            "--n",
            "4",
            "--run-dir",
            str(run_dir),
            "--threshold",
            "0.5",
            "--width",
            "4",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--lr-step",
            "2",
            "--n-train",
            "16",
            "--n-val",
            "8",
            "--n-test",
            "8",
        ]
    )
    assert AnnotationStore(store_dir).ids() == [0, 1, 2, 3]  # kept the first three, added one
    assert all((store.samples_dir / name).read_bytes() == data for name, data in pngs.items())

    with pytest.raises(ValueError, match="other settings"):
        simulate(
            store_dir,
            n=3,
            run_dir=run_dir,
            config=LabellerConfig(width=8, steps=3, n_train=16, n_val=8, n_test=8),
            progress=False,
        )
    with pytest.raises(ValueError, match="not image 0"):
        simulate(store_dir, n=3, run_dir=run_dir, image_seed=1, threshold=0.5, config=TINY, progress=False)
