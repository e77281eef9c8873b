"""Tests for helpers.data.folders: pairing, error reporting, mask rules and the benchmark registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data.folders import (
    BENCHMARKS,
    DuplicateKeysError,
    FolderDatasetError,
    ImageMaskFolder,
    SizeMismatchError,
    UnmatchedFilesError,
    UnreadableFilesError,
    flowers_key,
    flowers_mask,
    open_benchmark,
    parse_benchmarks,
    read_labelled,
    read_rgb,
    threshold_mask,
)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write `array` as an image at `path` (format from the extension), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8))
    (img.convert(mode) if mode else img).save(path)
    return path


def rgb(h: int = 4, w: int = 6, value: int = 90) -> np.ndarray:
    """A small constant RGB image."""
    return np.full((h, w, 3), value, np.uint8)


def half_mask(h: int = 4, w: int = 6) -> np.ndarray:
    """A grayscale mask whose left half is foreground (255)."""
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = 255
    return mask


def test_pairs_by_stem_across_extensions_ignoring_hidden_and_non_images(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    save(images / "a.jpg", rgb())
    save(images / "b.PNG", rgb())
    save(images / "c.bmp", rgb())
    save(masks / "a.png", half_mask())
    save(masks / "b.tif", half_mask())
    save(masks / "c.WEBP", half_mask())
    save(images / ".hidden.png", rgb())  # would be unmatched if not ignored
    (masks / "notes.txt").write_text("not an image")
    (masks / "Thumbs.db").write_bytes(b"\0" * 16)

    ds = ImageMaskFolder(images, masks)

    assert len(ds) == 3
    assert [p.name for p in ds.pairs] == ["a", "b", "c"]
    assert ds.pairs[1].image_path == images / "b.PNG" and ds.pairs[1].mask_path == masks / "b.tif"
    sample = ds[2]
    assert sample.name == "c"
    assert sample.image.dtype == np.uint8 and sample.image.shape == (4, 6, 3)
    assert sample.mask.dtype == bool and sample.mask.shape == (4, 6)
    np.testing.assert_array_equal(sample.mask, half_mask() == 255)


def test_nested_class_folders_are_walked(tmp_path: Path) -> None:
    for cls, name in [("001.Albatross", "Albatross_0001"), ("002.Crow", "Crow_0002")]:
        save(tmp_path / "images" / cls / f"{name}.jpg", rgb())
        save(tmp_path / "segmentations" / cls / f"{name}.png", half_mask())
    save(tmp_path / "images" / ".ipynb_checkpoints" / "junk.jpg", rgb())  # hidden folder is skipped

    ds = ImageMaskFolder(tmp_path / "images", tmp_path / "segmentations")

    assert [p.name for p in ds.pairs] == ["Albatross_0001", "Crow_0002"]
    assert ds.pairs[1].mask_path == tmp_path / "segmentations" / "002.Crow" / "Crow_0002.png"
    assert ds[1].mask.sum() == 12


def test_unmatched_files_on_both_sides_are_all_listed(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ["paired", "img_only1", "img_only2"]:
        save(images / f"{stem}.jpg", rgb())
    for stem in ["paired", "mask_only"]:
        save(masks / f"{stem}.png", half_mask())

    with pytest.raises(UnmatchedFilesError) as info:
        ImageMaskFolder(images, masks)

    err = info.value
    assert isinstance(err, ValueError)
    assert [p.name for p in err.images_only] == ["img_only1.jpg", "img_only2.jpg"]
    assert [p.name for p in err.masks_only] == ["mask_only.png"]
    message = str(err)
    for text in ["img_only1.jpg", "img_only2.jpg", "mask_only.png", str(images), str(masks)]:
        assert text in message
    assert "paired" not in message

    (images / "img_only1.jpg").unlink()
    (images / "img_only2.jpg").unlink()
    with pytest.raises(UnmatchedFilesError, match=r"1 mask\(s\) in .*\n  mask_only.png") as info:  # masks side only
        ImageMaskFolder(images, masks)
    assert info.value.images_only == []


def test_long_unmatched_list_is_cut_with_a_count(tmp_path: Path) -> None:
    save(tmp_path / "masks" / "m.png", half_mask())
    save(tmp_path / "images" / "m.jpg", rgb())
    for i in range(25):
        save(tmp_path / "images" / f"x{i:02d}.png", rgb(2, 2))

    with pytest.raises(UnmatchedFilesError) as info:
        ImageMaskFolder(tmp_path / "images", tmp_path / "masks")

    message = str(info.value)
    assert len(info.value.images_only) == 25
    assert "25 image(s)" in message and "x19.png" in message and "x20.png" not in message
    assert "... and 5 more" in message


def test_duplicate_stems_are_an_error_listing_them(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.jpg", rgb())
    save(tmp_path / "images" / "a.png", rgb())
    save(tmp_path / "images" / "sub" / "b.jpg", rgb())
    save(tmp_path / "images" / "b.jpg", rgb())
    save(tmp_path / "images" / "c.jpg", rgb())
    for stem in "abc":
        save(tmp_path / "masks" / f"{stem}.png", half_mask())

    with pytest.raises(DuplicateKeysError) as info:
        ImageMaskFolder(tmp_path / "images", tmp_path / "masks")

    assert sorted(info.value.duplicates) == ["a", "b"]
    message = str(info.value)
    for text in ["a.jpg", "a.png", str(Path("sub") / "b.jpg"), str(tmp_path / "images")]:
        assert text in message


def test_verify_lists_every_unreadable_file(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ["ok", "garbage", "truncated"]:
        save(images / f"{stem}.jpg", rgb(64, 64))
        save(masks / f"{stem}.png", half_mask(64, 64))
    (images / "garbage.jpg").write_bytes(b"this is not an image")
    whole = (masks / "truncated.png").read_bytes()
    (masks / "truncated.png").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(UnreadableFilesError) as info:
        ImageMaskFolder(images, masks)
    assert sorted(p.name for p, _ in info.value.failures) == ["garbage.jpg", "truncated.png"]
    assert str(images / "garbage.jpg") in str(info.value) and str(masks / "truncated.png") in str(info.value)

    ds = ImageMaskFolder(images, masks, verify=False)  # lazy mode still names the file on access
    assert ds[1].name == "ok"
    with pytest.raises(UnreadableFilesError, match="garbage.jpg"):
        ds[0]
    with pytest.raises(UnreadableFilesError, match="truncated.png"):
        ds.verify()


def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    save(images / "big.jpg", rgb(10, 20))
    save(masks / "big.png", half_mask(10, 20))  # pairs may differ in size from each other
    save(images / "bad.jpg", rgb(4, 6))
    save(masks / "bad.png", half_mask(5, 6))

    with pytest.raises(SizeMismatchError) as info:
        ImageMaskFolder(images, masks)
    message = str(info.value)
    assert str(images / "bad.jpg") in message and str(masks / "bad.png") in message
    assert "6x4" in message and "6x5" in message and "big" not in message

    ds = ImageMaskFolder(images, masks, verify=False)
    assert ds[1].image.shape == (10, 20, 3)
    with pytest.raises(SizeMismatchError, match="6x5"):
        ds[0]


def test_threshold_rule_is_channel0_at_least_half() -> None:
    gray = Image.fromarray(np.array([[127, 128, 0, 255]], np.uint8))
    np.testing.assert_array_equal(threshold_mask(gray), [[False, True, False, True]])
    np.testing.assert_array_equal(threshold_mask(gray, threshold=1.0), [[False, False, False, True]])  # >=, not >

    colour = Image.fromarray(np.array([[[0, 255, 255], [128, 0, 0]]], np.uint8))
    np.testing.assert_array_equal(threshold_mask(colour), [[False, True]])

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((1, 0), 1)
    np.testing.assert_array_equal(threshold_mask(palette), [[False, True]])


@pytest.mark.parametrize(
    "array, mode",
    [
        (np.array([[0, 1, 1, 0]], np.uint8), "L"),  # 0/1, 8-bit
        (np.array([[0, 1, 1, 0]], np.uint16), "I;16"),  # 0/1, 16-bit
        (np.array([[0, 65535, 65535, 0]], np.uint16), "I;16"),  # 0/65535
        (np.array([[0, 255, 255, 0]], np.uint16), "I;16"),  # 0/255 stored in 16 bits
        (np.array([[0, 255, 255, 0]], np.uint8), "L"),  # 0/255 (the benchmarks' own)
        (np.array([[[0, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]]], np.uint8), "RGB"),  # 0/1 in colour
    ],
)
def test_mask_encodings_are_detected(tmp_path, array, mode) -> None:
    """A 0/1 mask read as all background would score an all-background model IoU 1; every encoding gives the object."""
    path = tmp_path / "mask.png"
    Image.fromarray(array, mode if mode != "I;16" else None).save(path)
    with Image.open(path) as mask:
        mask.load()
        np.testing.assert_array_equal(threshold_mask(mask), [[False, True, True, False]])


def test_ambiguous_and_jpeg_masks(tmp_path) -> None:
    ambiguous = Image.fromarray(np.array([[0, 1000, 1000, 0]], np.uint16))
    with pytest.raises(ValueError, match="neither 0/1, 0/255 nor 0/65535"):
        threshold_mask(ambiguous)
    low = Image.fromarray(np.array([[0, 1, 1, 0]], np.uint8))  # a 0/1 mask, or noise in a black one: refused
    low.format = "JPEG"
    with pytest.raises(ValueError, match="JPEG mask whose values stay between 0 and 1 looks like a 0/1 mask"):
        threshold_mask(low)
    noisy = Image.fromarray(np.array([[0, 1, 2, 255, 250, 3]], np.uint8))  # a 0/255 JPEG mask: the reference rule
    noisy.format = "JPEG"
    np.testing.assert_array_equal(threshold_mask(noisy), [[False, False, False, True, True, False]])
    black = Image.fromarray(np.zeros((1, 4), np.uint8))
    black.format = "JPEG"
    assert not threshold_mask(black).any()
    # in a folder, the error names the file
    for sub in ("images", "ground_truth_mask"):
        (tmp_path / "ECSSD" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(tmp_path / "ECSSD" / "images" / "0001.jpg")
    ambiguous.save(tmp_path / "ECSSD" / "ground_truth_mask" / "0001.png")
    with pytest.raises(FolderDatasetError, match=r"0001.png: a I;16 mask with values 0 ... 1000"):
        open_benchmark("ECSSD", tmp_path / "ECSSD")[0]


def test_flowers_rule_treats_noisy_blue_as_background() -> None:
    pixels = np.array([[[0, 0, 254], [3, 2, 250], [20, 10, 235], [40, 60, 200], [200, 30, 40], [0, 0, 140]]])
    np.testing.assert_array_equal(
        flowers_mask(Image.fromarray(pixels.astype(np.uint8))), [[False, False, False, True, True, True]]
    )


def test_flowers_key_maps_segmim_to_image() -> None:
    assert flowers_key(Path("segmim/segmim_00001.jpg")) == "image_00001"
    assert flowers_key(Path("jpg/image_00001.jpg")) == "image_00001"
    assert flowers_key(Path("jpg/image_00002.jpg")) != flowers_key(Path("segmim/segmim_00001.jpg"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1"])
def test_non_rgb_images_become_uint8_rgb(tmp_path: Path, mode: str) -> None:
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, 3:] = 255
    save(tmp_path / "images" / "x.png", pixels, mode)
    save(tmp_path / "masks" / "x.png", half_mask())

    image = ImageMaskFolder(tmp_path / "images", tmp_path / "masks")[0].image

    assert image.dtype == np.uint8 and image.shape == (4, 6, 3)
    np.testing.assert_array_equal(image, pixels)


def test_open_benchmark_on_fake_layouts(tmp_path: Path) -> None:
    ecssd = tmp_path / "ECSSD"
    save(ecssd / "images" / "0001.jpg", rgb())
    save(ecssd / "ground_truth_mask" / "0001.png", half_mask())
    ds = open_benchmark("ecssd", ecssd)
    assert len(ds) == 1 and ds[0].mask.sum() == 12

    duts = tmp_path / "DUTS-TE"
    save(duts / "DUTS-TE-Image" / "ILSVRC2012_test_00000003.jpg", rgb())
    save(duts / "DUTS-TE-Mask" / "ILSVRC2012_test_00000003.png", half_mask())
    assert open_benchmark("DUTS-TE", duts)[0].name == "ILSVRC2012_test_00000003"

    flowers = tmp_path / "Flowers"
    photo = np.full((16, 16, 3), (60, 160, 40), np.uint8)  # red < 128: threshold rule would say background
    segmim = np.full((16, 16, 3), (0, 0, 254), np.uint8)
    segmim[:, :8] = photo[:, :8]
    save(flowers / "jpg" / "image_00001.jpg", photo)
    save(flowers / "segmim" / "segmim_00001.jpg", segmim)  # JPEG noise on purpose
    sample = open_benchmark("Flowers-102", flowers)[0]
    assert sample.name == "image_00001"
    assert sample.mask[:, :7].all() and not sample.mask[:, 9:].any()

    with pytest.raises(FileNotFoundError, match="DUTS-TE/images"):
        open_benchmark("ECSSD", duts)
    with pytest.raises(ValueError, match="DUT-OMRON"):
        open_benchmark("PASCAL-S", duts)


def test_registry_layout_names() -> None:
    layouts = {name: (b.images_subdir, b.masks_subdir) for name, b in BENCHMARKS.items()}
    assert layouts == {
        "ECSSD": ("images", "ground_truth_mask"),
        "DUTS-TE": ("DUTS-TE-Image", "DUTS-TE-Mask"),
        "DUTS-TR": ("DUTS-TR-Image", "DUTS-TR-Mask"),
        "DUT-OMRON": ("DUT-OMRON-image", "pixelwiseGT-new-PNG"),
        "CUB-200-2011": ("images", "segmentations"),
        "Flowers-102": ("jpg", "segmim"),
    }
    assert BENCHMARKS["Flowers-102"].mask_rule is flowers_mask and BENCHMARKS["ECSSD"].mask_rule is threshold_mask


def test_missing_and_empty_folders_name_the_path(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.jpg", rgb())
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageMaskFolder(tmp_path / "images", tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FolderDatasetError, match=f"no image files .* under {tmp_path / 'empty'}$"):
        ImageMaskFolder(tmp_path / "images", tmp_path / "empty")


def test_works_with_torch_dataloader(tmp_path: Path) -> None:
    torch_data = pytest.importorskip("torch.utils.data")
    save(tmp_path / "images" / "a.jpg", rgb())
    save(tmp_path / "masks" / "a.png", half_mask())

    (batch,) = list(torch_data.DataLoader(ImageMaskFolder(tmp_path / "images", tmp_path / "masks"), batch_size=1))

    assert tuple(batch.image.shape) == (1, 4, 6, 3) and list(batch.name) == ["a"]
    assert int(batch.mask.sum()) == 12


def test_parse_benchmarks_strips_names_and_folders_and_names_bad_items(tmp_path: Path) -> None:
    from helpers.core.paths import project_root

    parsed = parse_benchmarks(f" ecssd : {tmp_path}/ECSSD ;DUTS-te: data/DUTS-TE;")
    assert parsed == {"ECSSD": tmp_path / "ECSSD", "DUTS-TE": project_root() / "data" / "DUTS-TE"}
    assert parse_benchmarks("") == {} and parse_benchmarks(" ; ") == {}
    with pytest.raises(ValueError, match="'ECSSD /data' is not 'NAME: folder'"):
        parse_benchmarks("ECSSD /data")
    with pytest.raises(ValueError, match="unknown benchmark 'PASCAL'; known: ECSSD"):
        parse_benchmarks("PASCAL: /data")
    with pytest.raises(ValueError, match="ECSSD is given twice"):
        parse_benchmarks("ECSSD: /a; ecssd: /b")


def test_a_labelled_folder_is_read_as_class_indices_at_one_size(tmp_path, write_labelled):
    write_labelled(tmp_path, n=3)
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")  # palette indices are classes too
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.resize((50, 40), Image.Resampling.NEAREST).save(tmp_path / "masks" / "003.png")
    save(tmp_path / "images" / "003.jpg", np.full((40, 50, 3), 90))
    data = read_labelled(tmp_path, 32, num_classes=3)
    assert data.images.shape == (4, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (4, 32, 32) and set(np.unique(data.labels)) == {0, 1, 2}
    assert data.names == ["000", "001", "002", "003"]
    assert data.labels[3, 0, 0] == 0 and data.labels[3, -1, 0] == 2  # nearest-neighbour keeps indices exact


def test_a_labelled_folder_refuses_values_beyond_the_classes_and_colour_masks(tmp_path, write_labelled):
    write_labelled(tmp_path, n=2)
    with pytest.raises(FolderDatasetError, match=r"000.png: values \[2\]"):
        read_labelled(tmp_path, 16, num_classes=2)
    save(tmp_path / "masks" / "001.png", np.zeros((20, 20, 3)))
    save(tmp_path / "images" / "001.jpg", np.zeros((20, 20, 3)))
    with pytest.raises(FolderDatasetError, match="001.png: a class-index mask must be single-channel"):
        read_labelled(tmp_path, 16)


def test_read_rgb_gives_rgb_and_names_an_unreadable_file(tmp_path):
    save(tmp_path / "grey.png", np.full((4, 5), 7))
    assert read_rgb(tmp_path / "grey.png").shape == (4, 5, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableFilesError, match="broken.png"):
        read_rgb(tmp_path / "broken.png")
