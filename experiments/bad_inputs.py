"""Bad inputs and faults a new user could hit, each set up in a temporary folder (tiny random-weight models, tiny
image folders, files written by the project's own save functions, then damaged) and fed to the helpers function a
notebook would call. Every outcome is classified automatically:

* ``clear``: an exception whose message holds every expected token of the probe (case-insensitive), typically the
  file's name and a word for the problem, or the parameter's name;
* ``recovered``: no exception, and the probe's check says the result is right;
* ``unclear``: an exception whose message lacks a token, or any exception of a probe without tokens (one that
  expects recovery);
* ``silently wrong``: no exception, and the check fails (or the probe has none: a bad input was accepted).

    python -m experiments.bad_inputs [--out results/bad_inputs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from helpers import runner
from helpers.assets import Asset, check_embeddings, ensure
from helpers.core.io import save_torch, write_json
from helpers.core.manifest import record, verify
from helpers.core.parameters import check_parameters, declared_parameters
from helpers.core.paths import notebooks_dir
from helpers.core.runs import RunFolder
from helpers.data.folders import open_benchmark, read_labelled
from helpers.direction_masks.direction_files import check_shift_space, load_direction, save_direction
from helpers.direction_masks.embeddings import TorchEncoder, encode_folder
from helpers.gans import load, save_model
from helpers.gans.biggan import BigGAN
from helpers.gans.encoder import LatentEncoder
from helpers.gans.stylegan2 import StyleGAN2
from helpers.segmentation import ArrayBatches, SegmentationSettings, SegmentationTrainer, ShardDataset, UNet
from helpers.segmentation.shards import shard_path, write_shards
from helpers.semantic_projection.annotations import AnnotationStore
from helpers.semantic_projection.fitting import FitConfig
from helpers.widgets.annotator import Annotator
from helpers.widgets.explorer import DirectionExplorer

OUTCOMES = ("clear", "recovered", "unclear", "silently wrong")
SMALL_BIGGAN = dict(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[16])
OBJECT = np.zeros((4, 6), bool)
OBJECT[:, :3] = True  # the object of every mask probe: the left half of a 6x4 image
NOTEBOOK = "04_unsupervised_segmentation"


@dataclass(frozen=True)
class Probe:
    """One bad input: ``run(tmp)`` sets it up in an empty folder and calls the helpers function; an exception must
    name every token, or ``check(result)`` must accept what came back."""

    area: str
    name: str
    run: Callable[[Path], Any]
    tokens: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None


PROBES: list[Probe] = []


def probe(
    area: str, name: str, *tokens: str, check: Callable[[Any], bool] | None = None
) -> Callable[[Callable[[Path], Any]], Callable[[Path], Any]]:
    """Registers the decorated function as a probe."""

    def register(run: Callable[[Path], Any]) -> Callable[[Path], Any]:
        PROBES.append(Probe(area, name, run, tokens, check))
        return run

    return register


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Sets an environment variable for the block and restores it afterwards."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


# ---- tiny models and files ---------------------------------------------------------------------------------------


def tiny_stylegan2() -> StyleGAN2:
    """A 32 px StyleGAN2 with random weights, dim_z 16."""
    torch.manual_seed(0)
    G = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    G.estimate_latent_avg(64)
    return G.eval()


def saved_stylegan2(tmp: Path, name: str = "g.pt") -> Path:
    """`tiny_stylegan2` in our checkpoint format."""
    return save_model(tiny_stylegan2(), tmp / name)


def our_checkpoint(tmp: Path) -> dict[str, Any]:
    """The content of a good checkpoint in our format, as `load` reads it."""
    return torch.load(saved_stylegan2(tmp, "good.pt"), weights_only=True)


def biggan_state() -> dict[str, torch.Tensor]:
    """The plain state dict of a tiny BigGAN (the released BigBiGAN file's format)."""
    torch.manual_seed(0)
    return BigGAN(**SMALL_BIGGAN).state_dict()


def save_image(path: Path, image: Image.Image | np.ndarray) -> Path:
    """Writes an image (format from the extension), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path)
    return path


def ecssd(tmp: Path, mask: Image.Image | np.ndarray, mask_name: str = "0001.png") -> Path:
    """An ECSSD folder of one 6x4 image and the given mask; returns its root."""
    save_image(tmp / "ECSSD" / "images" / "0001.jpg", np.full((4, 6, 3), 90, np.uint8))
    save_image(tmp / "ECSSD" / "ground_truth_mask" / mask_name, mask)
    return tmp / "ECSSD"


def first_mask(root: Path) -> np.ndarray:
    """The object pixels of the first pair, as the benchmark evaluation reads them."""
    return open_benchmark("ECSSD", root)[0].mask


def is_object(mask: np.ndarray) -> bool:
    """Whether a read mask marks exactly the object of the mask probes."""
    return np.array_equal(mask, OBJECT)


def palette_mask(colours: list[int]) -> Image.Image:
    """The object mask as palette indices 0/1 with the given palette."""
    image = Image.frombytes("P", (6, 4), OBJECT.astype(np.uint8).tobytes())
    image.putpalette(colours + [0] * (768 - len(colours)))
    return image


def image_folder(folder: Path, n: int = 3) -> Path:
    """``n`` small random RGB images."""
    rng = np.random.default_rng(0)
    for i in range(n):
        save_image(folder / f"{i}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return folder


def tiny_encoder(seed: int = 0) -> TorchEncoder:
    """A 32 px LatentEncoder with random weights, dim_z 8."""
    torch.manual_seed(seed)
    return TorchEncoder(LatentEncoder(dim_z=8, resolution=32, ch=8, max_ch=16))


def shards(tmp: Path, attrs: dict[str, Any] | None = None) -> Path:
    """A folder of two shards of two 8 px pairs each."""
    images = np.zeros((4, 8, 8, 3), np.uint8)
    return write_shards(
        tmp / "shards",
        4,
        lambda i, n: {"images": images[:n], "masks": images[:n, ..., 0]},
        shard_size=2,
        attrs=attrs,
        progress=False,
    )


def pairs(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random 32 px images and binary masks."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.random((n, 32, 32)) > 0.5


SETTINGS = SegmentationSettings(steps=1, checkpoint_every=1, amp="off")


def train_unet(run: Path, source: ArrayBatches, settings: SegmentationSettings = SETTINGS, width: int = 4) -> int:
    """Trains (or resumes) a tiny U-Net in ``run`` as notebooks 04 and 05 do; returns the step reached."""
    return SegmentationTrainer(run, UNet(width=width), settings).train(source, progress=False)


def trained_run(tmp: Path) -> Path:
    """A run folder of a finished one-step U-Net training."""
    train_unet(tmp / "run", ArrayBatches(*pairs(), 2))
    return tmp / "run"


def store(tmp: Path) -> AnnotationStore:
    """A binary annotation store over a tiny StyleGAN2 (``g.pt``) holding one sample."""
    created = AnnotationStore.create(tmp / "store", saved_stylegan2(tmp))
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 255
    created.save(mask, np.zeros(16, np.float32), noise_seed=1, truncation=0.5)
    return created


def edit_json(path: Path, drop: tuple[str, ...] = (), **updates: Any) -> None:
    """Rewrites a JSON file without the keys ``drop`` and with ``updates``."""
    content = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps({**content, **updates}))


def explorer(**kwargs: Any) -> DirectionExplorer:
    """A direction explorer over a tiny StyleGAN2 with two plain z directions."""
    return DirectionExplorer(tiny_stylegan2(), {"a": torch.eye(16)[0], "b": torch.eye(16)[1]}, scale=1, **kwargs)


def parameters(**changes: Any) -> None:
    """Notebook 04's parameter check on its defaults with ``changes``, as its second cell runs it."""
    check_parameters({**declared_parameters(notebooks_dir() / f"{NOTEBOOK}.ipynb"), **changes}, NOTEBOOK)


def profile(tmp: Path, text: str) -> None:
    """The runner with a profile file ``bad.yml`` of that content (refused before any notebook runs)."""
    (tmp / "bad.yml").write_text(text)
    runner.run_all(tmp / "results", profile=tmp / "bad.yml")


# ---- checkpoints -------------------------------------------------------------------------------------------------


@probe("checkpoints", "missing checkpoint file", "missing.pt", "not found")
def _(tmp: Path) -> Any:
    return load(tmp / "missing.pt")


@probe("checkpoints", "garbage bytes", "garbage.pt", "could not read")
def _(tmp: Path) -> Any:
    (tmp / "garbage.pt").write_bytes(b"\x00\x01 this is not a checkpoint")
    return load(tmp / "garbage.pt")


@probe("checkpoints", "empty checkpoint file", "empty.pt", "could not read")
def _(tmp: Path) -> Any:
    (tmp / "empty.pt").touch()
    return load(tmp / "empty.pt")


@probe("checkpoints", "truncated checkpoint (half its bytes)", "half.pt", "could not read")
def _(tmp: Path) -> Any:
    whole = saved_stylegan2(tmp).read_bytes()
    (tmp / "half.pt").write_bytes(whole[: len(whole) // 2])
    return load(tmp / "half.pt")


@probe("checkpoints", "unrelated torch dict", "other.pt", "not a generator checkpoint")
def _(tmp: Path) -> Any:
    torch.save({"weights": torch.zeros(3), "epoch": 4}, tmp / "other.pt")
    return load(tmp / "other.pt")


@probe("checkpoints", "pickled code", "code.pt", "could not read")
def _(tmp: Path) -> Any:
    torch.save({"f": print}, tmp / "code.pt")
    return load(tmp / "code.pt")


@probe("checkpoints", "whole module pickled with torch.save(model)", "module.pt", "could not read")
def _(tmp: Path) -> Any:
    torch.save(tiny_stylegan2(), tmp / "module.pt")
    return load(tmp / "module.pt")


@probe("checkpoints", "a folder instead of a file", "weights_folder", "could not read")
def _(tmp: Path) -> Any:
    (tmp / "weights_folder").mkdir()
    return load(tmp / "weights_folder")


@probe("checkpoints", "a direction file loaded as a generator", "bg_direction.pth", "not a generator checkpoint")
def _(tmp: Path) -> Any:
    return load(save_direction(tmp / "bg_direction.pth", torch.randn(16)))


@probe("checkpoints", "our format with a wrong class", "wrong.pt", "class")
def _(tmp: Path) -> Any:
    torch.save({**our_checkpoint(tmp), "class": "BigGAN"}, tmp / "wrong.pt")
    return load(tmp / "wrong.pt")


@probe("checkpoints", "our format with an unknown class name", "unknown_class.pt", "Generator3000")
def _(tmp: Path) -> Any:
    torch.save({**our_checkpoint(tmp), "class": "Generator3000"}, tmp / "unknown_class.pt")
    return load(tmp / "unknown_class.pt")


@probe("checkpoints", "our format with an unknown config key", "extra.pt", "depth")
def _(tmp: Path) -> Any:
    good = our_checkpoint(tmp)
    torch.save({**good, "config": {**good["config"], "depth": 3}}, tmp / "extra.pt")
    return load(tmp / "extra.pt")


@probe("checkpoints", "our format missing a config key", "short.pt", "resolution")
def _(tmp: Path) -> Any:
    good = our_checkpoint(tmp)
    torch.save({**good, "config": {k: v for k, v in good["config"].items() if k != "resolution"}}, tmp / "short.pt")
    return load(tmp / "short.pt")


@probe("checkpoints", "our format with a buffer of wrong shape", "buffer.pt", "latent_avg")
def _(tmp: Path) -> Any:
    torch.save({**our_checkpoint(tmp), "buffers": {"latent_avg": torch.zeros(3)}}, tmp / "buffer.pt")
    return load(tmp / "buffer.pt")


@probe("checkpoints", "our format with weights of another config", "wider.pt", "shape")
def _(tmp: Path) -> Any:
    good = our_checkpoint(tmp)
    wider = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=32).state_dict()
    torch.save({**good, "state_dict": wider}, tmp / "wider.pt")
    return load(tmp / "wider.pt")


@probe("checkpoints", "plain BigGAN state dict missing a key", "partial.pth", "blocks.0.0.conv1.bias")
def _(tmp: Path) -> Any:
    state = biggan_state()
    del state["blocks.0.0.conv1.bias"]
    torch.save(state, tmp / "partial.pth")
    return load(tmp / "partial.pth")


@probe("checkpoints", "plain BigGAN state dict with a wrongly shaped tensor", "shape.pth", "blocks.0.0.conv2.weight")
def _(tmp: Path) -> Any:
    state = biggan_state()
    state["blocks.0.0.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp / "shape.pth")
    return load(tmp / "shape.pth")


@probe("checkpoints", "rosinality checkpoint with an empty g_ema", "rosinality.pt", "StyleGAN2")
def _(tmp: Path) -> Any:
    torch.save({"g_ema": {}, "latent_avg": torch.zeros(16)}, tmp / "rosinality.pt")
    return load(tmp / "rosinality.pt")


@probe("checkpoints", "network pickle of garbage", "network.pkl", "pickle")
def _(tmp: Path) -> Any:
    (tmp / "network.pkl").write_bytes(b"\x80\x04 not a network pickle")
    return load(tmp / "network.pkl")


@probe("checkpoints", "known name whose file is missing", "BigBiGAN_x1.pth", "download_all.sh")
def _(tmp: Path) -> Any:
    with environment("GANSEG_WEIGHTS_DIR", str(tmp)):
        return load("bigbigan")


# ---- direction files and the explorer ----------------------------------------------------------------------------


@probe("directions", "missing direction file", "bg_direction.pth", "does not exist")
def _(tmp: Path) -> Any:
    return load_direction(tmp / "bg_direction.pth", 16)


@probe("directions", "direction of another length", "bg_direction.pth", "dim_z")
def _(tmp: Path) -> Any:
    return load_direction(save_direction(tmp / "bg_direction.pth", torch.randn(120)), 16)


@probe("directions", "a dict instead of a tensor", "saved_h.pth", "dict")
def _(tmp: Path) -> Any:
    torch.save({"h": torch.randn(16)}, tmp / "saved_h.pth")
    return load_direction(tmp / "saved_h.pth", 16)


@probe("directions", "corrupt direction file", "broken.pth", "not a readable")
def _(tmp: Path) -> Any:
    whole = save_direction(tmp / "broken.pth", torch.randn(16)).read_bytes()
    (tmp / "broken.pth").write_bytes(whole[: len(whole) // 2])
    return load_direction(tmp / "broken.pth", 16)


@probe("directions", "direction of NaN values", "diverged.pth", "finite")
def _(tmp: Path) -> Any:
    return load_direction(save_direction(tmp / "diverged.pth", torch.full((16,), float("nan"))), 16)


@probe("directions", "ranking.json of another generator", "bg_direction.pth", "default-stylegan2")
def _(tmp: Path) -> Any:
    path = save_direction(tmp / "bg_direction.pth", torch.randn(16))
    write_json(tmp / "ranking.json", {"generator": "default-stylegan2", "shift_space": "z"})
    return check_shift_space(path, "default-biggan", "z")


@probe("directions", "corrupt ranking.json beside the direction", "ranking.json")
def _(tmp: Path) -> Any:
    path = save_direction(tmp / "bg_direction.pth", torch.randn(16))
    (tmp / "ranking.json").write_text('{"generator": "default-stylegan2", ')
    return check_shift_space(path, "default-stylegan2", "z")


@probe("directions", "truncated candidates file", "candidates.pt", "cannot be read")
def _(tmp: Path) -> Any:
    whole = save_torch({"names": ["a", "b"], "directions": torch.eye(2, 16)}, tmp / "candidates.pt").read_bytes()
    (tmp / "candidates.pt").write_bytes(whole[: len(whole) // 2])
    return DirectionExplorer.from_candidates(tiny_stylegan2(), tmp / "candidates.pt")


@probe("directions", "candidates with mismatched names and directions", "candidates.pt", "names")
def _(tmp: Path) -> Any:
    save_torch({"names": ["a", "b", "c"], "directions": torch.eye(2, 16)}, tmp / "candidates.pt")
    return DirectionExplorer.from_candidates(tiny_stylegan2(), tmp / "candidates.pt")


@probe("directions", "a direction file opened as candidates", "bg_direction.pth", "candidates")
def _(tmp: Path) -> Any:
    path = save_direction(tmp / "bg_direction.pth", torch.eye(16)[0])
    return DirectionExplorer.from_candidates(tiny_stylegan2(), path)


@probe("directions", "candidates of another generator's dim_z", "candidates.pt", "dim_z")
def _(tmp: Path) -> Any:
    save_torch({"names": ["a", "b"], "directions": torch.eye(2, 120)}, tmp / "candidates.pt")
    return DirectionExplorer.from_candidates(tiny_stylegan2(), tmp / "candidates.pt")


@probe("directions", "explorer saves at magnitude 0", "shift r", "is 0")
def _(tmp: Path) -> Any:
    return explorer(magnitude=0.0).save(tmp / "bg_direction.pth")


@probe("directions", "explorer saves without a path", "path")
def _(tmp: Path) -> Any:
    return explorer().save()


@probe("directions", "explorer asked for an unknown direction", "sky", "unknown direction")
def _(tmp: Path) -> Any:
    return explorer().set(direction="sky")


# ---- masks and benchmark folders ---------------------------------------------------------------------------------


@probe("masks", "0/1 8-bit mask", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint8)))


@probe("masks", "0/1 16-bit mask", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint16)))


@probe("masks", "0/65535 16-bit mask", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint16) * 65535))


@probe("masks", "palette mask, indices 0/1 in dark colours", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, palette_mask([0, 0, 0, 0, 0, 128])))


