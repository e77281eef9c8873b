"""Tests of helpers.metrics: hand-computed cases, a brute-force transcription of the reference loop, pysodmetrics."""

import numpy as np
import py_sod_metrics
import pytest
import torch

from helpers.metrics import (
    THRESHOLDS,
    SaliencyMetrics,
    class_iou,
    confusion_matrix,
    evaluate_saliency,
    f_beta,
    mean_iou,
    precision_recall_curves,
)


def _grid32(u: np.ndarray) -> np.ndarray:
    """uint8 levels u as float32 u/255, the way torchvision's ToTensor (and so the reference pipeline) does it."""
    return u.astype(np.float32) / np.float32(255)


def _reference_pr(prob, gt) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the 255 thresholds with torch's `prediction > split`, as the reference evaluation loops."""
    prob, gt = torch.as_tensor(prob), torch.as_tensor(gt)
    n_gt = gt.sum().item()
    precision, recall = [], []
    for split in np.arange(0.0, 1.0, 1.0 / 255):
        pred = prob > split
        tp, n_pred = (pred & gt).sum().item(), pred.sum().item()
        precision.append(tp / n_pred if n_pred else 1.0)
        recall.append(tp / n_gt if n_gt else 1.0)
    return np.array(precision), np.array(recall)


def _pysod_curves(probs, gts) -> dict[str, np.ndarray]:
    """pysodmetrics' image-averaged F, P and R curves, re-indexed to our thresholds.

    Its curves come from a histogram of ``(pred * 255).astype(uint8)``, flipped and cumulated, so index j
    counts pixels with uint8 value u >= 255 - j. Ours at t = k/255 counts u > k, i.e. u >= k + 1: index
    j = 254 - k. Hence ours == theirs[:255][::-1]; their last entry (u >= 0, everything positive) has no
    counterpart among our thresholds.
    """
    handlers = {
        "f": py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3),
        "p": py_sod_metrics.PrecisionHandler(with_dynamic=True, with_adaptive=False),
        "r": py_sod_metrics.RecallHandler(with_dynamic=True, with_adaptive=False),
    }
    evaluator = py_sod_metrics.FmeasureV2(handlers)
    for prob, gt in zip(probs, gts):
        evaluator.step(prob, gt, normalize=False)  # float map in [0, 1] and bool gt, no min-max stretch
    results = evaluator.get_results()
    return {name: results[name]["dynamic"][:255][::-1] for name in handlers}


# pysodmetrics' S-measure averages an empty quadrant (NaN, with a warning) on the tiny hand-made images;
# the tests marked with this check other metrics.
tiny_image_s_measure = pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy")


def _random_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 map and a correlated bool gt; gt and the map's top level 255 are never empty."""
    h, w = rng.integers(12, 40, size=2)
    u = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    gt = u.astype(int) + rng.integers(-80, 81, size=(h, w)) > 128
    gt[0, 0] = True
    u[0, 0] = 255  # some pixel is positive at every threshold, so pred is never empty
    return u, gt


def test_thresholds_are_the_reference_grid():
    assert len(THRESHOLDS) == 255
    assert THRESHOLDS[0] == 0.0 and THRESHOLDS[-1] == pytest.approx(254 / 255)


@tiny_image_s_measure
def test_iou_and_accuracy_hand_computed_and_averaged_per_image():
    # Image 1: mask prob >= 0.5 (0.5 included) = [[1,1,0],[0,1,0]]; gt = [[1,0,0],[1,1,0]].
    # intersection 2, union 4 -> IoU 0.5; agreement 4 / 6.
    prob1 = np.array([[0.9, 0.5, 0.2], [0.49, 0.7, 0.0]])
    gt1 = np.array([[True, False, False], [True, True, False]])
    # Image 2: perfect prediction, IoU 1 and accuracy 1.
    prob2 = np.array([[1.0, 0.0]])
    gt2 = np.array([[True, False]])
    result = evaluate_saliency([(prob1, gt1), (prob2, gt2)])
    assert result["n_images"] == 2
    assert result["iou"] == pytest.approx((0.5 + 1.0) / 2)  # pooled over pixels it would be 3/5
    assert result["accuracy"] == pytest.approx((4 / 6 + 1.0) / 2)  # pooled it would be 6/8


