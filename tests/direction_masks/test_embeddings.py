"""Tests for helpers.direction_masks.embeddings: reference preprocessing, HDF5/.npy outputs, unreadable files, resume,
adapters."""

from __future__ import annotations

import functools
import pickle
import sys
import types
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.core import distributed
from helpers.direction_masks.embeddings import (
    BIGBIGAN_HANDLE,
    ENCODED,
    PENDING,
    UNREADABLE,
    EmbeddingsMismatchError,
    HubBigBiGANEncoder,
    TorchEncoder,
    UnreadableImagesWarning,
    encode_folder,
    load_image,
    preprocess,
    reconstruct,
)
from helpers.gans.base import Generator
from helpers.gans.encoder import LatentEncoder

# sorted listing of the folder below; "broken.jpg" is not an image
NAMES = ["a_rgb.png", "b_gray.png", "broken.jpg", "c_rgba.png", "d_palette.png", "sub/e_wide.jpg", "sub/é_tall.png"]
READABLE = [n for n in NAMES if n != "broken.jpg"]


def make_folder(root: Path) -> Path:
    """Seven files of different sizes and modes, one in a subfolder, one corrupt, plus a non-image to ignore."""
    rng = np.random.default_rng(0)

    def save(name: str, h: int, w: int, mode: str) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)

    save("a_rgb.png", 40, 40, "RGB")
    save("b_gray.png", 30, 50, "L")
    save("c_rgba.png", 50, 36, "RGBA")
    save("d_palette.png", 33, 33, "P")
    save("sub/e_wide.jpg", 20, 70, "RGB")
    save("sub/é_tall.png", 90, 24, "RGB")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"))


def tiny_encoder(seed: int = 0) -> TorchEncoder:
    torch.manual_seed(seed)
    return TorchEncoder(LatentEncoder(dim_z=8, resolution=32, ch=8, max_ch=16))


class Counting:
    """Wraps an encoder: counts the images it encodes and raises on batch number `fail_on` (1-based)."""

    def __init__(self, inner: TorchEncoder, fail_on: int | None = None):
        self.inner, self.fail_on = inner, fail_on
        self.description, self.input_size, self.dim_z = inner.description, inner.input_size, inner.dim_z
        self.batches, self.images = 0, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches += 1
        if self.batches == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        self.images += len(batch)
        return self.inner(batch)