@probe("masks", "palette mask, indices 0/1 in black and white", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, palette_mask([0, 0, 0, 255, 255, 255])))


@probe("masks", "0/1 mask in RGB", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, np.repeat(OBJECT.astype(np.uint8)[..., None], 3, axis=2)))


@probe("masks", "0/255 mask saved as JPEG", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint8) * 255, "0001.jpg"))


@probe("masks", "0/1 mask saved as JPEG", "0001.jpg", "JPEG", check=is_object)
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint8), "0001.jpg"))


@probe("masks", "ambiguous 16-bit range", "0001.png", "ambiguous")
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, OBJECT.astype(np.uint16) * 1000))


@probe("masks", "mask of another size than its image", "0001.png", "mismatch")
def _(tmp: Path) -> Any:
    return first_mask(ecssd(tmp, np.zeros((5, 6), np.uint8)))


@probe("masks", "image without its mask", "0002.jpg", "no mask")
def _(tmp: Path) -> Any:
    root = ecssd(tmp, OBJECT.astype(np.uint8) * 255)
    save_image(root / "images" / "0002.jpg", np.zeros((4, 6, 3), np.uint8))
    return first_mask(root)


@probe("masks", "empty image folder", "images", "no image files")
def _(tmp: Path) -> Any:
    (tmp / "ECSSD" / "images").mkdir(parents=True)
    save_image(tmp / "ECSSD" / "ground_truth_mask" / "0001.png", OBJECT.astype(np.uint8) * 255)
    return first_mask(tmp / "ECSSD")


