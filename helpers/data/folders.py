"""Image-folder + mask-folder segmentation benchmarks, read at original resolution for evaluation.

`ImageMaskFolder(images_dir, masks_dir)` walks both folders recursively, pairs files by key (default: the
file stem, so ``0001.jpg`` pairs with ``0001.png``) and yields `Sample(image, mask, name)`: ``image`` uint8
(H, W, 3) RGB, ``mask`` bool (H, W), ``name`` the pair's key. Nothing is skipped silently: unmatched files,
duplicate keys, unreadable files and image/mask size mismatches each raise a `FolderDatasetError`
(a ValueError) listing the offending files. EXIF orientation is ignored, as in the reference code, because
masks are drawn on the stored pixels.

`open_benchmark(name, root)` knows the layouts as the archives unpack (``root`` is the folder that holds
both subfolders):

* ``ECSSD``: ``images/*.jpg`` + ``ground_truth_mask/*.png`` (images.zip, ground_truth_mask.zip).
* ``DUTS-TE`` / ``DUTS-TR``: ``DUTS-TE-Image/*.jpg`` + ``DUTS-TE-Mask/*.png`` inside ``DUTS-TE/``
  (likewise ``DUTS-TR-Image`` + ``DUTS-TR-Mask`` inside ``DUTS-TR/``).
* ``DUT-OMRON``: ``DUT-OMRON-image/*.jpg`` + ``pixelwiseGT-new-PNG/*.png`` (DUT-OMRON-image.zip and
  DUT-OMRON-gt-pixelwise.zip.zip unzipped side by side; a doubled ``DUT-OMRON-image/DUT-OMRON-image/``
  is fine because the walk is recursive, and the ``__MACOSX/`` sibling is never read).
* ``CUB-200-2011``: ``images/<class>/<name>.jpg`` + ``segmentations/<class>/<name>.png``. CUB_200_2011.tgz
  gives ``CUB_200_2011/images``; segmentations.tgz unpacks ``segmentations/`` separately: move it into
  ``CUB_200_2011/`` (or use a root holding both). Masks are soft (annotator agreement); >= 0.5 is foreground.
* ``Flowers-102``: ``jpg/image_00001.jpg`` + ``segmim/segmim_00001.jpg`` (102flowers.tgz,
  102segmentations.tgz). Masks are the photo with the background painted blue (0, 0, 254), JPEG-compressed.

`read_labelled(root, size)` reads a *labelled folder* for notebooks 05 and 06: ``images/`` + ``masks/`` paired
by stem, masks single-channel PNGs (mode L or P) whose values are class indices, all resized to one square size.

Sources checked for these names: lukemelas/unsupervised-image-segmentation (its README and src/config/segment.yaml)
for ECSSD, DUTS and DUT-OMRON; download scripts in several public SOD repositories for the zip names and the
``__MACOSX`` / doubled-folder quirks; mickaelChen/ReDO datasets.py (CUB ``images``/``segmentations`` with
the same relative path; Flowers ``jpg``/``segmim``, background tested as (0, 0, 254)). Not verified (no
access to the archives here): that every Flowers-102 image has a segmim file, the file counts, and how
large the JPEG noise around the blue background really is (hence the tolerance in `flowers_mask`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from helpers.core.paths import resolve

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LIST_LIMIT = 20
FLOWERS_BACKGROUND = (0, 0, 254)

MaskRule = Callable[[Image.Image], np.ndarray]
KeyFunction = Callable[[Path], str]
Size = tuple[int, int]  # (width, height), as PIL reports it


def _listing(lines: Sequence[str]) -> str:
    """Indented lines, cut after LIST_LIMIT with a count, so huge error messages stay readable."""
    shown = [f"\n  {line}" for line in lines[:LIST_LIMIT]]
    if len(lines) > LIST_LIMIT:
        shown.append(f"\n  ... and {len(lines) - LIST_LIMIT} more")
    return "".join(shown)


def _size(size: Size) -> str:
    """A PIL size as WxH text for error messages."""
    return f"{size[0]}x{size[1]}"


class FolderDatasetError(ValueError):
    """The folders do not form a clean image/mask dataset (base of the specific errors below)."""


class UnmatchedFilesError(FolderDatasetError):
    """Some images have no mask or some masks have no image; lists both sides."""

    def __init__(self, images_dir: Path, masks_dir: Path, images_only: list[Path], masks_only: list[Path]):
        self.images_only, self.masks_only = images_only, masks_only
        parts = []
        if images_only:
            parts.append(
                f"{len(images_only)} image(s) in {images_dir} have no mask in {masks_dir}:"
                + _listing([str(p.relative_to(images_dir)) for p in images_only])
            )
        if masks_only:
            parts.append(
                f"{len(masks_only)} mask(s) in {masks_dir} have no image in {images_dir}:"
                + _listing([str(p.relative_to(masks_dir)) for p in masks_only])
            )
        super().__init__("\n".join(parts))


class DuplicateKeysError(FolderDatasetError):
    """Several files in one folder map to the same key, so pairing would be ambiguous."""

    def __init__(self, folder: Path, duplicates: dict[str, list[Path]]):
        self.duplicates = duplicates
        lines = [
            f"{key}: " + ", ".join(str(p.relative_to(folder)) for p in paths)
            for key, paths in sorted(duplicates.items())
        ]
        super().__init__(f"{len(duplicates)} duplicate key(s) in {folder}:" + _listing(lines))


class UnreadableFilesError(FolderDatasetError):
    """Files that could not be decoded, each with the decoder's reason."""

    def __init__(self, failures: list[tuple[Path, str]]):
        self.failures = failures
        super().__init__(
            f"{len(failures)} unreadable file(s):" + _listing([f"{path}: {reason}" for path, reason in failures])
        )


