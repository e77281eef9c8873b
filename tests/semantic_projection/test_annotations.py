import json

import numpy as np
import pytest
from PIL import Image

from helpers.semantic_projection.annotations import AnnotationError, AnnotationStore, GeneratorRef
from helpers.semantic_projection.fitting import IGNORE_INDEX


@pytest.fixture
def store(tmp_path, stylegan):
    return AnnotationStore.create(tmp_path / "data", "default-stylegan2", model=stylegan)


def _mask():
    mask = np.zeros((64, 64), np.uint8)
    mask[:10], mask[50:] = 255, 128
    return mask


def _z(seed=0):
    return np.random.default_rng(seed).standard_normal(64).astype(np.float32)


def test_save_load_round_trip_and_labels(store):
    saved = store.save(_mask(), _z(), noise_seed=7, truncation=0.5)
    assert (saved.id, saved.version, store.version, len(store)) == (0, 1, 1, 1)
    reopened = AnnotationStore(store.root)
    (loaded,) = reopened.load_all()
    np.testing.assert_array_equal(loaded.mask, _mask())
    np.testing.assert_array_equal(loaded.z, _z())  # float32 values survive JSON exactly
    assert (loaded.noise_seed, loaded.truncation, reopened.version) == (7, 0.5, 1)
    record = json.loads(loaded.json_path.read_text())
    assert record["generator"]["name"] == "default-stylegan2" and len(record["generator"]["sha256"]) == 64
    assert record["mode"] == "binary" and record["mask"] == "000000.png"

    labels = store.labels(loaded.mask)
    assert labels.dtype == np.int64
    assert (labels[:10] == 1).all() and (labels[50:] == 0).all() and (labels[10:50] == IGNORE_INDEX).all()
    rgb = np.repeat(loaded.mask[..., None], 3, axis=2)  # the reference's RGB masks read the same
    np.testing.assert_array_equal(store.labels(rgb), labels)
    (sample,) = store.training_samples()
    np.testing.assert_array_equal(sample.labels, labels)
    assert sample.noise_seed == 7 and sample.truncation == 0.5


def test_versions_ids_and_no_overwrite(store):
    first = store.save(_mask(), _z(0), 1, 0.5)
    second = store.save(_mask(), _z(1), 2, 0.5)
    assert (first.id, second.id, store.version) == (0, 1, 2)
    with pytest.raises(FileExistsError, match="never overwritten"):
        store.save(np.zeros((64, 64), np.uint8), _z(2), 3, 0.5, sample_id=first.id)
    np.testing.assert_array_equal(store.load(first.id).mask, _mask())

    store.delete(first.id)
    assert store.ids() == [1] and store.version == 3
    assert (store.root / "deleted" / "000000.json").exists()
    # a stale counter in store.json never leads to a reused id
    info = json.loads(store.index_path.read_text())
    info.update(next_id=0, version=0)
    store.index_path.write_text(json.dumps(info))
    third = AnnotationStore(store.root).save(_mask(), _z(3), 4, 0.5)
    assert third.id == 2 and third.version > 2  # above the live sample 1, which recorded version 2
    with pytest.raises(KeyError):
        store.delete(first.id)


def test_failed_save_leaves_no_file(store, monkeypatch):
    store.save(_mask(), _z(), 1, 0.5)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        store.save(_mask(), _z(1), 2, 0.5)
    assert sorted(p.name for p in store.samples_dir.iterdir()) == ["000000.json", "000000.png"]
    assert store.version == 1 and AnnotationStore(store.root).version == 1
    for bad, match in [(np.zeros((32, 32), np.uint8), "is \\(32, 32\\)"), (_mask().astype(float), "integers")]:
        with pytest.raises(ValueError, match=match):
            store.save(bad, _z(), 1, 0.5)
    with pytest.raises(ValueError, match="z has 3 values"):
        store.save(_mask(), np.zeros(3), 1, 0.5)


def test_clear_errors_name_the_file(store, tmp_path):
    with pytest.raises(AnnotationError, match="store.json"):
        AnnotationStore(tmp_path / "nowhere")
    saved = store.save(_mask(), _z(), 1, 0.5)

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(saved.png_path)
    with pytest.raises(AnnotationError, match=f"{saved.png_path}.*32, 32"):
        store.load_all()
    saved.png_path.write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match=f"could not read the mask {saved.png_path}"):
        store.load(saved.id)
    saved.png_path.unlink()
    with pytest.raises(AnnotationError, match=f"missing file: {saved.png_path}"):
        store.load(saved.id)

    Image.fromarray(_mask()).save(saved.png_path)
    saved.json_path.write_text("{broken")
    with pytest.raises(AnnotationError, match=f"could not read {saved.json_path}"):
        store.load(saved.id)
    saved.json_path.unlink()
    with pytest.raises(AnnotationError, match=f"{saved.png_path} has no sample JSON"):
        store.load_all()


def test_generator_reference_is_checked(store, tmp_path, stylegan):
    assert store.load_generator().resolution == 64
    assert store.generator.path == "default_stylegan2.pt"  # a known name keeps no machine-specific path
    copy = tmp_path / "g.pt"
    copy.write_bytes(store.generator.resolved_path().read_bytes())
    ref = GeneratorRef.from_model(copy, stylegan)
    assert ref.name is None and ref.sha256 == store.generator.sha256 and ref.path == str(copy.resolve())
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(AnnotationError, match=f"{copy} is not the generator"):
        ref.load()
    with pytest.raises(AnnotationError, match="not default-biggan"):
        AnnotationStore.open_or_create(store.root, "default-biggan")
    with pytest.raises(FileExistsError):
        AnnotationStore.create(store.root, "default-stylegan2", model=stylegan)


def test_multiclass_mode(tmp_path, stylegan):
    store = AnnotationStore.create(
        tmp_path / "mc", "default-stylegan2", "multiclass", ["sky", "road", "car"], model=stylegan
    )
    mask = np.full((64, 64), 255, np.uint8)
    mask[0, :3] = [0, 1, 2]
    saved = store.save(mask, _z(), 1, 0.5)
    labels = store.labels(store.load(saved.id).mask)
    assert labels[0, :4].tolist() == [0, 1, 2, IGNORE_INDEX] and store.ignore_value == 255
    mask[5, 5] = 3
    with pytest.raises(ValueError, match="neither a class index"):
        store.save(mask, _z(), 1, 0.5)
    with pytest.raises(ValueError, match="needs class names"):
        AnnotationStore.create(tmp_path / "mc2", "default-stylegan2", "multiclass", model=stylegan)


@pytest.mark.parametrize("drop", ["generator", "sha256"])
def test_a_store_json_without_its_generator_is_named(store, drop):
    info = json.loads(store.index_path.read_text())
    if drop == "generator":
        del info["generator"]
    else:
        del info["generator"]["sha256"]
    store.index_path.write_text(json.dumps(info))
    expected = "lacks ['generator']" if drop == "generator" else ": its generator record is incomplete"
    with pytest.raises(AnnotationError) as err:
        AnnotationStore(store.root)
    assert f"store.json {expected}".replace(" :", ":") in str(err.value)