@probe("masks", "benchmark without its mask folder", "ground_truth_mask", "does not exist")
def _(tmp: Path) -> Any:
    save_image(tmp / "ECSSD" / "images" / "0001.jpg", np.zeros((4, 6, 3), np.uint8))
    return first_mask(tmp / "ECSSD")


@probe("masks", "unreadable image", "0001.jpg", "unreadable")
def _(tmp: Path) -> Any:
    root = ecssd(tmp, OBJECT.astype(np.uint8) * 255)
    (root / "images" / "0001.jpg").write_bytes(b"not a jpeg")
    return first_mask(root)


@probe("masks", "unknown benchmark name", "PASCAL-S", "ECSSD")
def _(tmp: Path) -> Any:
    return open_benchmark("PASCAL-S", tmp)


@probe("masks", "labelled folder with 0/255 masks for two classes", "000.png", "255")
def _(tmp: Path) -> Any:
    save_image(tmp / "images" / "000.jpg", np.zeros((4, 6, 3), np.uint8))
    save_image(tmp / "masks" / "000.png", OBJECT.astype(np.uint8) * 255)
    return read_labelled(tmp, 8, num_classes=2)


@probe("masks", "labelled folder with a colour mask", "000.png", "single-channel")
def _(tmp: Path) -> Any:
    save_image(tmp / "images" / "000.jpg", np.zeros((4, 6, 3), np.uint8))
    save_image(tmp / "masks" / "000.png", np.zeros((4, 6, 3), np.uint8))
    return read_labelled(tmp, 8)


