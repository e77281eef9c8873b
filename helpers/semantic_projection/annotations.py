"""Annotated generator samples stored as the generator's inputs (z, noise seed, truncation) plus a mask PNG.

A store is a folder::

    store.json            generator (known name or path, sha256 of the file, class, resolution, dim_z),
                          mode, classes, version counter, next sample id
    samples/000000.json   one sample: id, version, z (list of floats), noise_seed, truncation, generator, mode
    samples/000000.png    its mask, 8-bit grayscale at the generator's resolution
    deleted/              samples removed with `AnnotationStore.delete` (moved here, never erased)

Mask encodings (the PNG value of each pixel):

* ``binary``: 0 = ignore (unpainted), 128 = negative, 255 = positive (the reference's gray levels; read
  back with its thresholds: < 64 ignore, 64..192 class 0, > 192 class 1, so an RGB mask also works);
* ``multiclass``: the class index 0..K-1, and 255 = ignore.

Samples are append-only: each save takes a fresh id (ids are never reused, even after a delete), writes
the PNG and then the JSON atomically (the JSON is the commit marker), never replaces an existing file, and
bumps the version counter, so a decoder trained at version v can always be traced to its samples. Loading
validates every file and raises `AnnotationError` naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from helpers.core.io import atomic_path, write_json
from helpers.core.manifest import sha256_file
from helpers.gans.base import Generator
from helpers.gans.checkpoints import KNOWN_FILES, load, resolve_checkpoint
from helpers.semantic_projection.fitting import IGNORE_INDEX, LabelledLatent

STORE_FORMAT = "gan-seg-notebooks/annotations-v1"
SAMPLE_FORMAT = "gan-seg-notebooks/annotation-sample-v1"
MODES = ("binary", "multiclass")
BINARY_IGNORE, BINARY_NEGATIVE, BINARY_POSITIVE = 0, 128, 255
MULTICLASS_IGNORE = 255
SAMPLE_NAME = re.compile(r"^(\d{6,})\.(json|png)$")


class AnnotationError(ValueError):
    """A store or sample file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class GeneratorRef:
    """Which generator the latents belong to: a known name or a path, and the file's sha256."""

    name: str | None
    path: str  # the file name for a known name (looked up in the weights folder), else the absolute path
    sha256: str
    class_name: str
    resolution: int
    dim_z: int

    @classmethod
    def from_model(cls, name_or_path: str | os.PathLike, model: Generator) -> GeneratorRef:
        """The reference for a checkpoint and the generator loaded from it."""
        name = str(name_or_path) if str(name_or_path) in KNOWN_FILES else None
        path = resolve_checkpoint(name_or_path)
        return cls(
            name,
            path.name if name else str(path.resolve()),
            sha256_file(path),
            type(model).__name__,
            model.resolution,
            model.dim_z,
        )

    def resolved_path(self) -> Path:
        """The checkpoint file now: a known name is looked up in the current weights folder."""
        return resolve_checkpoint(self.name) if self.name else Path(self.path)

    def load(self, device: str = "cpu", verify: bool = True) -> Generator:
        """Loads the generator; with verify, refuses a file whose sha256 differs from the recorded one."""
        path = self.resolved_path()
        if verify and path.exists() and sha256_file(path) != self.sha256:
            raise AnnotationError(
                f"{path} is not the generator these annotations were made with "
                f"(sha256 {self.sha256[:12]}… recorded); the latents would give other images"
            )
        return load(self.name or path, device)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "class": self.class_name,
            "resolution": self.resolution,
            "dim_z": self.dim_z,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GeneratorRef:
        """Inverse of to_json."""
        return cls(obj["name"], obj["path"], obj["sha256"], obj["class"], int(obj["resolution"]), int(obj["dim_z"]))


@dataclass
class Annotation:
    """One stored sample: generator inputs, mask (stored encoding, uint8 [R, R]) and its files."""

    id: int
    z: np.ndarray
    noise_seed: int | None
    truncation: float | None
    mask: np.ndarray
    version: int
    json_path: Path
    png_path: Path


