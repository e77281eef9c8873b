"""Latent codes of an image folder: batched, resumable encoding into HDF5, then a ``.npy`` like the released ones.

Preprocessing follows the reference (``bigbigan_embeddings.ipynb``): RGB, shorter side resized to S (PIL
bilinear, which antialiases when shrinking), centre crop S x S, ``2 * x / 255 - 1`` in float32, NCHW.
S is 256 for BigBiGAN (TF-Hub ``encode`` signature, output ``z_sample`` [N, 120]) and the encoder's
resolution for the project's own `LatentEncoder`. EXIF orientation is ignored, as in the reference.

`encode_folder(folder, encoder, out_path)` writes three files next to ``out_path`` (absolute, or relative to
`embeddings_dir()`; a trailing ``.npy`` is dropped):

* ``<out_path>.h5``: ``names`` (utf-8 paths relative to the folder, sorted), ``z`` float32 [N, dim_z]
  (NaN where no code), ``status`` (HDF5 enum pending / encoded / unreadable), and attributes ``encoder``,
  ``input_size``, ``dim_z``, ``folder``, ``preprocessing``. Its row order is the folder's sorted listing.
* ``<out_path>.npy``: float32 [N_ok, dim_z], the encoded rows of the HDF5 file in the same order (unreadable
  files have no row), written atomically once every file has been tried.
* ``<out_path>.unreadable.txt``: one ``name<TAB>reason`` line per unreadable file (empty if none).

Resume guarantee: the HDF5 file is created atomically with every dataset allocated in full (contiguous), so
later batches only overwrite rows in place. Each batch writes and flushes its codes, then writes and flushes
their status, so an exception, Ctrl-C or killed kernel loses at most the batch in progress, and a row is
never marked encoded before its code has been handed to the operating system. Flushing is not fsync and HDF5
keeps no journal: a power cut or a machine crash in mid-flush can still damage the file (delete it and
start again). A rerun with the same folder path, listing and encoder continues where the last stopped;
unreadable files are tried again. Anything else is refused, so a user's codes are never overwritten.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import h5py
import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from helpers.core import distributed
from helpers.core.io import atomic_path, write_text
from helpers.core.modules import weights_fingerprint
from helpers.core.paths import embeddings_dir, resolve
from helpers.data.folders import UnreadableFilesError, scan_images
from helpers.gans.base import Generator, to_uint8
from helpers.gans.checkpoints import load, resolve_checkpoint

BIGBIGAN_HANDLE = "https://tfhub.dev/deepmind/bigbigan-resnet50/1"
PREPROCESSING = "RGB, shorter side to input_size (PIL bilinear), centre crop, 2*x/255-1, float32"
PENDING, ENCODED, UNREADABLE = 0, 1, 2
STATUS_DTYPE = h5py.enum_dtype({"pending": PENDING, "encoded": ENCODED, "unreadable": UNREADABLE}, basetype="u1")


class Encoder(Protocol):
    """What `encode_folder` needs: a batch [B, 3, S, S] float32 in [-1, 1] -> codes [B, dim_z] float32.

    ``description`` identifies the encoder and its weights; a resumed run must have the same one.
    """

    description: str
    input_size: int
    dim_z: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class EmbeddingsMismatchError(ValueError):
    """An existing HDF5 file belongs to another folder, listing or encoder, so it is not resumed or overwritten."""


class UnreadableImagesWarning(UserWarning):
    """Some files could not be decoded and have no code; the message lists them."""


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Reference transform (torchvision Resize(size) + CenterCrop(size) + ToTensor, then 2x-1): float32 [3, S, S]."""
    image = image.convert("RGB")
    w, h = image.size
    if min(w, h) != size:  # torchvision truncates the long side with int()
        new_size = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
        image = image.resize(new_size, Image.Resampling.BILINEAR)
        w, h = image.size
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / np.float32(255)
    return (2 * pixels - 1).transpose(2, 0, 1)


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Decode and preprocess one file; any failure is an `UnreadableFilesError` naming it and the reason."""
    try:
        with Image.open(path) as image:
            return preprocess(image, size)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ... on bad files
        raise UnreadableFilesError([(Path(path), f"{type(err).__name__}: {err}")]) from err


class TorchEncoder:
    """Adapter for a torch module with ``resolution`` and ``dim_z`` (the project's `LatentEncoder`), in eval mode."""

    def __init__(self, module: nn.Module, device: str | torch.device | None = None):
        self.module = module.to(device).eval() if device is not None else module.eval()
        self.input_size, self.dim_z = int(module.resolution), int(module.dim_z)
        config = json.dumps(getattr(module, "config", {}), sort_keys=True)
        self.description = f"{type(module).__name__} {config} weights-sha256:{weights_fingerprint(module)}"

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Codes for a preprocessed batch, as float32 numpy on the CPU (the module's device is read at each call, so
        an encoder loaded onto another process's device works there)."""
        device = next(self.module.parameters()).device
        return self.module(torch.from_numpy(batch).to(device)).float().cpu().numpy()


class HubBigBiGANEncoder:
    """The reference encoder: BigBiGAN on TF-Hub via ``hub.load`` (TF2), ``encode`` signature, output ``z_sample``."""

    input_size, dim_z = 256, 120

    def __init__(self, handle: str = BIGBIGAN_HANDLE):
        try:
            import tensorflow as tf
            import tensorflow_hub as hub
        except ImportError as err:
            raise ImportError(
                "the BigBiGAN encoder needs TensorFlow and tensorflow_hub, which the base install "
                'leaves out: pip install -e ".[convert]"'
            ) from err
        if distributed.active() and (gpus := tf.config.list_physical_devices("GPU")):  # one GPU per torchrun rank
            tf.config.set_visible_devices(gpus[int(os.environ.get("LOCAL_RANK", "0")) % len(gpus)], "GPU")
        self.handle, self._tf = handle, tf
        self._module = hub.load(handle)  # keep a reference: the signature does not own the variables
        self._encode = self._module.signatures["encode"]
        _, inputs = self._encode.structured_input_signature
        if len(inputs) != 1:
            raise ValueError(f"{handle}: expected one input to the encode signature, found {sorted(inputs)}")
        (self._input_name,) = inputs
        self.description = f"BigBiGAN TF-Hub {handle} encode/z_sample"

    def __getstate__(self) -> dict[str, str]:
        """Pickled as its handle (TF-Hub modules do not pickle); another process loads it again from the cache."""
        return {"handle": self.handle}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["handle"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """z_sample (a draw from the encoder posterior, as the reference uses) for an NCHW batch fed as NHWC."""
        nhwc = self._tf.convert_to_tensor(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)), dtype=self._tf.float32)
        outputs = self._encode(**{self._input_name: nhwc})
        if "z_sample" not in outputs:
            raise KeyError(f"the encode signature returned {sorted(outputs)}, without 'z_sample'")
        return np.asarray(outputs["z_sample"], dtype=np.float32)


@dataclass
class EncodeResult:
    """Codes of the readable files in sorted order, the unreadable files with reasons, and where it was all written."""

    names: list[str]
    z: np.ndarray
    unreadable: list[tuple[str, str]]
    npy_path: Path
    h5_path: Path
    unreadable_path: Path


def _output_paths(out_path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """The .npy, .h5 and .unreadable.txt paths; relative out_paths live in embeddings_dir()."""
    out = Path(out_path).expanduser()
    out = out if out.is_absolute() else embeddings_dir() / out
    stem = str(out.with_suffix("")) if out.suffix == ".npy" else str(out)
    return Path(stem + ".npy"), Path(stem + ".h5"), Path(stem + ".unreadable.txt")


def _create(h5_path: Path, names: list[str], attrs: dict[str, str | int]) -> None:
    """A new HDF5 file with every row allocated (in-place writes touch no metadata), created atomically."""
    with atomic_path(h5_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("z", data=np.full((len(names), attrs["dim_z"]), np.nan, np.float32))
        f.create_dataset("status", data=np.full(len(names), PENDING, np.uint8), dtype=STATUS_DTYPE)
        f.attrs.update(attrs)


def _check_matches(f: h5py.File, h5_path: Path, names: list[str], attrs: dict[str, str | int]) -> None:
    """Raise EmbeddingsMismatchError unless the file was made from this folder listing with this encoder."""
    problems = [
        f"{key}: file has {f.attrs.get(key)!r}, now {value!r}"
        for key, value in attrs.items()
        if f.attrs.get(key) != value
    ]
    stored = list(f["names"].asstr()[:])
    if stored != names:
        new, gone = sorted(set(names) - set(stored)), sorted(set(stored) - set(names))
        problems.append(f"folder listing differs: {len(new)} new file(s) {new[:3]}, {len(gone)} gone {gone[:3]}")
    if problems:
        raise EmbeddingsMismatchError(
            f"{h5_path} holds codes for another folder or encoder, so it is neither resumed nor overwritten:\n  "
            + "\n  ".join(problems)
            + "\nPass a new out_path, or delete that file to start over."
        )


def _open_resumable(h5_path: Path, names: list[str], attrs: dict[str, str | int]) -> h5py.File:
    """Open an existing file for writing after checking it belongs to this run; explain a damaged file."""
    try:
        f = h5py.File(h5_path, "r+")
    except OSError as err:
        raise OSError(f"cannot open {h5_path} to resume ({err}); it may be damaged: delete it to start over") from err
    try:
        if not {"names", "z", "status"} <= set(f):
            raise EmbeddingsMismatchError(f"{h5_path} is not an encode_folder file; pass a new out_path")
        _check_matches(f, h5_path, names, attrs)
    except BaseException:
        f.close()
        raise
    return f


class _Batch(NamedTuple):
    """One encoded batch: its rows, their status, the codes of the readable ones and the unreadable files."""

    rows: np.ndarray
    status: np.ndarray
    z: np.ndarray
    failures: list[tuple[str, str]]


def _encode_rows(folder: Path, names: list[str], rows: np.ndarray, encoder: Encoder) -> _Batch:
    """Reads and encodes one batch of rows (nothing is written)."""
    images, failures = [], []
    status = np.full(len(rows), UNREADABLE, np.uint8)
    for k, row in enumerate(rows):
        try:
            images.append(load_image(folder / names[row], encoder.input_size))
        except UnreadableFilesError as err:
            failures.append((names[row], err.failures[0][1]))
            continue
        status[k] = ENCODED
    z = np.zeros((0, encoder.dim_z), np.float32)
    if images:
        z = np.asarray(encoder(np.stack(images)), dtype=np.float32)
        if z.shape != (len(images), encoder.dim_z):
            raise ValueError(
                f"{encoder.description} returned codes of shape {z.shape}, expected {(len(images), encoder.dim_z)}"
            )
    return _Batch(rows, status, z, failures)


def _store(f: h5py.File, batch: _Batch) -> None:
    """Writes one batch's codes and flushes them, then its status: a row is never marked encoded before its code."""
    if len(batch.z):
        f["z"][batch.rows[batch.status == ENCODED]] = batch.z
        f.flush()
    f["status"][batch.rows] = batch.status
    f.flush()


def encode_folder(
    folder: str | os.PathLike[str],
    encoder: Encoder,
    out_path: str | os.PathLike[str],
    batch_size: int = 32,
    progress: bool = True,
) -> EncodeResult:
    """Encode every image under `folder` (sorted, recursive) in resumable batches; unreadable files are reported.
    Under torchrun each rank encodes every world_size-th batch and rank 0 writes them all, so the files are those
    one process writes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    folder = resolve(folder)
    npy_path, h5_path, txt_path = _output_paths(out_path)
    names = [p.relative_to(folder).as_posix() for p in scan_images(folder)]
    attrs = {
        "encoder": encoder.description,
        "input_size": encoder.input_size,
        "dim_z": encoder.dim_z,
        "folder": str(folder),
        "preprocessing": PREPROCESSING,
    }
    ranks, main, unreadable, f = distributed.world_size(), distributed.is_main(), [], None
    try:
        if main:  # under torchrun rank 0 alone opens the file; every rank encodes its batches
            if not h5_path.exists():
                if npy_path.exists():  # codes that no run of this function made, e.g. downloaded ones
                    raise EmbeddingsMismatchError(
                        f"{npy_path} exists without the {h5_path.name} that encode_folder writes beside its codes, "
                        "so it is someone else's file and is not overwritten; pass a new out_path or move it away"
                    )
                _create(h5_path, names, attrs)
            f = _open_resumable(h5_path, names, attrs)
        todo = distributed.from_main(np.flatnonzero(f["status"][:] != ENCODED) if main else None)  # unreadable too
        batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        with tqdm(
            total=len(names),
            initial=len(names) - len(todo),
            unit="img",
            desc=f"encoding {folder.name}",
            disable=not (progress and main),
        ) as bar:
            for first in range(0, len(batches), ranks):  # a round: one batch per rank, all stored by rank 0
                mine = first + distributed.rank()
                done = [_encode_rows(folder, names, batches[mine], encoder)] if mine < len(batches) else []
                for batch in distributed.to_main(done):
                    _store(f, batch)
                    unreadable += batch.failures
                    bar.update(len(batch.rows))
        if main:
            status, codes = f["status"][:], f["z"][:]
    finally:
        if f is not None:
            f.close()
    status, unreadable = distributed.from_main((status, unreadable) if main else None)
    encoded = status == ENCODED
    if main:
        codes = codes[encoded]
        with atomic_path(npy_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, codes)
        write_text(txt_path, "".join(f"{name}\t{' '.join(reason.split())}\n" for name, reason in unreadable))
    distributed.barrier()
    if not main:
        codes = np.load(npy_path, mmap_mode="r")
    if unreadable:
        listing = UnreadableFilesError([(Path(name), reason) for name, reason in unreadable])
        warnings.warn(
            f"{folder}: {listing}\nThese files have no code in {npy_path} (listed in {txt_path}).",
            UnreadableImagesWarning,
            stacklevel=2,
        )
    return EncodeResult([n for n, ok in zip(names, encoded) if ok], codes, unreadable, npy_path, h5_path, txt_path)


@torch.no_grad()
def reconstruct(generator: Generator, encoder: Encoder, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """x beside G(E(x)) for a few files, uint8 [B, R, 2R, 3] at the generator's resolution R, for image_grid."""
    x = np.stack([load_image(p, generator.resolution) for p in paths])
    z = encoder(np.stack([load_image(p, encoder.input_size) for p in paths]))
    generated = generator(torch.from_numpy(z).to(generator.device)).float().cpu().numpy()
    return np.concatenate([to_uint8(x), to_uint8(generated)], axis=2)


def pick_encoder(
    kind: str = "auto", handle: str = BIGBIGAN_HANDLE, device: str | torch.device = "cpu"
) -> tuple[Encoder, Generator]:
    """The encoder and the generator its codes belong to: BigBiGAN's (TF-Hub) or the shipped default pair.

    "auto" takes BigBiGAN when tensorflow_hub is installed and ``weights/BigBiGAN_x1.pth`` is present.
    """
    if kind not in ("auto", "default", "bigbigan"):
        raise ValueError(f"encoder kind must be 'auto', 'default' or 'bigbigan', got {kind!r}")
    if kind == "auto":
        has_hub = importlib.util.find_spec("tensorflow_hub") is not None
        kind = "bigbigan" if has_hub and resolve_checkpoint("bigbigan").exists() else "default"
    if kind == "bigbigan":
        return HubBigBiGANEncoder(handle), load("bigbigan", device)
    return TorchEncoder(load("default-biggan-encoder", device)), load("default-biggan", device)