# ---- embeddings --------------------------------------------------------------------------------------------------


@probe("embeddings", "refuses to overwrite a foreign .npy", "codes.npy", "not overwritten")
def _(tmp: Path) -> Any:
    np.save(tmp / "codes.npy", np.zeros((3, 8), np.float32))
    return encode_folder(image_folder(tmp / "photos"), tiny_encoder(), tmp / "codes.npy", progress=False)


@probe("embeddings", "folder without images", "photos", "no image files")
def _(tmp: Path) -> Any:
    (tmp / "photos").mkdir()
    (tmp / "photos" / "notes.txt").write_text("no images here")
    return encode_folder(tmp / "photos", tiny_encoder(), tmp / "codes.npy", progress=False)


@probe("embeddings", "folder that does not exist", "photos", "does not exist")
def _(tmp: Path) -> Any:
    return encode_folder(tmp / "photos", tiny_encoder(), tmp / "codes.npy", progress=False)


@probe("embeddings", "resumed with another encoder", "codes.h5", "encoder")
def _(tmp: Path) -> Any:
    encode_folder(image_folder(tmp / "photos"), tiny_encoder(0), tmp / "codes.npy", progress=False)
    return encode_folder(tmp / "photos", tiny_encoder(1), tmp / "codes.npy", progress=False)