class SizeMismatchError(FolderDatasetError):
    """Masks whose size differs from their image's size."""

    def __init__(self, mismatches: list[tuple[Path, Size, Path, Size]]):
        self.mismatches = mismatches
        lines = [f"image {ip} is {_size(isz)} but mask {mp} is {_size(msz)}" for ip, isz, mp, msz in mismatches]
        super().__init__(f"{len(mismatches)} image/mask size mismatch(es) (WxH):" + _listing(lines))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


def threshold_mask(mask: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """Reference rule: RGB channel 0 scaled to [0, 1] (float32, like ToTensor) >= threshold is foreground, after
    detecting the encoding, so that no mask is silently read as all background:

    * 0/1 masks (a lossless file whose values are exactly 0 and 1, 8- or 16-bit, or palette indices 0 and 1 whose
      colours the reference rule reads as one class): 1 is the object;
    * 16-bit masks: values up to 255 are read as 8-bit, 0 ... 65535 scaled by 65535; other 16-bit ranges are
      refused (ValueError) as ambiguous;
    * a JPEG whose values stay between 1 and 15 (a 0/1 mask that went through JPEG: its object and its noise
      cannot be told apart) is refused (ValueError);
    * everything else (0/255, soft 8-bit masks, colour and palette masks): the reference rule as it is.
    """
    lossless = mask.format != "JPEG"  # JPEG noise puts stray 1s into black masks
    if not lossless:
        top = int(np.asarray(mask.convert("RGB"))[..., 0].max(initial=0))
        if 0 < top < 16:
            raise ValueError(
                f"a JPEG mask whose values stay between 0 and {top} looks like a 0/1 mask, which the reference rule "
                "reads as all background and JPEG noise blurs; save 0/1 masks as PNG, or as 0/255"
            )
    if mask.mode in SIXTEEN_BIT_MODES:
        raw = np.asarray(mask).astype(np.int64)
        top = int(raw.max(initial=0))
        if raw.min(initial=0) < 0 or 255 < top < 65535:
            raise ValueError(
                f"a {mask.mode} mask with values {int(raw.min())} ... {top}: neither 0/1, 0/255 nor 0/65535, "
                "so which pixels are the object is ambiguous"
            )
        if lossless and top == 1:
            return raw == 1
        return raw.astype(np.float32) / np.float32(255 if top <= 255 else 65535) >= threshold
    if lossless and mask.mode in ("L", "P", "LA", "RGB", "RGBA"):
        raw = np.asarray(mask)
        raw = raw if raw.ndim == 2 else raw[..., 0]  # palette indices, grey levels or channel 0
        if raw.max(initial=0) == 1:  # values (or palette indices) exactly 0 and 1
            reference = np.asarray(mask.convert("RGB"))[..., 0].astype(np.float32) / np.float32(255) >= threshold
            if mask.mode != "P" or reference.all() or not reference.any():
                return raw == 1
            return reference
    red = np.asarray(mask.convert("RGB"))[..., 0]
    return red.astype(np.float32) / np.float32(255) >= threshold


def flowers_mask(mask: Image.Image, tolerance: int = 40) -> np.ndarray:
    """Flowers-102 rule: foreground is every pixel further than `tolerance` (any channel) from the blue background.

    The tolerance absorbs JPEG noise on the flat (0, 0, 254) background while keeping blue petals such as
    (40, 60, 200) in the foreground; it is a judgement call, not tuned on the real files.
    """
    rgb = np.asarray(mask.convert("RGB")).astype(np.int16)
    distance = np.abs(rgb - np.array(FLOWERS_BACKGROUND, dtype=np.int16)).max(axis=-1)
    return distance > tolerance


def stem_key(path: Path) -> str:
    """Default pairing key: the file name without its extension (``0001.jpg`` <-> ``0001.png``)."""
    return path.stem


def flowers_key(path: Path) -> str:
    """Flowers-102 pairing key: ``segmim_00001`` masks map to the ``image_00001`` image stem."""
    stem = path.stem
    return "image_" + stem.removeprefix("segmim_") if stem.startswith("segmim_") else stem


def scan_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Sorted image files under `folder`, recursively, skipping hidden entries; errors on a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder does not exist or is not a directory: {folder}")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    if not found:
        raise FolderDatasetError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {folder}")
    return sorted(found)


def _index(folder: Path, key: KeyFunction) -> dict[str, Path]:
    """Key -> path for every image under `folder`; duplicate keys are an error listing all of them."""
    groups: dict[str, list[Path]] = {}
    for path in scan_images(folder):
        groups.setdefault(key(path), []).append(path)
    duplicates = {k: paths for k, paths in groups.items() if len(paths) > 1}
    if duplicates:
        raise DuplicateKeysError(folder, duplicates)
    return {k: paths[0] for k, paths in groups.items()}


def _decode(path: Path) -> Image.Image:
    """Fully decode one file (closed afterwards); any decoder failure becomes an error naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            decoded = img.copy()
            decoded.format = img.format  # what the mask rules need to know (a copy has none)
            return decoded
    except Exception as err:  # Pillow decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise UnreadableFilesError([(path, f"{type(err).__name__}: {err}")]) from err


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """One image file as uint8 RGB [H, W, 3]; an unreadable file raises `UnreadableFilesError` naming it."""
    return np.array(_decode(Path(path)).convert("RGB"))


class Sample(NamedTuple):
    """One evaluation pair at original resolution."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    mask: np.ndarray  # bool (H, W), True = foreground (uint8 class indices under `class_mask`)
    name: str  # the pairing key


class Pair(NamedTuple):
    """Where one matched pair lives on disk."""

    name: str
    image_path: Path
    mask_path: Path


class ImageMaskFolder:
    """Map-style (torch DataLoader compatible) dataset of image/mask pairs matched by key across two folder trees.

    `verify=True` (the default) decodes every file once at construction, so a broken download fails up front
    with one error listing every unreadable file (then one listing every size mismatch) instead of mid-run.
    It costs one extra decode pass; pass `verify=False` for datasets already checked.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        masks_dir: str | os.PathLike[str],
        *,
        mask_rule: MaskRule = threshold_mask,
        key: KeyFunction = stem_key,
        verify: bool = True,
    ):
        self.images_dir, self.masks_dir = Path(images_dir), Path(masks_dir)
        self.mask_rule = mask_rule
        images, masks = _index(self.images_dir, key), _index(self.masks_dir, key)
        images_only = sorted(images[k] for k in images.keys() - masks.keys())
        masks_only = sorted(masks[k] for k in masks.keys() - images.keys())
        if images_only or masks_only:
            raise UnmatchedFilesError(self.images_dir, self.masks_dir, images_only, masks_only)
        self.pairs = [Pair(k, images[k], masks[k]) for k in sorted(images)]
        if verify:
            self.verify()

    def __len__(self) -> int:
        """Number of matched pairs."""
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        """Decode pair `index`: RGB image, boolean mask from the mask rule, and its name."""
        name, image_path, mask_path = self.pairs[index]
        image, mask = _decode(image_path), _decode(mask_path)
        if image.size != mask.size:
            raise SizeMismatchError([(image_path, image.size, mask_path, mask.size)])
        try:
            foreground = self.mask_rule(mask)
        except ValueError as err:
            raise FolderDatasetError(f"{mask_path}: {err}") from err
        return Sample(np.array(image.convert("RGB")), foreground, name)

    def verify(self) -> None:
        """Decode every file once; raise one error listing all unreadable files, else all size mismatches."""
        failures: list[tuple[Path, str]] = []
        mismatches: list[tuple[Path, Size, Path, Size]] = []
        for _, image_path, mask_path in self.pairs:
            sizes = []
            for path in (image_path, mask_path):
                try:
                    sizes.append(_decode(path).size)
                except UnreadableFilesError as err:
                    failures += err.failures
            if len(sizes) == 2 and sizes[0] != sizes[1]:
                mismatches.append((image_path, sizes[0], mask_path, sizes[1]))
        if failures:
            raise UnreadableFilesError(failures)
        if mismatches:
            raise SizeMismatchError(mismatches)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's layout: subfolders under its root, and how masks are read and paired."""

    images_subdir: str
    masks_subdir: str
    source: str  # the page that publishes the archives
    archives: str  # what to download there and how it unpacks
    mask_rule: MaskRule = threshold_mask
    key: KeyFunction = stem_key


_SALIENCY = "https://saliencydetection.net/"
BENCHMARKS: dict[str, Benchmark] = {
    "ECSSD": Benchmark(
        "images",
        "ground_truth_mask",
        "https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html",
        "images.zip and ground_truth_mask.zip, unzipped side by side",
    ),
    "DUTS-TE": Benchmark(
        "DUTS-TE-Image", "DUTS-TE-Mask", _SALIENCY + "duts/", "DUTS-TE.zip, whose DUTS-TE/ folder is the root"
    ),
    "DUTS-TR": Benchmark(
        "DUTS-TR-Image", "DUTS-TR-Mask", _SALIENCY + "duts/", "DUTS-TR.zip, whose DUTS-TR/ folder is the root"
    ),
    "DUT-OMRON": Benchmark(
        "DUT-OMRON-image",
        "pixelwiseGT-new-PNG",
        _SALIENCY + "dut-omron/",
        "DUT-OMRON-image.zip and DUT-OMRON-gt-pixelwise.zip.zip, unzipped side by side",
    ),
    "CUB-200-2011": Benchmark(
        "images",
        "segmentations",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/",
        "CUB_200_2011.tgz (its CUB_200_2011/ folder is the root) and segmentations.tgz, moved into it",
    ),
    "Flowers-102": Benchmark(
        "jpg",
        "segmim",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        "102flowers.tgz and 102segmentations.tgz, unpacked side by side",
        mask_rule=flowers_mask,
        key=flowers_key,
    ),
}


def open_benchmark(name: str, root: str | os.PathLike[str], *, verify: bool = True) -> ImageMaskFolder:
    """Open a known benchmark (case-insensitive name, see BENCHMARKS) from the folder holding its two subfolders."""
    layout = BENCHMARKS[canonical_benchmark(name)]
    root = Path(root)
    return ImageMaskFolder(
        root / layout.images_subdir,
        root / layout.masks_subdir,
        mask_rule=layout.mask_rule,
        key=layout.key,
        verify=verify,
    )


def class_mask(mask: Image.Image) -> np.ndarray:
    """Labelled-folder rule: the values of a single-channel mask (mode L, or P read as palette indices), uint8."""
    if mask.mode not in ("L", "P"):
        raise ValueError(f"a class-index mask must be single-channel (PNG mode L or P), not mode {mask.mode}")
    return np.asarray(mask, dtype=np.uint8)


class LabelledImages(NamedTuple):
    """A labelled folder at one square size."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # uint8 [N, S, S], class indices
    names: list[str]


def read_labelled(root: str | os.PathLike[str], size: int, num_classes: int | None = None) -> LabelledImages:
    """``root/images`` + ``root/masks`` (class-index PNGs paired by stem) resized to ``size`` x ``size``, images
    antialiased and masks nearest-neighbour; values >= ``num_classes`` are refused with the files that hold them."""
    root = Path(root)
    folder = ImageMaskFolder(root / "images", root / "masks", mask_rule=class_mask)
    images, labels, bad = [], [], []
    for i, pair in enumerate(folder.pairs):
        image, mask, _ = folder[i]  # its errors name the file
        if num_classes is not None and mask.max() >= num_classes:
            bad.append(f"{pair.mask_path}: values {[int(v) for v in np.unique(mask) if v >= num_classes]}")
        images.append(np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS)))
        labels.append(np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)))
    if bad:
        raise FolderDatasetError(
            f"{len(bad)} mask(s) under {root / 'masks'} hold values that are not class indices 0..{num_classes - 1}:"
            + _listing(bad)
        )
    return LabelledImages(np.stack(images), np.stack(labels), [p.name for p in folder.pairs])


def canonical_benchmark(name: str) -> str:
    """The BENCHMARKS key of a case-insensitive benchmark name; ValueError naming the known ones otherwise."""
    by_lower = {known.lower(): known for known in BENCHMARKS}
    if name.strip().lower() not in by_lower:
        raise ValueError(f"unknown benchmark {name.strip()!r}; known: {', '.join(BENCHMARKS)}")
    return by_lower[name.strip().lower()]


def parse_benchmarks(spec: str) -> dict[str, Path]:
    """Benchmark folders from notebook 04's ``BENCHMARKS`` text: ``"NAME: folder"`` items joined by ``;``.

    Names are case-insensitive and come back as BENCHMARKS keys; folders resolve against the repository root.
    """
    folders: dict[str, Path] = {}
    for item in filter(str.strip, spec.split(";")):
        name, sep, folder = item.partition(":")
        if not sep or not folder.strip():
            raise ValueError(f"benchmark item {item.strip()!r} is not 'NAME: folder' (items are joined by ';')")
        key = canonical_benchmark(name)
        if key in folders:
            raise ValueError(f"benchmark {key} is given twice in {spec!r}")
        folders[key] = resolve(folder.strip())
    return folders
