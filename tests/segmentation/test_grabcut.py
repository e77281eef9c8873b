"""GrabCut re-fits (helpers.segmentation.grabcut): a mask as probable foreground, and a model's probabilities as a
trimap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from helpers.segmentation.grabcut import TrimapGrabCut, grabcut_refine

YY, XX = np.mgrid[:64, :64]
DISK = (YY - 30) ** 2 + (XX - 34) ** 2 < 14**2
DISTRACTOR = (YY >= 3) & (YY < 10) & (XX >= 3) & (XX < 10)


def _disk_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 64-px image: a disk of one colour on a background of another, and the disk's mask."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (2, 3))
    image = np.where(DISK[..., None], colours[0], colours[1]) + rng.normal(0, 12, (64, 64, 3))
    return np.clip(image, 0, 255).astype(np.uint8), DISK


def _striped_scene(seed: int) -> np.ndarray:
    """A noisy 64-px image: a red disk on horizontal stripes of two other colours (bands of 6 rows), and a red
    square in the top-left corner, far from the disk: background that looks like the object."""
    rng = np.random.default_rng(seed)
    stripes = np.where((YY // 6)[..., None] % 2 == 0, [40, 160, 60], [230, 230, 240])
    image = np.where((DISK | DISTRACTOR)[..., None], [200, 30, 30], stripes) + rng.normal(0, 10, (64, 64, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_snaps_a_sloppy_mask_to_the_object():
    scenes = [_disk_scene(seed) for seed in range(4)]
    images = np.stack([image for image, _ in scenes])
    truth = np.stack([disk for _, disk in scenes])
    sloppy = np.roll(truth, (4, -5), axis=(1, 2))  # the object's shape, misplaced by 6 px
    sloppy[2] = False  # empty and full masks are left alone
    sloppy[3] = True

    refined = grabcut_refine(images, sloppy)
    for i in (0, 1):
        assert iou(sloppy[i], truth[i]) < 0.6 and iou(refined[i], truth[i]) > 0.95
    assert not refined[2].any() and refined[3].all()
    # each mask's result depends on its own image and mask only, not on what ran before
    assert np.array_equal(grabcut_refine(images[1::-1], sloppy[1::-1]), refined[1::-1])


def _model_guess() -> np.ndarray:
    """Foreground probability of a sloppy model: sure of the disk's core, unsure of a ring around it and of one
    stripe band to its right (the mistake a model makes on striped backgrounds), sure of the far background,
    the red square included."""
    core = (YY - 30) ** 2 + (XX - 34) ** 2 < 10**2
    ring = ((YY - 30) ** 2 + (XX - 34) ** 2 < 18**2) & ~core
    band = (YY >= 24) & (YY < 30) & (XX >= 50) & (XX < 62)
    near = (YY - 30) ** 2 + (XX - 34) ** 2 < 30**2
    return np.select([core, ring | band, near], [0.97, 0.7, 0.2], 0.001).astype(np.float32)


def test_trimap_grabcut_keeps_the_object_and_drops_the_unsure_background():
    images = np.stack([_striped_scene(seed) for seed in range(3)])
    guess = np.repeat(_model_guess()[None], 3, axis=0)
    refined = TrimapGrabCut().masks(images, guess)
    plain = grabcut_refine(images, guess >= 0.5)  # every pixel may change: the red square joins the object
    unfixed = TrimapGrabCut(sure_background=0).masks(images, guess)
    for i in range(3):
        assert iou(guess[i] >= 0.5, DISK) < 0.75  # the model's own mask: the ring and the stripe band
        assert iou(refined[i], DISK) > 0.97
        assert iou(plain[i], DISK) < 0.95 and iou(unfixed[i], DISK) < 0.95
    assert np.array_equal(TrimapGrabCut().masks(images[::-1], guess[::-1]), refined[::-1])


def test_trimap_grabcut_fixes_the_sure_pixels(monkeypatch):
    import helpers.segmentation.grabcut as grabcut

    seen = []
    monkeypatch.setattr(grabcut, "_fit", lambda image, labels, iterations: seen.append(labels) or labels > 9)
    p = np.array([[0.95, 0.9, 0.7, 0.5], [0.49, 0.2, 0.01, 0.005]], np.float32)
    TrimapGrabCut().masks(np.zeros((1, 2, 4, 3), np.uint8), p[None])
    expected = [
        [cv2.GC_FGD, cv2.GC_PR_FGD, cv2.GC_PR_FGD, cv2.GC_PR_FGD],
        [cv2.GC_PR_BGD, cv2.GC_PR_BGD, cv2.GC_PR_BGD, cv2.GC_BGD],
    ]
    assert len(seen) == 1 and np.array_equal(seen[0], expected)


def test_trimap_grabcut_class_probabilities():
    images = np.stack([_striped_scene(0), _striped_scene(1)])
    foreground = np.stack([_model_guess(), np.full((64, 64), 0.3, np.float32)])  # image 1: nothing above 0.5
    probs = np.empty((2, 3, 64, 64), np.float32)
    probs[:, 0] = 1 - foreground
    probs[:, 1] = foreground * np.where(XX < 34, 0.8, 0.3)  # object on the left half, part on the right
    probs[:, 2] = foreground - probs[:, 1]
    refine = TrimapGrabCut()
    out = refine(images, probs)
    assert out.shape == probs.shape and out.dtype == probs.dtype
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    mask = refine.masks(images, foreground)
    assert np.array_equal(out[:, 0] == 0, mask) and np.isin(out[:, 0], (0, 1)).all()
    assert np.array_equal(out.argmax(1)[mask], probs[:, 1:].argmax(1)[mask] + 1)  # the model's foreground class
    assert not mask[1].any()  # no foreground side in the trimap: the model's decision (none) stays


def test_trimap_grabcut_rejects_bad_input():
    with pytest.raises(ValueError, match="sure_background"):
        TrimapGrabCut(sure_foreground=0.4)
    with pytest.raises(ValueError, match="differ in size"):
        TrimapGrabCut().masks(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match="probs must be"):
        TrimapGrabCut()(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 64, 64), np.float32))


def test_threads_give_the_masks_of_one_thread():
    rng = np.random.default_rng(0)
    images = np.stack([_disk_scene(seed)[0] for seed in range(12)])
    sloppy = np.stack([np.roll(DISK, tuple(rng.integers(-6, 7, 2)), axis=(0, 1)) for _ in range(12)])
    guess = np.stack([np.roll(_model_guess(), tuple(rng.integers(-6, 7, 2)), axis=(0, 1)) for _ in range(12)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grabcut_refine(images, sloppy), TrimapGrabCut().masks(images, guess)
        torch.set_num_threads(4)
        four = grabcut_refine(images, sloppy), TrimapGrabCut().masks(images, guess)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(one, four))
    assert not np.array_equal(one[0], sloppy)  # the re-fits did move the masks