@probe("embeddings", "damaged HDF5 file", "codes.h5", "damaged")
def _(tmp: Path) -> Any:
    (tmp / "codes.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    return encode_folder(image_folder(tmp / "photos"), tiny_encoder(), tmp / "codes.npy", progress=False)


@probe("embeddings", "an image added after encoding", "codes.h5", "new file")
def _(tmp: Path) -> Any:
    encode_folder(image_folder(tmp / "photos"), tiny_encoder(), tmp / "codes.npy", progress=False)
    save_image(tmp / "photos" / "late.png", np.zeros((20, 24, 3), np.uint8))
    return encode_folder(tmp / "photos", tiny_encoder(), tmp / "codes.npy", progress=False)


# ---- shards ------------------------------------------------------------------------------------------------------


@probe("shards", "truncated shard", "shard_00001.h5", "cannot be read")
def _(tmp: Path) -> Any:
    path = shard_path(shards(tmp), 1)
    path.write_bytes(path.read_bytes()[:100])
    return ShardDataset(tmp / "shards").read([3])


@probe("shards", "missing shard", "shard_00001.h5", "incomplete")
def _(tmp: Path) -> Any:
    shard_path(shards(tmp), 1).unlink()
    return ShardDataset(tmp / "shards")


@probe("shards", "manifest of other settings", "shards", "different dataset")
def _(tmp: Path) -> Any:
    shards(tmp, {"seed": 0})
    return shards(tmp, {"seed": 1})


@probe("shards", "folder without manifest", "manifest.json", "not a shard folder")
def _(tmp: Path) -> Any:
    (tmp / "shards").mkdir()
    return ShardDataset(tmp / "shards")


@probe("shards", "corrupt manifest, reading", "manifest.json")
def _(tmp: Path) -> Any:
    (shards(tmp) / "manifest.json").write_text('{"format": 1, "n_total": ')
    return ShardDataset(tmp / "shards")


@probe("shards", "corrupt manifest, resuming the writing", "manifest.json")
def _(tmp: Path) -> Any:
    (shards(tmp) / "manifest.json").write_text('{"format": 1, "n_total": ')
    return shards(tmp)


# ---- run folders and training ------------------------------------------------------------------------------------


@probe("training", "empty checkpoint.pt", "checkpoint.pt", "damaged")
def _(tmp: Path) -> Any:
    (tmp / "run").mkdir()
    (tmp / "run" / "checkpoint.pt").touch()
    return train_unet(tmp / "run", ArrayBatches(*pairs(), 2))


@probe("training", "truncated checkpoint.pt", "checkpoint.pt", "damaged")
def _(tmp: Path) -> Any:
    path = trained_run(tmp) / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return train_unet(tmp / "run", ArrayBatches(*pairs(), 2))


@probe("training", "run resumed with another data source", "checkpoint.pt", "other data")
def _(tmp: Path) -> Any:
    return train_unet(trained_run(tmp), ArrayBatches(*pairs(seed=1), 2))


@probe("training", "run resumed with other settings", "checkpoint.pt", "different settings", "lr")
def _(tmp: Path) -> Any:
    return train_unet(trained_run(tmp), ArrayBatches(*pairs(), 2), SegmentationSettings(steps=1, lr=0.1, amp="off"))


@probe("training", "run resumed with another model", "checkpoint.pt", "different model")
def _(tmp: Path) -> Any:
    return train_unet(trained_run(tmp), ArrayBatches(*pairs(), 2), width=8)


@probe("training", "run folder holding another job's checkpoint", "checkpoint.pt")
def _(tmp: Path) -> Any:
    RunFolder(tmp / "run").save({"config": {"lr": 0.1}, "step": 3})
    return train_unet(tmp / "run", ArrayBatches(*pairs(), 2))


@probe("training", "0/255 labels for a two-class U-Net", "255", "label")
def _(tmp: Path) -> Any:
    images, masks = pairs()
    return train_unet(tmp / "run", ArrayBatches(images, masks.astype(np.uint8) * 255, 2))


@probe("training", "labels with a channel axis", "labels")
def _(tmp: Path) -> Any:
    images, masks = pairs()
    return ArrayBatches(images, masks[..., None], 2)


@probe("training", "unknown amp mode", "amp", "fp32")
def _(tmp: Path) -> Any:
    return SegmentationSettings(amp="fp32")


# ---- notebook parameters -----------------------------------------------------------------------------------------


PARAMETER_PROBES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("negative steps", {"SEG_STEPS": -5}, ("SEG_STEPS",)),
    ("a string for an int", {"SEG_BATCH": "32"}, ("SEG_BATCH", "int")),
    ("a float for an int", {"SEG_STEPS": 600.0}, ("SEG_STEPS", "int")),
    ("a non-string generator", {"GENERATOR": 5}, ("GENERATOR", "str")),
    ("a string for a bool", {"SMOKE": "False"}, ("SMOKE", "bool")),
    ("a typo'd name", {"SEG_SETPS": 100}, ("SEG_SETPS", "SEG_STEPS")),
    ("a name in lower case", {"seg_steps": 100}, ("seg_steps",)),
    ("a choice outside its set", {"MASK_RULE": "brightness"}, ("MASK_RULE", "lighting")),
    ("a fraction given in percent", {"MIN_CONSISTENCY": 50}, ("MIN_CONSISTENCY", "[0, 1]")),
    ("an unknown device", {"DEVICE": "gpu"}, ("DEVICE", "cuda")),
    ("a shift space without its colon", {"SHIFT_SPACE": "w64"}, ("SHIFT_SPACE", "w:R")),
    (
        "several problems at once",
        {"SEG_STEPS": -5, "SEG_BATCH": "abc", "GENERATOR": 5},
        ("3 problem", "SEG_STEPS", "SEG_BATCH", "GENERATOR"),
    ),
]
for _name, _overrides, _tokens in PARAMETER_PROBES:
    probe("parameters", _name, *_tokens)(lambda tmp, overrides=_overrides: parameters(**overrides))