@tiny_image_s_measure
def test_f_at_given_thresholds_hand_computed():
    prob = np.array([[0.9, 0.61, 0.3, 0.1]])
    gt = np.array([[True, False, True, False]])
    precision, recall = precision_recall_curves(prob, gt)
    f = f_beta(precision, recall)
    # t = 50/255 ~ 0.196: pred {0.9, 0.61, 0.3} -> TP 2, P 2/3, R 1, F = 1.3 * 2/3 / (0.2 + 1).
    assert (precision[50], recall[50], f[50]) == pytest.approx((2 / 3, 1.0, 1.3 * 2 / 3 / 1.2))
    # t = 100/255 ~ 0.392: pred {0.9, 0.61} -> P 1/2, R 1/2, F = 1.3 * 0.25 / 0.65 = 0.5.
    assert (precision[100], recall[100], f[100]) == pytest.approx((0.5, 0.5, 0.5))
    # t = 200/255 ~ 0.784: pred {0.9} -> P 1, R 1/2, F = 0.65 / 0.8 = 0.8125, the maximum, reached
    # first at t = 156/255 (155/255 < 0.61 < 156/255).
    assert f[200] == pytest.approx(0.8125)
    result = evaluate_saliency([(prob, gt)])
    assert result["f_max"] == pytest.approx(0.8125)
    assert result["f_max_threshold"] == THRESHOLDS[156]
    # Above 0.9 nothing is predicted: P = 1 by convention, R = 0, F = 0.
    assert (precision[254], recall[254], f[254]) == (1.0, 0.0, 0.0)


def test_f_is_zero_when_precision_and_recall_are_zero():
    # The prediction misses the gt entirely below t = 0.9: P = R = 0 makes F 0/0, counted as 0.
    precision, recall = precision_recall_curves(np.array([[0.9, 0.0]]), np.array([[False, True]]))
    assert np.all(precision[:230] == 0.0) and np.all(recall == 0.0)
    np.testing.assert_array_equal(f_beta(precision, recall), np.zeros(255))


def test_non_float_maps_are_read_as_float64():
    mask = np.array([[True, False], [True, True]])
    gt = np.array([[True, True], [False, True]])
    expected = precision_recall_curves(mask.astype(np.float64), gt)
    for hard in (mask, mask.astype(np.uint8)):
        np.testing.assert_array_equal(precision_recall_curves(hard, gt), expected)


def test_empty_gt_and_empty_pred_conventions():
    empty = np.zeros((2, 2), dtype=bool)
    # Both empty at every threshold: P = R = 1, F = 1; IoU counts 1.0 (the reference gives NaN).
    precision, recall = precision_recall_curves(np.zeros((2, 2)), empty)
    assert np.all(precision == 1.0) and np.all(recall == 1.0) and np.all(f_beta(precision, recall) == 1.0)
    result = evaluate_saliency([(np.zeros((2, 2)), empty)])
    assert (result["iou"], result["accuracy"], result["f_max"]) == (1.0, 1.0, 1.0)
    # Empty gt, non-empty pred below t = 0.6: R = 1 always, P = 0 then 1 once pred is empty too.
    prob = np.array([[0.6, 0.0], [0.0, 0.0]])
    precision, recall = precision_recall_curves(prob, empty)
    below = THRESHOLDS < 0.6
    assert np.all(recall == 1.0)
    assert np.all(precision[below] == 0.0) and np.all(precision[~below] == 1.0)
    assert np.array_equal(f_beta(precision, recall), np.where(below, 0.0, 1.0))
    assert evaluate_saliency([(prob, empty)])["iou"] == 0.0  # pred {0.6} vs nothing
    # Non-empty gt, empty pred: P = 1, R = 0, F = 0 and IoU 0.
    gt = np.array([[True, False], [False, False]])
    precision, recall = precision_recall_curves(np.zeros((2, 2)), gt)
    assert np.all(precision == 1.0) and np.all(recall == 0.0) and np.all(f_beta(precision, recall) == 0.0)
    assert evaluate_saliency([(np.zeros((2, 2)), gt)])["iou"] == 0.0


