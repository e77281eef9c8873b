import numpy as np
import pytest

from helpers.segmentation.shards import ShardDataset
from helpers.semantic_projection.decoder import generate_images
from helpers.semantic_projection.fitting import FitConfig
from helpers.widgets.annotator import Annotator

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
    assert len(ShardDataset(folder)) == 3 and folder.name == "v000001"
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