def _read_json(path: Path) -> dict[str, Any]:
    """JSON content of path, or AnnotationError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"missing file: {path}") from None
    except (OSError, ValueError) as err:
        raise AnnotationError(f"could not read {path} as JSON: {err}") from err


class AnnotationStore:
    """A versioned, append-only folder of annotated latents (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        """Opens an existing store; use `create` or `open_or_create` for a new one."""
        self.root = Path(root)
        info = _read_json(self.index_path) if self.index_path.exists() else None
        if info is None:
            hint = " (it holds samples but no store.json)" if self.samples_dir.exists() else ""
            raise AnnotationError(
                f"missing file: {self.index_path}{hint}; create the store with AnnotationStore.create(root, generator)"
            )
        if info.get("format") != STORE_FORMAT or info.get("mode") not in MODES:
            raise AnnotationError(f"{self.index_path} is not an annotation store ({STORE_FORMAT})")
        missing = [k for k in ("generator", "classes", "version", "next_id") if k not in info]
        if missing:
            raise AnnotationError(
                f"{self.index_path} lacks {missing}: the store cannot say which generator its latents belong to or "
                "how its samples are numbered; restore the file from a copy (the samples are intact)"
            )
        try:
            self.generator = GeneratorRef.from_json(info["generator"])
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"{self.index_path}: its generator record is incomplete ({err!r})") from err
        self.mode: str = info["mode"]
        self.classes: list[str] = list(info["classes"])
        self._version, self._next_id = int(info["version"]), int(info["next_id"])

    @property
    def index_path(self) -> Path:
        """The store's store.json."""
        return self.root / "store.json"

    @property
    def samples_dir(self) -> Path:
        """Where sample files live."""
        return self.root / "samples"

    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        generator: str | os.PathLike,
        mode: str = "binary",
        classes: list[str] | None = None,
        model: Generator | None = None,
    ) -> AnnotationStore:
        """A new empty store for a generator checkpoint (known name or path); ``model`` skips reloading it."""
        root = Path(root)
        if (root / "store.json").exists():
            raise FileExistsError(f"{root / 'store.json'} exists; open the store with AnnotationStore(root)")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if classes is None:
            if mode == "multiclass":
                raise ValueError("multiclass mode needs class names")
            classes = ["negative", "positive"]
        if len(classes) < 2 or (mode == "binary" and len(classes) != 2) or len(classes) > MULTICLASS_IGNORE:
            raise ValueError(f"{mode} mode needs {'2' if mode == 'binary' else '2..255'} classes; got {classes}")
        ref = GeneratorRef.from_model(generator, model if model is not None else load(generator))
        encoding = (
            "0 = ignore, 128 = negative (class 0), 255 = positive (class 1)"
            if mode == "binary"
            else f"class index, {MULTICLASS_IGNORE} = ignore"
        )
        write_json(
            root / "store.json",
            {
                "format": STORE_FORMAT,
                "generator": ref.to_json(),
                "mode": mode,
                "classes": list(classes),
                "mask_encoding": encoding,
                "version": 0,
                "next_id": 0,
            },
        )
        return cls(root)

    @classmethod
    def open_or_create(
        cls,
        root: str | os.PathLike,
        generator: str | os.PathLike | None = None,
        mode: str | None = None,
        classes: list[str] | None = None,
    ) -> AnnotationStore:
        """Opens the store at root (checking a given generator and mode against it) or creates it (default binary)."""
        if (Path(root) / "store.json").exists():
            store = cls(root)
            if generator is not None and sha256_file(resolve_checkpoint(generator)) != store.generator.sha256:
                raise AnnotationError(
                    f"{store.index_path} belongs to {store.generator.name or store.generator.path} "
                    f"(sha256 {store.generator.sha256[:12]}…), not {generator}"
                )
            if mode is not None and mode != store.mode:
                raise AnnotationError(f"{store.index_path} is a {store.mode} store, not {mode}")
            return store
        if generator is None:
            raise AnnotationError(f"no store at {root}; pass the generator to create one")
        return cls.create(root, generator, mode or "binary", classes)

    # ------------------------------------------------------------------------------------------ properties

    @property
    def resolution(self) -> int:
        """Mask size R (the generator's image resolution)."""
        return self.generator.resolution

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.classes)

    @property
    def ignore_value(self) -> int:
        """PNG value of unannotated pixels."""
        return BINARY_IGNORE if self.mode == "binary" else MULTICLASS_IGNORE

    @property
    def version(self) -> int:
        """Counter bumped by every save and delete (never decreases)."""
        return self._version

    def _files(self, folder: Path) -> dict[int, set[str]]:
        """Sample ids in folder with their file kinds ({"json", "png"})."""
        found: dict[int, set[str]] = {}
        for path in folder.iterdir() if folder.exists() else []:
            if m := SAMPLE_NAME.match(path.name):
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found

    def ids(self) -> list[int]:
        """Ids of the stored samples (those with a JSON), ascending."""
        return sorted(i for i, kinds in self._files(self.samples_dir).items() if "json" in kinds)

    def __len__(self) -> int:
        return len(self.ids())

    def paths(self, sample_id: int) -> tuple[Path, Path]:
        """(JSON, PNG) paths of a sample id."""
        return self.samples_dir / f"{sample_id:06d}.json", self.samples_dir / f"{sample_id:06d}.png"

    # ----------------------------------------------------------------------------------------------- write

    def _write_index(self) -> None:
        info = _read_json(self.index_path)
        info.update(version=self._version, next_id=self._next_id)
        write_json(self.index_path, info)

    def check_mask(self, mask: np.ndarray, source: str = "mask") -> np.ndarray:
        """The mask as uint8 [R, R] in this store's encoding, or ValueError saying what is wrong."""
        mask = np.asarray(mask)
        if mask.shape != (self.resolution, self.resolution):
            raise ValueError(
                f"{source} is {mask.shape}; the generator makes {self.resolution}x{self.resolution} images"
            )
        if mask.dtype.kind not in "iub" or mask.min() < 0 or mask.max() > 255:
            raise ValueError(f"{source} must hold integers 0..255; got {mask.dtype}")
        mask = mask.astype(np.uint8)
        if self.mode == "multiclass":
            bad = (mask != MULTICLASS_IGNORE) & (mask >= self.num_classes)
            if bad.any():
                raise ValueError(
                    f"{source} has values {sorted(set(mask[bad].tolist()))[:5]} that are neither a class "
                    f"index (0..{self.num_classes - 1}) nor ignore ({MULTICLASS_IGNORE})"
                )
        return mask

    def save(
        self,
        mask: np.ndarray,
        z: np.ndarray,
        noise_seed: int | None = None,
        truncation: float | None = None,
        sample_id: int | None = None,
    ) -> Annotation:
        """Adds a sample under a fresh id (or ``sample_id``, which must be unused); never overwrites a file."""
        mask = self.check_mask(mask)
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        if z.shape != (self.generator.dim_z,):
            raise ValueError(f"z has {z.size} values; the generator takes {self.generator.dim_z}")
        on_disk = self._files(self.samples_dir) | self._files(self.root / "deleted")
        if sample_id is None:
            sample_id = max([self._next_id, *(i + 1 for i in on_disk)])
        json_path, png_path = self.paths(sample_id)
        if sample_id in on_disk or json_path.exists() or png_path.exists():
            raise FileExistsError(f"sample {sample_id} already exists in {self.root}; samples are never overwritten")
        version = max(self._version, self._max_sample_version()) + 1
        record = {
            "format": SAMPLE_FORMAT,
            "id": sample_id,
            "version": version,
            "mask": png_path.name,
            "z": [float(v) for v in z],
            "noise_seed": None if noise_seed is None else int(noise_seed),
            "truncation": None if truncation is None else float(truncation),
            "generator": self.generator.to_json(),
            "mode": self.mode,
            "classes": self.classes,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # both files are complete temporaries before either appears; the PNG lands first, the JSON commits
        with atomic_path(json_path) as json_tmp, atomic_path(png_path) as png_tmp:
            Image.fromarray(mask).save(png_tmp, format="PNG")
            json_tmp.write_text(json.dumps(record, indent=2) + "\n")
        self._version, self._next_id = version, max(self._next_id, sample_id + 1)
        self._write_index()
        return Annotation(sample_id, z, record["noise_seed"], record["truncation"], mask, version, json_path, png_path)

    def delete(self, sample_id: int) -> Path:
        """Moves a sample's files to deleted/ (its id is never reused); returns that folder."""
        json_path, png_path = self.paths(sample_id)
        if not json_path.exists():
            raise KeyError(f"no sample {sample_id} in {self.samples_dir}")
        trash = self.root / "deleted"
        trash.mkdir(exist_ok=True)
        for path in (json_path, png_path):  # JSON first: the sample disappears at once
            if path.exists():
                shutil.move(path, trash / path.name)
        self._version = max(self._version, self._max_sample_version()) + 1
        self._next_id = max(self._next_id, sample_id + 1)
        self._write_index()
        return trash

    def _max_sample_version(self) -> int:
        """Highest version recorded in a sample JSON (covers a crash between a save and store.json)."""
        versions = [_read_json(self.paths(i)[0]).get("version", 0) for i in self.ids()]
        return max(versions, default=0)

    # ------------------------------------------------------------------------------------------------ read

    def load(self, sample_id: int) -> Annotation:
        """One sample, validated (JSON fields, PNG readable, mask size and values); AnnotationError names the file."""
        json_path, png_path = self.paths(sample_id)
        record = _read_json(json_path)
        try:
            z = np.asarray(record["z"], dtype=np.float32)
            noise_seed, truncation = record["noise_seed"], record["truncation"]
            mask_name, generator = record["mask"], record["generator"]
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"{json_path} is not a valid sample record: {type(err).__name__}: {err}") from err
        if z.shape != (self.generator.dim_z,):
            raise AnnotationError(f"{json_path}: z has {z.size} values; the generator takes {self.generator.dim_z}")
        if generator.get("sha256") != self.generator.sha256:
            raise AnnotationError(
                f"{json_path} was made with another generator ({generator.get('path')}) "
                f"than the store's ({self.generator.path})"
            )
        mask_path = json_path.parent / mask_name
        if not mask_path.exists():
            raise AnnotationError(f"missing file: {mask_path} (the mask of {json_path})")
        try:
            with Image.open(mask_path) as image:
                mask = np.asarray(image.convert("L"))
        except (OSError, UnidentifiedImageError) as err:
            raise AnnotationError(f"could not read the mask {mask_path}: {err}") from err
        try:
            mask = self.check_mask(mask, str(mask_path))
        except ValueError as err:
            raise AnnotationError(str(err)) from err
        return Annotation(
            sample_id, z, noise_seed, truncation, mask, int(record.get("version", 0)), json_path, mask_path
        )

    def load_all(self) -> list[Annotation]:
        """Every sample, validated; a mask PNG without its JSON (an interrupted save?) is an error too."""
        orphans = sorted(i for i, kinds in self._files(self.samples_dir).items() if kinds == {"png"})
        if orphans:
            png = self.paths(orphans[0])[1]
            raise AnnotationError(
                f"{png} has no sample JSON {png.with_suffix('.json').name} (an interrupted save?); "
                f"delete it or restore the JSON ({len(orphans)} such mask(s))"
            )
        return [self.load(i) for i in self.ids()]

    def labels(self, mask: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """Training labels int64 [R, R] from a stored mask: class indices, ignore_index where unannotated."""
        mask = np.asarray(mask)
        if mask.ndim == 3:  # an RGB mask, as the reference wrote them
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).convert("L"))
        labels = np.full(mask.shape, ignore_index, dtype=np.int64)
        if self.mode == "binary":
            labels[(mask >= 64) & (mask <= 192)] = 0
            labels[mask > 192] = 1
        else:
            labelled = mask != MULTICLASS_IGNORE
            labels[labelled] = mask[labelled]
        return labels

    def training_samples(self, ignore_index: int = IGNORE_INDEX) -> list[LabelledLatent]:
        """All samples as projection.LabelledLatent (z, labels, noise seed, truncation)."""
        return [
            LabelledLatent(a.z, self.labels(a.mask, ignore_index), a.noise_seed, a.truncation, str(a.json_path))
            for a in self.load_all()
        ]

    def load_generator(self, device: str = "cpu", verify: bool = True) -> Generator:
        """The store's generator (sha256-checked), in eval mode."""
        model = self.generator.load(device, verify)
        if model.resolution != self.resolution or model.dim_z != self.generator.dim_z:
            raise AnnotationError(
                f"{self.generator.resolved_path()} makes {model.resolution} px images from "
                f"{model.dim_z}-d z; {self.index_path} expects {self.resolution} px, "
                f"{self.generator.dim_z}-d"
            )
        return model