# ---- annotation store and annotator ------------------------------------------------------------------------------


@probe("annotations", "store.json without its generator", "store.json", "generator")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    edit_json(root / "store.json", drop=("generator",))
    return AnnotationStore(root)


@probe("annotations", "corrupt store.json", "store.json", "could not read")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    (root / "store.json").write_text('{"format": "gan-seg-notebooks/annotations-v1", ')
    return AnnotationStore(root)


@probe("annotations", "store.json of another kind", "store.json", "not an annotation store")
def _(tmp: Path) -> Any:
    (tmp / "store").mkdir()
    write_json(tmp / "store" / "store.json", {"generator": "default-stylegan2", "ranking": []})
    return AnnotationStore(tmp / "store")


@probe("annotations", "samples without store.json", "store.json", "no store.json")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    (root / "store.json").unlink()
    return AnnotationStore(root)


@probe("annotations", "store whose generator file is gone", "g.pt", "not found")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    (tmp / "g.pt").unlink()
    return AnnotationStore(root).load_generator()


@probe("annotations", "store whose generator was retrained", "g.pt", "not the generator")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    torch.manual_seed(1)
    save_model(StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16), tmp / "g.pt")
    return AnnotationStore(root).load_generator()


@probe("annotations", "store opened with another generator", "store.json", "other.pt")
def _(tmp: Path) -> Any:
    root = store(tmp).root
    save_model(BigGAN(**SMALL_BIGGAN), tmp / "other.pt")
    return AnnotationStore.open_or_create(root, tmp / "other.pt")


