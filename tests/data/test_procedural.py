import numpy as np
import pytest

from helpers.data.domain_stats import ColourBaseline, class_fractions
from helpers.data.procedural import render, render_batch
from helpers.metrics import evaluate_saliency


def test_render_is_deterministic_and_index_addressed():
    a_img, a_lab = render(3, 17, 64)
    b_img, b_lab = render(3, 17, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, render(3, 18, 64)[0])
    assert not np.array_equal(a_img, render(4, 17, 64)[0])
    assert not np.array_equal(a_img, render(3, 17, 64, stream=1)[0])
    images, labels = render_batch(3, range(15, 20), 64)
    assert np.array_equal(images[2], a_img) and np.array_equal(labels[2], a_lab)


@pytest.mark.parametrize("size", [32, 48, 64, 100, 256])
def test_shapes_and_label_values(size):
    image, labels = render(0, 1, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.shape == (size, size) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}


@pytest.mark.parametrize("size", [31, 257])
def test_size_out_of_range(size):
    with pytest.raises(ValueError, match="size must be in"):
        render(0, 0, size)


def test_every_image_has_an_object_and_almost_all_a_part():
    _, labels = render_batch(0, range(200), 64)
    area = (labels > 0).mean(axis=(1, 2))
    part = (labels == 2).sum(axis=(1, 2))
    assert area.min() > 0.01 and area.max() < 0.9
    assert 0.08 < area.mean() < 0.4
    assert (part > 0).mean() > 0.9
    fractions = class_fractions(labels)
    assert abs(sum(fractions.values()) - 1) < 1e-9 and fractions["part"] > 0.01


def test_geometry_is_resolution_independent():
    """Labels rendered at 256 px and block-reduced by majority agree with the 64 px labels."""
    for index in range(10):
        fine = render(1, index, 256)[1].reshape(64, 4, 64, 4).transpose(0, 2, 1, 3).reshape(64, 64, 16)
        majority = np.apply_along_axis(lambda v: np.bincount(v, minlength=3).argmax(), 2, fine)
        coarse = render(1, index, 64)[1]
        assert (majority == coarse).mean() > 0.97


def test_images_are_diverse():
    images, _ = render_batch(0, range(100), 64)
    means = images.reshape(100, -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 20  # mean colours spread over the range
    flat = images.reshape(100, -1).astype(np.float32)
    dists = np.abs(flat[:, None] - flat[None]).mean(axis=2)
    assert dists[np.triu_indices(100, 1)].min() > 5  # no two near-identical images


def test_object_is_visible_against_its_surroundings():
    """Mean colour inside the mask differs from the ring just outside it."""
    from scipy.ndimage import binary_dilation

    images, labels = render_batch(0, range(100), 64)
    gaps = []
    for image, label in zip(images.astype(np.float32), labels):
        obj = label > 0
        ring = binary_dilation(obj, iterations=3) & ~obj
        gaps.append(np.linalg.norm(image[obj].mean(0) - image[ring].mean(0)))
    assert np.median(gaps) > 25


def test_colour_alone_does_not_segment():
    train_images, train_labels = render_batch(0, range(400), 64)
    test_images, test_labels = render_batch(0, range(100), 64, stream=2)
    baseline = ColourBaseline().fit(train_images, train_labels > 0)
    scores = evaluate_saliency(zip(baseline.predict(test_images), test_labels > 0))
    assert scores["iou"] < 0.35 and scores["f_max"] < 0.6
    assert baseline.overlap() > 0.4


def test_colour_baseline_learns_a_separable_domain():
    """The baseline itself works: it segments a domain where colour does decide."""
    rng = np.random.default_rng(0)
    masks = rng.random((20, 16, 16)) > 0.7
    images = np.where(masks[..., None], [250, 10, 10], [10, 10, 250]).astype(np.uint8)
    baseline = ColourBaseline().fit(images, masks)
    assert evaluate_saliency(zip(baseline.predict(images), masks))["iou"] > 0.99
    assert baseline.overlap() == 0