@tiny_image_s_measure
def test_per_image_f_differs_from_f_of_mean_pr():
    # Maps of 0s and 1s binarize the same way at every threshold (1 > t always, 0 > t never).
    prob_a, gt_a = np.array([[1.0, 0.0, 0.0, 0.0]]), np.array([[True, True, False, False]])
    prob_b, gt_b = np.ones((1, 4)), np.array([[True, False, False, False]])
    # A: P 1, R 1/2, F = 1.3 * 0.5 / 0.8 = 0.8125.  B: P 1/4, R 1, F = 1.3 * 0.25 / 1.075.
    f_a, f_b = 0.8125, 1.3 * 0.25 / 1.075
    # Mean P 5/8, mean R 3/4: F = 1.3 * 0.46875 / (0.1875 + 0.75) = 0.65.
    result = evaluate_saliency([(prob_a, gt_a), (prob_b, gt_b)])
    assert result["f_max"] == pytest.approx((f_a + f_b) / 2)
    assert result["f_max_mean_pr"] == pytest.approx(0.65)
    assert result["f_max_threshold"] == 0.0  # constant curve: the first threshold wins


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strict_greater_at_a_threshold_equal_to_the_probability(dtype):
    prob = np.array([[THRESHOLDS[100], 0.0]], dtype=dtype)
    gt = np.array([[True, False]])
    precision, recall = precision_recall_curves(prob, gt)
    assert (precision[99], recall[99]) == (1.0, 1.0)  # prob > 99/255: predicted
    assert (precision[100], recall[100]) == (1.0, 0.0)  # prob == t is not > t: empty prediction


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_curves_match_brute_force_reference_loop(seed, as_torch, dtype):
    rng = np.random.default_rng(seed)
    # Values sitting exactly on thresholds and on the u/255 grid, plus generic ones, 0 and 1.
    values = np.concatenate(
        [THRESHOLDS[rng.integers(0, 255, 60)], rng.integers(0, 256, 60) / 255, rng.random(78), [0.0, 1.0]]
    )
    prob = rng.permutation(values).astype(dtype).reshape(10, 20)
    gt = rng.random((10, 20)) < 0.4
    expected = _reference_pr(prob, gt)
    if as_torch:
        prob, gt = torch.from_numpy(prob), torch.from_numpy(gt)
    precision, recall = precision_recall_curves(prob, gt)
    np.testing.assert_array_equal(precision, expected[0])
    np.testing.assert_array_equal(recall, expected[1])


def test_float32_grid_map_is_positive_exactly_above_its_level():
    # What makes the pysodmetrics comparisons below exact: float32 u/255 equals float32(k/255 threshold)
    # for u == k, so `prob > t_k` is exactly `u > k` (compared in float64 instead, 254 levels would flip).
    u = np.arange(256, dtype=np.uint8)
    assert np.array_equal(_grid32(u)[:255], THRESHOLDS.astype(np.float32))
    precision, recall = precision_recall_curves(_grid32(u)[None], np.ones((1, 256), dtype=bool))
    np.testing.assert_array_equal(recall, (255 - np.arange(255)) / 256)  # levels k+1..255 are positive