@probe("annotations", "store opened in another mode", "store.json", "multiclass")
def _(tmp: Path) -> Any:
    return AnnotationStore.open_or_create(store(tmp).root, mode="multiclass")


@probe("annotations", "sample with z of another length", "000000.json", "z has")
def _(tmp: Path) -> Any:
    annotations = store(tmp)
    edit_json(annotations.paths(0)[0], z=[0.0] * 3)
    return annotations.load_all()


@probe("annotations", "sample mask of another size", "000000.png", "32x32")
def _(tmp: Path) -> Any:
    annotations = store(tmp)
    save_image(annotations.paths(0)[1], np.zeros((16, 16), np.uint8))
    return annotations.load_all()


@probe("annotations", "corrupt sample JSON", "000000.json", "could not read")
def _(tmp: Path) -> Any:
    annotations = store(tmp)
    annotations.paths(0)[0].write_text('{"z": [0.0, ')
    return annotations.load_all()


@probe("annotations", "mask PNG without its sample JSON", "000001.png", "no sample JSON")
def _(tmp: Path) -> Any:
    annotations = store(tmp)
    save_image(annotations.paths(1)[1], np.zeros((32, 32), np.uint8))
    return annotations.load_all()


@probe("annotations", "sample made with another generator", "000000.json", "another generator")
def _(tmp: Path) -> Any:
    annotations = store(tmp)
    edit_json(annotations.paths(0)[0], generator={**annotations.generator.to_json(), "sha256": "0" * 64})
    return annotations.load_all()


@probe("annotations", "saving a mask of another size", "mask", "32x32")
def _(tmp: Path) -> Any:
    return store(tmp).save(np.zeros((16, 16), np.uint8), np.zeros(16, np.float32))


@probe("widgets", "annotator brush mode 'hair'", "hair", "mode")
def _(tmp: Path) -> Any:
    annotator = Annotator(tmp / "work", saved_stylegan2(tmp), seed=0, display_size=64)
    return annotator.set_mode("hair")


@probe("widgets", "annotator with a fit_config of other classes", "num_classes")
def _(tmp: Path) -> Any:
    return Annotator(tmp / "work", saved_stylegan2(tmp), seed=0, display_size=64, fit_config=FitConfig(num_classes=3))


@probe("widgets", "annotator without a store or a generator", "generator")
def _(tmp: Path) -> Any:
    return Annotator(tmp / "work", seed=0, display_size=64)


