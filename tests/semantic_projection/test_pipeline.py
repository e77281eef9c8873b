import numpy as np
import torch
from torch import nn

from helpers.segmentation import ShardDataset
from helpers.segmentation.grabcut import TrimapGrabCut
from helpers.segmentation.shards import shard_path
from helpers.semantic_projection.dataset import SyntheticBatches, draw_inputs
from helpers.semantic_projection.fitting import IGNORE_INDEX, FitConfig, LabelledLatent
from helpers.semantic_projection.pipeline import (
    ProjectionPipeline,
    ScoringProtocols,
    UNetRecipe,
    curve_point,
    format_scores,
)
from helpers.semantic_projection.refinement import RefinerConfig

CLASSES = ["background", "object", "part"]


class CountingModel(nn.Module):
    """A 3-class 'segmenter' whose logits favour the object class where the image is bright; counts its calls."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        bright = x.mean(1, keepdim=True)
        return torch.cat([-self.scale * bright, self.scale * bright, torch.zeros_like(bright)], 1)


def _test_set(n=4, size=16):
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.zeros((n, size, size), np.int64)
    for i in range(n):
        y, x = rng.integers(2, size // 2, 2)
        images[i, y : y + 6, x : x + 5] = 230
        labels[i, y : y + 6, x : x + 5] = 1
        labels[i, y : y + 2, x : x + 2] = 2
    images += rng.integers(0, 20, images.shape, dtype=np.uint8)
    return images, labels


def test_the_recipe_drops_the_learning_rate_at_the_same_fraction_of_shorter_runs():
    recipe = UNetRecipe(steps=1200, lr_step=800, batch=32, width=16)
    assert recipe.settings(1200).lr_step == 800 and recipe.settings(200).lr_step == 133
    assert recipe.settings(1).lr_step == 1 and recipe.settings(200).steps == 200


def test_protocol_keys_name_the_configured_protocol_and_each_step_left_out():
    images, labels = _test_set()
    both = ScoringProtocols(images, labels, CLASSES, dihedral_tta=True, refit=TrimapGrabCut())
    assert [both.key(True, True), both.key(False, True), both.key(True, False), both.key(False, False)] == [
        "procedural_test",
        "procedural_test_single_view",
        "procedural_test_without_grabcut",
        "procedural_test_single_view_without_grabcut",
    ]
    plain = ScoringProtocols(images, labels, CLASSES, dihedral_tta=False, refit=None, name="ecssd")
    assert plain.key(False, False) == "ecssd"


def test_all_protocols_cost_one_pass_per_view_setting_and_the_configured_one_comes_first():
    images, labels = _test_set()
    model = CountingModel().eval()
    protocols = ScoringProtocols(images, labels, CLASSES, dihedral_tta=True, refit=TrimapGrabCut())
    results, own, refined = protocols.score_all(model)
    assert list(results) == [
        "procedural_test",
        "procedural_test_without_grabcut",
        "procedural_test_single_view",
        "procedural_test_single_view_without_grabcut",
    ]
    assert model.calls == 8 + 1  # eight views in one batch, then the single view
    assert results["procedural_test_without_grabcut"] == protocols.scores(own)
    assert results["procedural_test"] == protocols.scores(refined)
    assert set(np.unique(1 - refined[:, 0])) <= {0.0, 1.0}  # the re-fit gives hard masks
    assert set(results["procedural_test"]["class_iou"]) == set(CLASSES)
    assert results["procedural_test"]["binary"]["n_images"] == len(images)
    assert "binary object IoU" in format_scores(results["procedural_test"])
    unrefined = ScoringProtocols(images, labels, CLASSES, dihedral_tta=False)
    assert list(unrefined.score_all(model).scores) == ["procedural_test"]


def test_a_curve_point_scores_the_configured_protocol_with_and_without_the_refit():
    images, labels = _test_set()
    model = CountingModel().eval()
    protocols = ScoringProtocols(images, labels, CLASSES, dihedral_tta=False, refit=TrimapGrabCut())
    point = curve_point(protocols, model, k=5)
    scores = protocols.score_all(model).scores
    assert point["k"] == 5 and point["binary_iou"] == scores["procedural_test"]["binary"]["iou"]
    assert point["binary_iou_without_grabcut"] == scores["procedural_test_without_grabcut"]["binary"]["iou"]
    assert point["part_iou"] == scores["procedural_test"]["class_iou"]["part"]
    assert "binary_iou_without_grabcut" not in curve_point(ScoringProtocols(images, labels, CLASSES, False), model, 5)


def _samples(G, n):
    z, seeds = draw_inputs(G, 0, range(n))
    labels = np.full((G.resolution, G.resolution), IGNORE_INDEX, np.int64)
    labels[:, :20], labels[:, 28:36], labels[:, 44:] = 0, 1, 2
    return [LabelledLatent(z[i], labels, seeds[i], 0.7, f"s{i}") for i in range(n)]


def _pipeline(G, out, recipe: UNetRecipe, shard_size: int) -> ProjectionPipeline:
    """A pipeline of tiny stages: one-epoch decoders, a two-step one-member refiner."""
    return ProjectionPipeline(
        G,
        out,
        FitConfig(num_classes=3, width=8, epochs=1, min_epoch_size=2),
        RefinerConfig(folds=2, members=1, steps=2),
        recipe,
        num_classes=3,
        shard_size=shard_size,
    )


def test_a_pipeline_run_names_its_stages_after_their_inputs_and_reuses_them(tmp_path, stylegan):
    pipeline = _pipeline(stylegan, tmp_path, UNetRecipe(4, 2, batch=2, width=4), shard_size=4)
    samples = _samples(stylegan, 2)
    run = pipeline.run(samples, n_synthetic=4)
    assert run.refiner is not None and run.unet.step == 4
    assert run.shards.parent == tmp_path / "synthetic" and run.shards.name.endswith(f"_r{run.refiner.fingerprint[:8]}")
    unets = list((tmp_path / "unets").iterdir())
    assert [u.name.startswith(f"{run.shards.name}_s4_") for u in unets] == [True]
    again = pipeline.run(samples, n_synthetic=4)  # complete stages are reused, nothing trains again
    assert again.shards == run.shards and list((tmp_path / "unets").iterdir()) == unets
    assert len(run.unet.run.read_log()) == len(again.unet.run.read_log())
    one = pipeline.run(samples[:1], n_synthetic=4, steps=2)  # one annotation: no held-out predictions, no refiner
    assert one.refiner is None and one.unet.step == 2 and "_r" not in one.shards.name.split("_n4")[-1]


def test_a_smaller_dataset_of_the_same_decoder_links_the_larger_ones_shards(tmp_path, stylegan, monkeypatch):
    pipeline = _pipeline(stylegan, tmp_path, UNetRecipe(2, 1, batch=2, width=4), shard_size=3)
    samples = _samples(stylegan, 2)
    large = pipeline.run(samples, n_synthetic=7)  # shards of 3, 3, 1
    made = []
    original = SyntheticBatches.__call__
    monkeypatch.setattr(SyntheticBatches, "__call__", lambda self, i, n: made.append((i, n)) or original(self, i, n))
    small = pipeline.run(samples, n_synthetic=3)  # the curve's case: one full shard of the larger set
    assert made == [] and small.shards != large.shards
    assert shard_path(small.shards, 0).stat().st_ino == shard_path(large.shards, 0).stat().st_ino
    odd = pipeline.run(samples, n_synthetic=5)  # shards of 3, 2: the second differs from the larger set's
    assert made == [(1, 2)]
    fresh = _pipeline(stylegan, tmp_path / "fresh", pipeline.unet, shard_size=3).run(samples, n_synthetic=3)
    # nothing was made before in that folder: every shard is generated, and equals the linked one
    linked, generated = ShardDataset(odd.shards).read(range(3)), ShardDataset(fresh.shards).read(range(3))
    assert all(np.array_equal(linked[k], generated[k], equal_nan=k == "truncation") for k in generated)
