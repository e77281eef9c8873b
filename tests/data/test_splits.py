import h5py
import numpy as np
import pytest

from helpers.data.procedural import render
from helpers.data.splits import SPLIT_STREAMS, ProceduralSplits, ensure_splits, export_folders, load_split

SPEC = ProceduralSplits(size=32, n_train=20, n_val=5, n_test=7, seed=2)


def test_splits_render_once_and_match_render():
    path = ensure_splits(SPEC, progress=False)
    mtime = path.stat().st_mtime_ns
    assert ensure_splits(SPEC, progress=False) == path and path.stat().st_mtime_ns == mtime
    for split, stream in SPLIT_STREAMS.items():
        images, labels = load_split(SPEC, split, progress=False)
        assert images.shape == (SPEC.count(split), 32, 32, 3) and labels.shape == (SPEC.count(split), 32, 32)
        image, label = render(SPEC.seed, SPEC.count(split) - 1, 32, stream)
        assert np.array_equal(images[-1], image) and np.array_equal(labels[-1], label)
    assert not list(path.parent.glob("*.part"))


def test_splits_are_disjoint_and_smaller_sets_are_prefixes():
    train, _ = load_split(SPEC, "train", progress=False)
    test, _ = load_split(SPEC, "test", progress=False)
    assert not any(np.array_equal(a, b) for a in train for b in test)
    small = ProceduralSplits(size=32, n_train=4, n_val=1, n_test=1, seed=2)
    assert small.path != SPEC.path
    assert np.array_equal(load_split(small, "train", progress=False)[0], train[:4])


def test_corrupt_cache_is_rendered_again():
    spec = ProceduralSplits(size=32, n_train=3, n_val=1, n_test=1, seed=5)
    path = ensure_splits(spec, progress=False)
    path.write_bytes(b"not an hdf5 file")
    with pytest.warns(UserWarning, match="re-rendering"):
        ensure_splits(spec, progress=False)
    with h5py.File(path) as f:
        assert f["train/images"].shape == (3, 32, 32, 3)


def test_unknown_split():
    with pytest.raises(KeyError, match="unknown split"):
        load_split(SPEC, "dev")


def test_export_folders_gives_the_benchmark_layout(tmp_path):
    from helpers.data.folders import ImageMaskFolder

    images_dir, masks_dir = export_folders(SPEC, "test", tmp_path / "proc", n=5)
    dataset = ImageMaskFolder(images_dir, masks_dir)
    images, labels = load_split(SPEC, "test", progress=False)
    assert len(dataset) == 5 and dataset[4].name == "00004"
    assert np.array_equal(dataset[4].image, images[4]) and np.array_equal(dataset[4].mask, labels[4] > 0)
    mtime = (images_dir / "00000.png").stat().st_mtime_ns
    export_folders(SPEC, "test", tmp_path / "proc", n=5)  # complete export: reused
    assert (images_dir / "00000.png").stat().st_mtime_ns == mtime
    export_folders(SPEC, "test", tmp_path / "proc", n=3)  # different size: rewritten
    assert len(list(images_dir.glob("*.png"))) == len(list(masks_dir.glob("*.png"))) == 3