# ---- runner ------------------------------------------------------------------------------------------------------


@probe("runner", "unknown --only notebook", "99_nothing", "no notebook matches")
def _(tmp: Path) -> Any:
    return runner.run_all(tmp / "results", only=["99_nothing"])


@probe("runner", "unknown profile", "nope", "no profile")
def _(tmp: Path) -> Any:
    return runner.run_all(tmp / "results", profile="nope")


@probe("runner", "profile with an unknown parameter name", "bad.yml", "SEG_STEP")
def _(tmp: Path) -> Any:
    return profile(tmp, f"parameters:\n  {NOTEBOOK}: {{SEG_STEP: 10}}\n")


@probe("runner", "profile for a notebook that does not exist", "bad.yml", "04_segmentation")
def _(tmp: Path) -> Any:
    return profile(tmp, "parameters:\n  04_segmentation: {SEG_STEPS: 10}\n")


@probe("runner", "profile that is not valid YAML", "bad.yml", "line")
def _(tmp: Path) -> Any:
    return profile(tmp, "parameters:\n  all: {SEG_STEPS: 10\n")


@probe("runner", "zero GPUs", "gpus")
def _(tmp: Path) -> Any:
    return runner.run_all(tmp / "results", gpus=0)


# ---- assets ------------------------------------------------------------------------------------------------------

TEST_ASSET = Asset("test-z", "test_z.npy", "embeddings", (), None, None, check_embeddings, "codes", "none")


@probe("assets", "asset changed after it was recorded", "test_z.npy", "differs")
def _(tmp: Path) -> Any:
    (tmp / "embeddings").mkdir()
    np.save(tmp / "embeddings" / "test_z.npy", np.zeros((2, 120), np.float32))
    ensure(TEST_ASSET, tmp)
    np.save(tmp / "embeddings" / "test_z.npy", np.ones((2, 120), np.float32))
    return ensure(TEST_ASSET, tmp)


@probe("assets", "asset in place that fails its check", "test_z.npy", "fails verification")
def _(tmp: Path) -> Any:
    (tmp / "embeddings").mkdir()
    np.save(tmp / "embeddings" / "test_z.npy", np.zeros((2, 64), np.float32))
    return ensure(TEST_ASSET, tmp)


@probe("assets", "manifest of a file changed since", check=lambda problems: any("w.pt" in p for p in problems))
def _(tmp: Path) -> Any:
    (tmp / "w.pt").write_bytes(b"weights")
    record(tmp / "w.pt", {"steps": 1})
    (tmp / "w.pt").write_bytes(b"retrained")
    return verify(tmp)


# ---- running -----------------------------------------------------------------------------------------------------


def run_probe(item: Probe) -> dict[str, Any]:
    """Runs one probe in a fresh temporary folder and classifies its outcome."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = item.run(Path(tmp))
        except Exception as err:  # every failure is an outcome to classify
            text = str(err)
            missing = [token for token in item.tokens if token.lower() not in text.lower()]
            outcome = "clear" if item.tokens and not missing else "unclear"
            message, extra = f"{type(err).__name__}: {text}", {"missing_tokens": missing}
        else:
            outcome = "recovered" if item.check is not None and item.check(result) else "silently wrong"
            message, extra = ("" if outcome == "recovered" else f"accepted; returned {repr(result)[:300]}"), {}
    return {
        "area": item.area,
        "probe": item.name,
        "outcome": outcome,
        "message": message,
        "tokens": list(item.tokens),
        **extra,
        "seconds": round(time.perf_counter() - start, 3),
    }


def run_all(show: bool = False) -> list[dict[str, Any]]:
    """Every probe's row, in registry order; ``show`` prints each row (area, probe, outcome, message) as it comes."""
    rows = []
    for item in PROBES:
        rows.append(run_probe(item))
        if show:
            message = " ".join(rows[-1]["message"].split())[:100]
            print(f"{item.area:<12} {item.name[:52]:<52} {rows[-1]['outcome']:<15} {message}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Runs every probe, prints one row each and the counts per outcome, writes the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/bad_inputs.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"{'area':<12} {'probe':<52} {'outcome':<15} message")
    rows = run_all(show=True)
    seconds = round(time.perf_counter() - start, 1)
    counts = {outcome: sum(row["outcome"] == outcome for row in rows) for outcome in OUTCOMES}
    print(f"\n{len(rows)} probes in {seconds} s: " + ", ".join(f"{o} {n}" for o, n in counts.items()))
    write_json(args.out, {"counts": counts, "seconds": seconds, "probes": rows})
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