def encode_quietly(*args, **kwargs):
    """encode_folder without the progress bar, returning the result and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = encode_folder(*args, progress=False, **kwargs)
    return result, caught


# --- preprocessing -------------------------------------------------------------------------------------------


def test_preprocess_exact_values_and_centre_crop_offset() -> None:
    # 3x2 (WxH): shorter side already 2, so no resize; the crop offset is round(0.5) = 0, as in torchvision
    pixels = np.array(
        [[[0, 51, 255], [102, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8
    )
    out = preprocess(Image.fromarray(pixels), 2)
    assert out.dtype == np.float32 and out.shape == (3, 2, 2)
    expected = (2 * (pixels[:, :2].astype(np.float32) / 255) - 1).transpose(2, 0, 1)
    np.testing.assert_array_equal(out, expected)
    assert out[1, 0, 0] == np.float32(2 * np.float32(51 / 255) - 1)
    # 5x2: offset round(1.5) = 2 (Python rounds half to even, like torchvision), not 1
    wide = np.arange(5, dtype=np.uint8)[None, :, None].repeat(2, 0).repeat(3, 2) * 50
    np.testing.assert_array_equal(preprocess(Image.fromarray(wide), 2)[0, 0], 2 * np.float32([100, 150]) / 255 - 1)


@pytest.mark.parametrize("size_wh", [(70, 20), (24, 90), (10, 12), (32, 32)])
def test_preprocess_resizes_shorter_side_then_crops_square(size_wh: tuple[int, int]) -> None:
    grey = Image.new("RGB", size_wh, (0, 128, 255))
    out = preprocess(grey, 16)
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out[:, 0, 0], [-1, 2 * 128 / 255 - 1, 1], atol=1e-6)  # bilinear keeps constants
    assert out.min() >= -1 and out.max() <= 1


def test_preprocess_keeps_the_centre_of_a_long_image() -> None:
    # 60x20, red in columns 16-43: Resize(10) -> 30x10 and CenterCrop(10) keep source columns 20-39 (plus the
    # bilinear filter's reach of 2), so only red remains; an off-centre crop would show the black sides
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 16:44, 0] = 255
    out = preprocess(Image.fromarray(pixels), 10)
    np.testing.assert_allclose(out[0], 1, atol=1e-6)
    np.testing.assert_allclose(out[1:], -1, atol=1e-6)


def test_preprocess_matches_pil_bilinear_antialiased_resize() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8))
    reference = np.asarray(image.resize((16, 8), Image.Resampling.BILINEAR).crop((4, 0, 12, 8)), np.float32)
    np.testing.assert_array_equal(preprocess(image, 8), (2 * (reference / 255) - 1).transpose(2, 0, 1))


def test_load_image_names_unreadable_file(folder: Path) -> None:
    from helpers.data.folders import UnreadableFilesError

    with pytest.raises(UnreadableFilesError, match="broken.jpg"):
        load_image(folder / "broken.jpg", 8)


# --- outputs, unreadable files, batching ---------------------------------------------------------------------


def test_outputs_are_consistent_sorted_and_report_unreadable(folder: Path, tmp_path: Path) -> None:
    encoder = tiny_encoder()
    result, caught = encode_quietly(folder, encoder, tmp_path / "out", batch_size=3)

    assert result.names == READABLE
    assert result.npy_path == tmp_path / "out.npy" and result.h5_path == tmp_path / "out.h5"
    z = np.load(result.npy_path)
    assert z.dtype == np.float32 and z.shape == (len(READABLE), 8)
    np.testing.assert_array_equal(z, result.z)
    with h5py.File(result.h5_path, "r") as f:
        assert list(f["names"].asstr()[:]) == NAMES
        status = f["status"][:]
        assert [NAMES[i] for i in np.flatnonzero(status == ENCODED)] == READABLE
        assert status[NAMES.index("broken.jpg")] == UNREADABLE
        np.testing.assert_array_equal(f["z"][:][status == ENCODED], z)
        assert np.isnan(f["z"][NAMES.index("broken.jpg")]).all()
        assert f.attrs["encoder"] == encoder.description and f.attrs["dim_z"] == 8
        assert f.attrs["input_size"] == 32 and f.attrs["folder"] == str(folder)
    # each code is the encoder applied to the preprocessed file on its own
    for name, code in zip(READABLE, z):
        np.testing.assert_allclose(code, encoder(load_image(folder / name, 32)[None])[0], rtol=1e-5, atol=1e-5)

    assert [name for name, _ in result.unreadable] == ["broken.jpg"]
    assert "UnidentifiedImageError" in result.unreadable[0][1]
    lines = result.unreadable_path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("broken.jpg\t")
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert len(messages) == 1 and "broken.jpg" in messages[0] and "1 unreadable" in messages[0]


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_batch_sizes_not_dividing_n_give_the_same_codes(folder: Path, tmp_path: Path, batch_size: int) -> None:
    reference, _ = encode_quietly(folder, tiny_encoder(), tmp_path / "ref", batch_size=6)
    result, _ = encode_quietly(folder, tiny_encoder(), tmp_path / "other", batch_size=batch_size)
    assert result.names == reference.names
    np.testing.assert_allclose(result.z, reference.z, rtol=1e-5, atol=1e-6)


def test_clean_folder_writes_empty_unreadable_list_and_no_warning(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (8 + i, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    result, caught = encode_quietly(tmp_path, tiny_encoder(), tmp_path / "out" / "codes.npy")
    assert result.npy_path == tmp_path / "out" / "codes.npy" and np.load(result.npy_path).shape == (3, 8)
    assert result.unreadable == [] and result.unreadable_path.read_text() == ""
    assert not [w for w in caught if issubclass(w.category, UnreadableImagesWarning)]


def test_warning_lists_at_most_twenty_files(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "ok.png")
    for i in range(25):
        (images / f"bad{i:02d}.jpg").write_bytes(b"junk")
    result, caught = encode_quietly(images, tiny_encoder(), tmp_path / "out", batch_size=7)
    assert len(result.unreadable) == 25 and len(result.z) == 1
    message = str(caught[0].message)
    assert "bad19.jpg" in message and "bad20.jpg" not in message and "and 5 more" in message
    assert len(result.unreadable_path.read_text().splitlines()) == 25


def test_relative_out_path_goes_to_embeddings_dir(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GANSEG_EMBEDDINGS_DIR", str(tmp_path / "emb"))
    result, _ = encode_quietly(folder, tiny_encoder(), "cub_train")
    assert result.npy_path == tmp_path / "emb" / "cub_train.npy" and result.npy_path.exists()


def test_wrong_code_shape_is_an_error(folder: Path, tmp_path: Path) -> None:
    encoder = tiny_encoder()
    encoder.dim_z = 7
    with pytest.raises(ValueError, match=r"shape \(2, 8\), expected \(2, 7\)"):
        encode_quietly(folder, encoder, tmp_path / "out", batch_size=2)


# --- resume ----------------------------------------------------------------------------------------------------


def test_resume_after_interruption_encodes_only_the_rest(folder: Path, tmp_path: Path) -> None:
    uninterrupted, _ = encode_quietly(folder, tiny_encoder(), tmp_path / "full", batch_size=2)

    first = Counting(tiny_encoder(), fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        encode_quietly(folder, first, tmp_path / "part", batch_size=2)
    assert first.images == 3 and not (tmp_path / "part.npy").exists()  # rows 0, 1, 3 (row 2 is broken.jpg)
    with h5py.File(tmp_path / "part.h5", "r") as f:
        status = f["status"][:]
    assert (status[:4] != PENDING).all() and (status[4:] == PENDING).all()  # the two batches before the failure

    second = Counting(tiny_encoder())
    resumed, _ = encode_quietly(folder, second, tmp_path / "part", batch_size=2)
    assert second.images == 3  # rows 4-6; broken.jpg is tried again but never reaches the encoder
    assert resumed.names == uninterrupted.names
    # the retried broken.jpg regroups the remaining rows into other batches, so allow float rounding
    np.testing.assert_allclose(resumed.z, uninterrupted.z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(resumed.npy_path), resumed.z)
    assert resumed.unreadable == uninterrupted.unreadable

    third = Counting(tiny_encoder())
    again, _ = encode_quietly(folder, third, tmp_path / "part", batch_size=2)
    assert third.images == 0
    np.testing.assert_array_equal(again.z, resumed.z)


def test_two_processes_encode_as_one_and_finish_an_interrupted_file(folder: Path, tmp_path: Path) -> None:
    """Under torchrun each rank encodes every second batch and rank 0 writes them into the one file."""
    one, _ = encode_quietly(folder, tiny_encoder(), tmp_path / "one", batch_size=2)
    job = functools.partial(encode_folder, folder, tiny_encoder(), tmp_path / "two", batch_size=2, progress=False)
    distributed.launch(job, 2, tmp_path / "job")
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), one.z, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two.unreadable.txt").read_text() == one.unreadable_path.read_text()
    with h5py.File(tmp_path / "two.h5", "r") as f, h5py.File(one.h5_path, "r") as g:
        np.testing.assert_array_equal(f["status"][:], g["status"][:])
    # a file interrupted in one process is finished by two
    with pytest.raises(KeyboardInterrupt):
        encode_quietly(folder, Counting(tiny_encoder(), fail_on=2), tmp_path / "part", batch_size=2)
    job = functools.partial(encode_folder, folder, tiny_encoder(), tmp_path / "part", batch_size=2, progress=False)
    distributed.launch(job, 2, tmp_path / "job")
    np.testing.assert_allclose(np.load(tmp_path / "part.npy"), one.z, rtol=1e-5, atol=1e-6)


def test_codes_made_elsewhere_are_never_overwritten(folder: Path, tmp_path: Path) -> None:
    """A .npy of the same name without encode_folder's .h5 (e.g. the downloaded BigBiGAN embeddings) is refused."""
    theirs = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "BigBiGAN_CUB_train_z.npy", theirs)
    with pytest.raises(EmbeddingsMismatchError, match="BigBiGAN_CUB_train_z.npy exists without the .* not overwritten"):
        encode_quietly(folder, tiny_encoder(), tmp_path / "BigBiGAN_CUB_train_z.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "BigBiGAN_CUB_train_z.npy"), theirs)
    assert not (tmp_path / "BigBiGAN_CUB_train_z.h5").exists()


def test_other_encoder_is_refused_and_file_kept(folder: Path, tmp_path: Path) -> None:
    encode_quietly(folder, tiny_encoder(seed=0), tmp_path / "out")
    before = (tmp_path / "out.h5").read_bytes()
    with pytest.raises(EmbeddingsMismatchError, match=r"(?s)out\.h5.*encoder.*new out_path"):
        encode_quietly(folder, tiny_encoder(seed=1), tmp_path / "out")
    assert (tmp_path / "out.h5").read_bytes() == before


def test_changed_folder_listing_is_refused(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images")
    encode_quietly(images, tiny_encoder(), tmp_path / "out")
    Image.new("RGB", (8, 8)).save(images / "zz_new.png")
    with pytest.raises(EmbeddingsMismatchError, match=r"(?s)1 new file.*zz_new\.png.*new out_path"):
        encode_quietly(images, tiny_encoder(), tmp_path / "out")


def test_other_folder_with_same_listing_is_refused(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "0.png")
    encode_quietly(tmp_path / "one", tiny_encoder(), tmp_path / "out")
    with pytest.raises(EmbeddingsMismatchError, match="folder"):
        encode_quietly(tmp_path / "two", tiny_encoder(), tmp_path / "out")


def test_foreign_hdf5_file_is_refused(folder: Path, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "out.h5", "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(EmbeddingsMismatchError, match="not an encode_folder file"):
        encode_quietly(folder, tiny_encoder(), tmp_path / "out")


# --- TF-Hub adapter --------------------------------------------------------------------------------------------


class FakeEncodeSignature:
    """Duck-typed TF2 signature of the BigBiGAN module: one input `x`, a dict of outputs."""

    structured_input_signature = ((), {"x": "TensorSpec([None, 256, 256, 3], float32)"})

    def __init__(self, outputs: tuple[str, ...] = ("z_mean", "z_sample")):
        self.outputs, self.inputs = outputs, []

    def __call__(self, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        (x,) = kwargs.values()
        self.inputs.append(kwargs)
        pooled = x.mean(axis=(1, 2))  # [B, 3], so the test can tell NHWC from NCHW
        values = {"z_mean": np.zeros((len(x), 120)), "z_sample": np.tile(pooled, (1, 40))}
        return {key: values[key] for key in self.outputs}


@pytest.fixture
def fake_tf(monkeypatch):
    """Fake tensorflow / tensorflow_hub modules whose hub.load returns an object with the fake signature."""
    signature = FakeEncodeSignature()
    tf = types.SimpleNamespace(
        float32="float32", convert_to_tensor=lambda x, dtype: np.asarray(x, {"float32": np.float32}[dtype])
    )
    hub = types.SimpleNamespace(handles=[])

    def load(handle: str):
        hub.handles.append(handle)
        return types.SimpleNamespace(signatures={"encode": signature})

    hub.load = load
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    monkeypatch.setitem(sys.modules, "tensorflow_hub", hub)
    return signature, hub


def test_hub_adapter_feeds_nhwc_256_and_returns_z_sample(fake_tf, folder: Path, tmp_path: Path) -> None:
    signature, hub = fake_tf
    encoder = HubBigBiGANEncoder()
    assert hub.handles == ["https://tfhub.dev/deepmind/bigbigan-resnet50/1"]
    assert (encoder.input_size, encoder.dim_z) == (256, 120)
    result, _ = encode_quietly(folder, encoder, tmp_path / "bigbigan", batch_size=4)  # broken.jpg is in batch 1

    assert np.load(result.npy_path).shape == (len(READABLE), 120)
    x = signature.inputs[0]["x"]
    assert list(signature.inputs[0]) == ["x"] and x.dtype == np.float32 and x.shape == (3, 256, 256, 3)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    first = np.ascontiguousarray(load_image(folder / NAMES[0], 256).transpose(1, 2, 0))
    np.testing.assert_array_equal(x[0], first)
    np.testing.assert_allclose(result.z[0], np.tile(first.mean(axis=(0, 1)), 40), rtol=1e-5)  # z_sample, not z_mean
    # handed to another process (torchrun), it is pickled as its handle and loaded again there
    again = pickle.loads(pickle.dumps(encoder))
    assert hub.handles == [BIGBIGAN_HANDLE] * 2 and again.description == encoder.description


def test_hub_adapter_missing_z_sample_is_an_error(fake_tf) -> None:
    signature, _ = fake_tf
    signature.outputs = ("z_mean",)
    with pytest.raises(KeyError, match="z_sample"):
        HubBigBiGANEncoder("/local/module")(np.zeros((1, 3, 256, 256), np.float32))


def test_hub_adapter_without_tensorflow_names_the_convert_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[convert\]"'):
        HubBigBiGANEncoder()


def test_hub_adapter_with_real_tensorflow(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow", reason='needs TensorFlow: pip install -e ".[convert]"')
    pytest.importorskip("tensorflow_hub", reason='needs tensorflow_hub: pip install -e ".[convert]"')

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32)])
        def encode(self, x):
            return {"z_mean": tf.zeros([tf.shape(x)[0], 120]), "z_sample": tf.tile(tf.reduce_mean(x, [1, 2]), [1, 40])}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "hub"), signatures={"encode": module.encode})
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    z = HubBigBiGANEncoder(str(tmp_path / "hub"))(batch)
    np.testing.assert_allclose(z, np.tile(batch.mean(axis=(2, 3)), (1, 40)), rtol=1e-4, atol=1e-5)


