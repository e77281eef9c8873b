import threading
import time

import numpy as np
import pytest

from helpers.segmentation.shards import ShardDataset
from helpers.semantic_projection.decoder import generate_images
from helpers.semantic_projection.fitting import FitConfig
from helpers.widgets.annotator import Annotator, Stopped

SCALE = 6  # 64 px images shown at 384 px
FAST = FitConfig(width=8, epochs=2, min_epoch_size=2, lr=3e-3)


def _disc(cx, cy, size, shape=(64, 64)):
    """Pixels whose centres lie within size/2 of the image point (cx, cy)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= (size / 2) ** 2


@pytest.fixture
def annotator(tmp_path):
    return Annotator(tmp_path / "work", "default-stylegan2", seed=0, display_size=384, brush_size=5, fit_config=FAST)


def test_brush_modes_and_undo(annotator):
    assert annotator.scale == SCALE and (annotator.mask == 0).all() and annotator.mode == "positive"
    annotator.press(20.5 * SCALE, 30.5 * SCALE)
    annotator.release()
    positive = _disc(20.5, 30.5, 5)
    assert (annotator.mask[positive] == 255).all() and (annotator.mask[~positive] == 0).all()
    after_first = annotator.mask

    annotator.set_mode("negative")
    annotator.set_brush(3)
    annotator.press(40.5 * SCALE, 10.5 * SCALE)
    annotator.drag(50.5 * SCALE, 10.5 * SCALE)
    annotator.release()
    line = np.zeros((64, 64), bool)
    line[9:12, 40:51] = True
    line |= _disc(40.5, 10.5, 3) | _disc(50.5, 10.5, 3)
    assert (annotator.mask[line] == 128).all() and (annotator.mask[~line & ~positive] == 0).all()

    annotator.set_mode("ignore")
    annotator.press(20.5 * SCALE, 30.5 * SCALE)
    annotator.release()
    assert annotator.mask[30, 20] == 0 and len(annotator.strokes) == 3
    assert annotator.undo() and annotator.undo()
    np.testing.assert_array_equal(annotator.mask, after_first)
    assert annotator.undo() and not annotator.undo() and (annotator.mask == 0).all()
    with pytest.raises(ValueError, match="mode must be one of"):
        annotator.set_mode("hair")


def test_canvas_events_and_widget_controls(annotator):
    annotator.mode_buttons.value = "negative"
    annotator.brush_slider.value = 1
    annotator.canvas[-1]._handle_frontend_event(None, {"event": "mouse_down", "x": 3.5 * SCALE, "y": 4.5 * SCALE}, [])
    annotator.canvas[-1]._handle_frontend_event(None, {"event": "mouse_up", "x": 3.5 * SCALE, "y": 4.5 * SCALE}, [])
    assert annotator.mode == "negative" and annotator.brush_size == 1
    assert annotator.mask[4, 3] == 128 and (annotator.mask != 0).sum() == 1
    annotator.canvas[-1]._handle_frontend_event(
        None, {"event": "key_down", "key": "z", "shift_key": False, "ctrl_key": True, "meta_key": False}, []
    )
    assert (annotator.mask == 0).all()


def test_ok_saves_and_advances_skip_does_not(annotator):
    first = annotator.current
    shown = annotator.image.copy()
    annotator.ok()  # nothing painted: nothing saved
    assert len(annotator.store) == 0 and annotator.current.index == 1
    annotator.skip()
    assert len(annotator.store) == 0 and annotator.current.index == 2

    current = annotator.current
    annotator.press(10 * SCALE, 10 * SCALE)
    annotator.set_mode("negative")
    annotator.press(50 * SCALE, 50 * SCALE)
    painted = annotator.mask
    saved = annotator.ok()
    assert saved is not None and len(annotator.store) == 1 and annotator.current.index == 3
    assert (annotator.mask == 0).all() and annotator.strokes == []
    (stored,) = annotator.store.load_all()
    np.testing.assert_array_equal(stored.mask, painted)
    np.testing.assert_array_equal(stored.z, current.z)
    assert stored.noise_seed == current.noise_seed and stored.truncation == current.truncation == 1.0
    # the stored inputs regenerate exactly what was shown
    G = annotator.G
    assert (generate_images(G, first.z, [first.noise_seed], first.truncation)[0] == shown).all()
    again = generate_images(G, stored.z, [stored.noise_seed], stored.truncation)[0]
    assert again.shape == (64, 64, 3) and not (again == shown).all()


def test_retrain_predicts_and_generate_writes_shards(annotator, tmp_path):
    assert annotator.buttons["Generate"].disabled
    with pytest.raises(ValueError, match="no saved annotations"):
        annotator.retrain(progress=False)
    annotator.buttons["Retrain"].click()  # a button shows the error instead of raising
    assert annotator.wait(60)
    assert "no saved annotations" in annotator.status.value and not annotator.buttons["OK"].disabled
    annotator.set_brush(12)
    annotator.press(20 * SCALE, 20 * SCALE)
    annotator.set_mode("negative")
    annotator.press(50 * SCALE, 50 * SCALE)
    annotator.ok()
    assert annotator.prediction is None
    decoder = annotator.retrain(progress=False)
    assert annotator.prediction.shape == (64, 64) and not decoder.training
    assert (annotator.decoder_dir / "decoder.pt").exists() and annotator.decoder_dir.name == "v000001"

    folder = annotator.generate(n_total=3, shard_size=2, batch_size=2, progress=False)
    assert len(ShardDataset(folder)) == 3 and folder.name == "v000001-n3"
    # a new annotator on the same folder continues with the saved samples and the finished decoder
    reopened = Annotator(tmp_path / "work", seed=1, fit_config=FAST)
    assert len(reopened.store) == 1 and reopened.prediction is not None
    assert not reopened.buttons["Generate"].disabled


def test_biggan_and_multiclass(tmp_path):
    annotator = Annotator(
        tmp_path / "mc", "default-biggan", mode="multiclass", classes=["bg", "a", "b"], seed=0, brush_size=2
    )
    assert annotator.current.noise_seed is None and annotator.current.truncation is None
    annotator.set_mode(2)
    annotator.press(10.5 * SCALE, 10.5 * SCALE)
    assert annotator.mask[10, 10] == 2 and annotator.mask[0, 0] == 255
    saved = annotator.ok()
    assert annotator.store.labels(saved.mask)[10, 10] == 2


def _painted_and_trained(annotator):
    """One saved annotation (an object stroke and a background stroke) and a finished decoder."""
    annotator.set_brush(12)
    annotator.press(20 * SCALE, 20 * SCALE)
    annotator.set_mode("negative")
    annotator.press(50 * SCALE, 50 * SCALE)
    annotator.ok()
    annotator.retrain(progress=False)


def test_generate_button_takes_a_count_runs_beside_the_kernel_and_stops(tmp_path):
    """The count box sets the images; Stop ends the job keeping complete shards; the canvas is locked meanwhile."""
    annotator = Annotator(tmp_path / "work", "default-stylegan2", seed=0, brush_size=5, fit_config=FAST, shard_size=4)
    _painted_and_trained(annotator)
    annotator.count.value = 6
    annotator.buttons["Generate"].click()
    assert annotator.wait(120) and "wrote 6 images" in annotator.status.value
    assert len(ShardDataset(tmp_path / "work" / "generated" / "v000001-n6")) == 6
    assert annotator.progress.value == annotator.progress.max == 6

    annotator.count.value = 10_000
    folder = tmp_path / "work" / "generated" / "v000001-n10000"
    annotator.buttons["Generate"].click()
    assert annotator.job.is_alive() and annotator.buttons["OK"].disabled and not annotator.stop_button.disabled
    before = annotator.mask
    annotator.press(30 * SCALE, 30 * SCALE)  # a stroke while Generate runs is ignored
    annotator.drag(40 * SCALE, 30 * SCALE)
    annotator.release()
    np.testing.assert_array_equal(annotator.mask, before)
    with pytest.raises(RuntimeError, match="not possible while Generate runs"):
        annotator.ok()
    deadline = time.monotonic() + 120
    while len(list(folder.glob("shard_*.h5"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    annotator.stop_button.click()
    assert annotator.wait(60) and not annotator.job.is_alive()
    shards = sorted(folder.glob("shard_*.h5"))
    assert 2 <= len(shards) < 2500 and "Generate stopped" in annotator.status.value
    assert f"{4 * len(shards)} of 10000 images" in annotator.status.value
    time.sleep(0.5)
    assert sorted(folder.glob("shard_*.h5")) == shards and not list(folder.glob("*.tmp*"))  # nothing after the stop
    assert not annotator.buttons["OK"].disabled and annotator.stop_button.disabled
    annotator.press(30 * SCALE, 30 * SCALE)  # unlocked again
    assert annotator.mask[30, 30] == 128


def test_retrain_button_reports_epochs_and_stop_keeps_the_last_decoder(annotator):
    _painted_and_trained(annotator)
    first = annotator.decoder
    annotator.press(5 * SCALE, 5 * SCALE)
    annotator.ok()  # a second annotation: a new store version, a new fit
    annotator.stop()  # a stop pressed before the job starts does not end it
    annotator.buttons["Retrain"].click()
    assert annotator.wait(120) and annotator.decoder is not first
    assert annotator.progress.value == annotator.progress.max == FAST.epochs
    assert "decoder v000002 trained on 2 annotations" in annotator.status.value
    annotator.press(9 * SCALE, 9 * SCALE)
    annotator.ok()  # version 3: a stop set before the first epoch ends ends the fit after it
    stop, reports = threading.Event(), []
    stop.set()
    with pytest.raises(Stopped, match=f"Retrain stopped after epoch 1 of {FAST.epochs}"):
        annotator.retrain(progress=False, stop=stop, report=lambda done, total: reports.append((done, total)))
    assert reports == [(1, FAST.epochs)] and annotator.decoder_dir.name == "v000002"


def test_legend_and_prediction_outlines_differ_from_strokes(tmp_path):
    """Multiclass: strokes fill in the class colour; the prediction is an outline, the region inside untouched."""
    annotator = Annotator(
        tmp_path / "mc", "default-biggan", mode="multiclass", classes=["background", "object", "part"], seed=0
    )
    for name in ("background", "object", "part", "ignore", "prediction (outlines)"):
        assert name in annotator.legend.value
    prediction = np.zeros((64, 64), np.uint8)
    prediction[16:48, 16:48] = 1
    annotator._prediction = prediction
    shown, plain = annotator.shown_image(), np.asarray(annotator._image.repeat(SCALE, 0).repeat(SCALE, 1))
    white = np.array([255, 255, 255], np.uint8)
    inside = np.s_[16 * SCALE + 4 : 48 * SCALE - 4, 16 * SCALE + 4 : 48 * SCALE - 4]
    np.testing.assert_array_equal(shown[inside], plain[inside])  # no fill that could pass for a stroke
    assert (shown[16 * SCALE, 20 * SCALE : 40 * SCALE] == white).all()  # the outline, in the object colour
    np.testing.assert_array_equal(shown[: 16 * SCALE - 1], plain[: 16 * SCALE - 1])
    annotator.show_prediction.value = False
    np.testing.assert_array_equal(annotator.shown_image(), plain)