def test_single_grid_image_matches_pysodmetrics_curves():
    rng = np.random.default_rng(0)
    u = rng.permutation(256).astype(np.uint8).reshape(16, 16)  # every level 0..255 once
    gt = u.astype(int) + rng.integers(-60, 61, size=u.shape) > 140
    prob = _grid32(u)
    # pysodmetrics re-quantizes with truncation, (pred * 255).astype(uint8); for float32 u/255 it gives
    # back u exactly (a float64 u/255 also would, but our float64 comparison is not the integer one).
    assert np.array_equal((prob * 255).astype(np.uint8), u)
    theirs = _pysod_curves([prob], [gt])
    precision, recall = precision_recall_curves(prob, gt)
    # The level-255 pixel keeps pred non-empty and gt is non-empty, so even P and R conventions agree.
    np.testing.assert_allclose(f_beta(precision, recall), theirs["f"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(precision, theirs["p"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(recall, theirs["r"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(5))
def test_random_images_match_pysodmetrics_f_max(seed):
    rng = np.random.default_rng(seed)
    us, gts = zip(*(_random_image(rng) for _ in range(3)))
    probs = [_grid32(u) for u in us]
    assert all(np.array_equal((p * 255).astype(np.uint8), u) for p, u in zip(probs, us))
    theirs = _pysod_curves(probs, gts)
    result = evaluate_saliency(zip(probs, gts))
    assert result["f_max"] == pytest.approx(theirs["f"].max(), rel=1e-12)
    assert theirs["f"][round(result["f_max_threshold"] * 255)] == pytest.approx(result["f_max"], rel=1e-12)
    assert result["f_max_mean_pr"] == pytest.approx(f_beta(theirs["p"], theirs["r"]).max(), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_mae_s_e_equal_pysodmetrics_on_uint8_inputs(seed):
    rng = np.random.default_rng(seed)
    images = [_random_image(rng) for _ in range(3)]
    narrow = rng.integers(30, 200, size=(20, 24), dtype=np.uint8)  # not spanning 0..255: min-max stretched
    images += [(narrow, narrow > 100), (narrow, np.zeros(narrow.shape, dtype=bool))]
    mae, sm, em = py_sod_metrics.MAE(), py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure()
    for u, gt in images:
        for metric in (mae, sm, em):
            metric.step(u, gt.astype(np.uint8) * 255)
    e_curve = em.get_results()["em"]["curve"]
    # Float maps u/255 in either precision, or just off the grid, are rounded to the nearest level u.
    for to_float in (_grid32, lambda u: u / 255, lambda u: np.clip((u - 0.4) / 255, 0, 1)):
        result = evaluate_saliency((to_float(u), gt) for u, gt in images)
        assert result["mae"] == pytest.approx(mae.get_results()["mae"], rel=1e-12)
        assert result["s_measure"] == pytest.approx(sm.get_results()["sm"], rel=1e-12)
        assert result["e_measure_mean"] == pytest.approx(e_curve.mean(), rel=1e-12)
        assert result["e_measure_max"] == pytest.approx(e_curve.max(), rel=1e-12)


def test_without_the_structure_measures_the_other_scores_are_the_same():
    rng = np.random.default_rng(3)
    images = [_random_image(rng) for _ in range(4)]
    full, light = SaliencyMetrics(), SaliencyMetrics(structure=False)
    for u, gt in images:
        full.update(_grid32(u), gt)
        light.update(_grid32(u), gt)
    expected = {k: v for k, v in full.result().items() if not k.startswith(("s_measure", "e_measure"))}
    assert light.result() == expected and len(expected) == len(full.result()) - 3


def test_torch_inputs_give_the_numpy_result():
    rng = np.random.default_rng(7)
    u, gt = _random_image(rng)
    from_numpy = evaluate_saliency([(_grid32(u), gt)])
    from_torch = evaluate_saliency([(torch.from_numpy(_grid32(u)), torch.from_numpy(gt))])
    assert from_torch == from_numpy


def test_input_validation():
    metrics = SaliencyMetrics()
    with pytest.raises(ValueError, match="no images"):
        metrics.result()
    with pytest.raises(ValueError, match="no images"):
        evaluate_saliency([])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        metrics.update(np.zeros((2, 3)), np.zeros((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        metrics.update(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        precision_recall_curves(np.zeros(4), np.zeros(4, dtype=bool))
    for bad in (1.5, -0.1, np.nan):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            metrics.update(np.array([[0.2, bad]]), np.array([[True, False]]))
    with pytest.raises(TypeError, match="boolean"):
        metrics.update(np.zeros((2, 2)), np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty image"):
        metrics.update(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool))
    assert metrics.n_images == 0  # rejected images leave no trace


def test_confusion_matrix_and_iou_with_ignore_index():
    gt = np.array([[0, 1, 255], [2, 1, 0]])
    pred = np.array([[0, 2, 7], [2, 1, 1]])  # the 7 sits on an ignored pixel: not counted, not checked
    # Kept (gt, pred) pairs: (0,0) (1,2) (2,2) (1,1) (0,1); class 3 appears nowhere.
    expected = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    confusion = confusion_matrix(gt, pred, n_classes=4, ignore_index=255)
    np.testing.assert_array_equal(confusion, expected)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(gt), torch.from_numpy(pred), 4, 255), expected)
    # IoU: class 0 1/(2+1-1), class 1 1/(2+2-1), class 2 1/(1+2-1), class 3 NaN and left out of the mean.
    np.testing.assert_allclose(class_iou(confusion), [0.5, 1 / 3, 0.5, np.nan])
    assert mean_iou(confusion) == pytest.approx(4 / 9)
    with pytest.raises(ValueError, match=r"gt labels must lie in \[0, 4\)"):
        confusion_matrix(gt, np.minimum(pred, 3), n_classes=4)  # 255 counts as a label without ignore_index
    with pytest.raises(ValueError, match=r"pred labels"):
        confusion_matrix(gt, np.where(pred == 2, 255, pred), n_classes=4, ignore_index=255)
    with pytest.raises(ValueError, match="shape mismatch"):
        confusion_matrix(gt, pred.T, n_classes=4)
    with pytest.raises(TypeError, match="integer labels"):
        confusion_matrix(gt, pred.astype(float), n_classes=4)
    with pytest.raises(ValueError, match="no pixels"):
        mean_iou(np.zeros((3, 3)))