# --- reconstructions -------------------------------------------------------------------------------------------


class TinyGenerator(Generator):
    """z [B, 8] -> images [B, 3, 16, 16] in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.dim_z, self.resolution, self.config = 8, 16, {}
        self.linear = torch.nn.Linear(8, 3 * 16 * 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z)).view(-1, 3, 16, 16)


def test_reconstruct_puts_x_beside_g_of_e_of_x(folder: Path) -> None:
    torch.manual_seed(0)
    generator, encoder = TinyGenerator().eval(), tiny_encoder()
    paths = [folder / "a_rgb.png", folder / "sub/e_wide.jpg"]
    pairs = reconstruct(generator, encoder, paths)
    assert pairs.dtype == np.uint8 and pairs.shape == (2, 16, 32, 3)

    x = load_image(paths[1], 16)
    np.testing.assert_array_equal(pairs[1, :, :16], ((x + 1) * 127.5).round().astype(np.uint8).transpose(1, 2, 0))
    with torch.no_grad():
        g = generator(torch.from_numpy(encoder(load_image(paths[1], 32)[None])))[0].numpy()
    expected = ((g + 1) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(pairs[1, :, 16:].astype(int) - expected).max() <= 1


def test_pick_encoder_rejects_unknown_kinds():
    from helpers.direction_masks.embeddings import pick_encoder

    with pytest.raises(ValueError, match="encoder kind must be"):
        pick_encoder("vae")


def test_pick_encoder_auto_falls_back_to_the_default_pair(tmp_path, monkeypatch):
    """Without BigBiGAN weights, 'auto' asks for the shipped default pair (named in the error here)."""
    from helpers.direction_masks.embeddings import pick_encoder
    from helpers.gans import CheckpointError

    monkeypatch.setenv("GANSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="default_biggan_encoder.pt"):
        pick_encoder("auto")
