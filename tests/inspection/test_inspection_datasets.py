"""Tests for helpers.inspection.datasets, figures and the IoU browser: datasets of every kind, per-image scores,
attributes, and the browser driven from Python."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data.procedural import BACKGROUNDS, SHAPES, attributes, render
from helpers.data.splits import ProceduralSplits, load_split
from helpers.inspection.datasets import attribute_scores, open_dataset, predict_set
from helpers.inspection.figures import attribute_chart, cases, error_map, iou_histogram
from helpers.metrics import SaliencyMetrics
from helpers.segmentation import UNet, evaluate_arrays
from helpers.widgets.browser import IoUBrowser

SPLITS = ProceduralSplits(32, 8, 4, 12, 0)


@pytest.fixture(scope="module")
def model() -> UNet:
    torch.manual_seed(0)
    return UNet(width=4).eval()


def test_procedural_attributes_are_those_the_renderer_drew():
    found = attributes(0, [5, 6], 32, stream=2)
    assert set(found["background"]) <= set(BACKGROUNDS) and set(found["shape"]) <= set(SHAPES)
    many = attributes(0, range(60), 32)
    assert len(set(many["background"])) == 6 and len(set(many["shape"])) == 4  # every kind occurs
    assert np.array_equal(render(0, 5, 32, 2)[0], load_split(SPLITS, "test")[0][5])  # rendering is unchanged


def test_the_procedural_split_is_scored_per_image_and_per_attribute(model):
    data = open_dataset("procedural:test", SPLITS, limit=10)
    assert len(data.images) == 10 and data.resize_to is None and set(data.attributes) == {"background", "shape"}
    preds = predict_set(model, data, progress=False)
    assert preds.iou.shape == (10,) and preds.scores["iou"] == pytest.approx(preds.iou.mean())
    reference = SaliencyMetrics()
    for prob, mask in zip(preds.probs, data.masks):
        reference.update(prob, mask)
    assert preds.scores == reference.result()
    images, labels = load_split(SPLITS, "test")
    assert preds.scores == evaluate_arrays(model, images[:10], labels[:10] > 0)  # notebook 04's scoring, exactly
    table = attribute_scores(data.attributes, preds.iou)
    means = [row["iou"] for row in table["shape"].values()]
    assert means == sorted(means) and sum(row["n"] for row in table["shape"].values()) == 10  # worst first


def test_a_benchmark_folder_carries_its_class_folders(tmp_path, write_benchmark, model):
    root = tmp_path / "CUB_200_2011"
    write_benchmark("CUB-200-2011", root, n=2)
    other = "002.Laysan_Albatross"
    stem = sorted((root / "images" / "001.Black_footed_Albatross").glob("*.jpg"))[0].stem
    for sub, suffix in (("images", ".jpg"), ("segmentations", ".png")):
        (root / sub / other).mkdir()
        source = root / sub / "001.Black_footed_Albatross" / f"{stem}{suffix}"
        (root / sub / other / f"Laysan_Albatross_0001{suffix}").write_bytes(source.read_bytes())
    data = open_dataset(f"cub-200-2011: {root}")
    assert data.name == "CUB-200-2011" and data.resize_to == 128 and len(data.images) == 3
    assert sorted(data.attributes["folder"]) == ["001.Black_footed_Albatross"] * 2 + [other]
    preds = predict_set(model, data, progress=False)
    assert [p.shape for p in preds.probs] == [m.shape for m in data.masks]  # maps at each image's own size


def test_labelled_and_plain_folders(tmp_path, write_labelled, model):
    write_labelled(tmp_path / "labelled", n=3)
    data = open_dataset(str(tmp_path / "labelled"))
    assert data.masks is not None and all(m.dtype == bool for m in data.masks)
    assert data.masks[0].any() and not data.attributes
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(plain / f"{i}.png")
    data = open_dataset(str(plain))
    preds = predict_set(model, data, progress=False)
    assert data.masks is None and preds.iou is None and preds.scores is None and preds.probs[0].shape == (20, 30)
    browser = IoUBrowser(data, preds)
    assert (
        browser.caption.value.endswith("(1 of 2): image | prediction") and browser.panels(0).shape[0] == browser.height
    )


def test_the_browser_goes_from_the_worst_to_the_best(model):
    data = open_dataset("procedural:test", SPLITS, limit=6)
    preds = predict_set(model, data, progress=False)
    browser = IoUBrowser(data, preds, height=64)
    worst, best = int(np.argmin(preds.iou)), int(np.argmax(preds.iou))
    assert data.names[worst] in browser.caption.value and f"IoU {preds.iou[worst]:.3f}" in browser.caption.value
    browser.slider.value = 5  # what moving the slider does
    assert data.names[best] in browser.caption.value and bytes(browser.picture.value[:4]) == b"\x89PNG"
    assert browser.panels(5).shape == (64, 4 * 64 + 3 * 4, 3)  # image | prediction | truth | errors


def test_the_error_map_marks_found_missed_and_added_pixels():
    image = np.zeros((1, 3, 3), np.uint8)
    prob = np.array([[0.9, 0.1, 0.9]], np.float32)
    mask = np.array([[True, True, False]])
    out = error_map(image, prob, mask)
    assert out[0, 0].tolist() == [178, 140, 0] and out[0, 1, 2] > 150 and out[0, 2, 0] > 150


def test_the_figures_draw(model):
    data = open_dataset("procedural:test", SPLITS, limit=4)
    preds = predict_set(model, data, progress=False)
    for fig in (
        cases(data, preds, [0, 1], "cases"),
        iou_histogram(preds.iou, "histogram"),
        attribute_chart(attribute_scores(data.attributes, preds.iou), "attributes"),
    ):
        assert fig.axes
