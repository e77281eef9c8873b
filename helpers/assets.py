"""The released files the notebooks can use, where to download them and how to verify them.

``python -m helpers.assets`` (or ``download_all.sh``) fetches what is missing into ``weights/`` and
``embeddings/``; ``--list`` shows the registry and what is in place, ``--only NAME`` picks assets.

* **Integrity.** No sha256 is published for any of these files, so each asset has a structural check
  (the file loads with the expected key layout or array shape). After the check the computed sha256,
  size, URL and date go into ``<folder>/assets.lock.json``; later runs compare against it and make no
  request. An asset with a known ``sha256`` is checked against it instead.
* **Downloads.** pooch's HTTPDownloader streams into ``<file>.part`` beside the target. A broken
  connection is retried, resuming with an HTTP Range request where the server honours it; only a file
  that passed its check is renamed into place (atomic on one filesystem). If every URL fails, the
  ``.part`` is deleted: nothing half-written remains. A run that is killed leaves the ``.part``; the
  next run resumes it. A file already in place that fails verification is reported, never replaced
  silently (``--force`` re-downloads it, and swaps it only once the new file passes).
* **Google Drive.** The SAIC StyleGAN2 files exist only inside a Drive archive, which needs a browser
  (confirmation pages, quotas); they are manual steps: place the file and rerun, the script verifies it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pooch
import requests
import torch

from helpers.core.io import write_json
from helpers.core.manifest import sha256_file
from helpers.core.paths import embeddings_dir, resolve, weights_dir
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import from_object, read_checkpoint
from helpers.gans.convert.ada_pickle import load_generator
from helpers.gans.stylegan2 import StyleGAN2

LOCK = "assets.lock.json"
FOLDERS = ("weights", "embeddings")
Check = Callable[[Path], str]


class AssetError(RuntimeError):
    """An asset could not be downloaded or verified; the message names the asset, the URL(s) and the reason."""


@dataclass(frozen=True)
class Asset:
    """One released file: where it goes, where to get it (mirrors in order) and how to verify it."""

    name: str
    filename: str
    folder: str  # "weights" or "embeddings"
    urls: tuple[str, ...]
    size_mb: float | None  # approximate, for display only
    sha256: str | None
    check: Check  # raises on a malformed file; returns what it verified
    description: str
    source: str  # the page that publishes the URL
    manual: str = ""  # instructions when no direct URL exists

    def __post_init__(self) -> None:
        if self.folder not in FOLDERS:
            raise ValueError(f"asset {self.name}: folder must be one of {FOLDERS}, got {self.folder!r}")


# ---- structural checks: each raises (any exception) on a malformed file and says what it verified ----


def check_bigbigan(path: Path) -> str:
    """The released BigBiGAN generator: a BigGAN state dict that builds the 128 px, ch 96, dim_z 120 layout."""
    state = read_checkpoint(path)
    model = from_object(state, str(path))
    got = type(model).__name__
    if isinstance(model, BigGAN):
        got = {k: model.config.get(k) for k in ("resolution", "ch", "dim_z")}
    if got != {"resolution": 128, "ch": 96, "dim_z": 120}:
        raise ValueError(f"expected BigGAN resolution 128, ch 96, dim_z 120; got {got}")
    return f"BigGAN 128 px, ch 96, dim_z 120, {len(state)} keys"


def check_direction(path: Path) -> str:
    """A latent direction: one tensor (or a dict holding exactly one) with 120 finite elements."""
    obj = read_checkpoint(path)
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        obj = tensors[0] if len(tensors) == 1 else obj
    if not isinstance(obj, torch.Tensor) or obj.numel() != 120 or not torch.isfinite(obj).all():
        raise ValueError(f"expected a tensor of 120 finite numbers, got {_describe(obj)}")
    return f"direction tensor {tuple(obj.shape)}"


def check_embeddings(path: Path) -> str:
    """BigBiGAN encoder outputs: a float .npy of shape [N, 120] (memory-mapped, not read)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != 120 or array.dtype.kind != "f":
        raise ValueError(f"expected a float array of shape [N, 120], got {array.dtype} {array.shape}")
    return f"{array.dtype} array {array.shape}"


def _unet_keys() -> set[str]:
    conv = [f"double_conv.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
    bn_params = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    bn = [f"double_conv.{i}.{p}" for i in (1, 4) for p in bn_params]
    blocks = ["inc."] + [f"down{k}.maxpool_conv.1." for k in range(1, 5)] + [f"up{k}.conv." for k in range(1, 5)]
    return {b + k for b in blocks for k in conv + bn} | {"outc.conv.weight", "outc.conv.bias"}


UNET_KEYS = frozenset(_unet_keys())  # milesial Pytorch-UNet as in BigGANsAreWatching/UNet, bilinear, 128 entries


def check_unet(path: Path) -> str:
    """The reference U-Net's state dict: its 128 keys (num_batches_tracked optional), 3 channels in, 2 out."""
    state = read_checkpoint(path)
    keys = set(state) if isinstance(state, dict) else set()
    required = {k for k in UNET_KEYS if not k.endswith("num_batches_tracked")}
    if not required <= keys <= UNET_KEYS:
        raise ValueError(
            f"not the reference U-Net layout: missing {sorted(required - keys)[:5]}, "
            f"unexpected {sorted(keys - UNET_KEYS)[:5]}"
        )
    shapes = tuple(state["inc.double_conv.0.weight"].shape), tuple(state["outc.conv.weight"].shape)
    if shapes != ((64, 3, 3, 3), (2, 64, 1, 1)):
        raise ValueError(f"first/last conv shapes {shapes}, expected (64, 3, 3, 3) and (2, 64, 1, 1)")
    return f"U-Net state dict, {len(keys)} keys"


def ada_check(resolution: int) -> Check:
    """A check for a StyleGAN2-ADA network pickle: read safely, its G_ema builds our StyleGAN2 (strict load)."""

    def check(path: Path) -> str:
        model = load_generator(path)
        other = "" if model.resolution == resolution else f", not the released {resolution} px"
        return f"StyleGAN2-ADA network pickle {model.resolution} px{other}, G_ema loaded strictly"

    return check


def stylegan2_check(resolution: int) -> Check:
    """A check for SAIC's converted StyleGAN2: {'netGA', 'latent_avg'} that builds a StyleGAN2 (strict load).

    A file at another resolution than the released ``resolution`` (a user's own generator under the released
    name) passes; the result says so."""

    def check(path: Path) -> str:
        obj = read_checkpoint(path)
        if not isinstance(obj, dict) or not {"netGA", "latent_avg"} <= set(obj):
            raise ValueError(f"expected a dict with 'netGA' and 'latent_avg', got {_describe(obj)}")
        model = from_object(obj, str(path))
        if not isinstance(model, StyleGAN2):
            raise ValueError(f"expected a StyleGAN2, got {type(model).__name__}")
        other = "" if model.resolution == resolution else f", not the released {resolution} px"
        return f"SAIC StyleGAN2 {model.resolution} px{other}, {len(obj['netGA'])} keys"

    return check


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor {tuple(obj.shape)}"
    return f"dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__


# ---- the registry ----

_BGW = "https://github.com/anvoynov/BigGANsAreWatching/blob/338378a750342a2574e7e5d5f1041be45aad9374/"
_SAIC = (
    "https://github.com/SamsungLabs/GAN-high-resolution-representation/blob/"
    "312c86da6d5a661f12abbcd4c586a41524b5a5e5/README.md#installation"
)
_SAIC_MANUAL = (
    "Google Drive only: open https://drive.google.com/open?id=1uCAo0X1kdXM9wPmt_gcdnpmUDPGmACkx "
    "in a browser, download and unpack the stylegan2-models archive, put {file} into {folder}/, "
    "then rerun to verify and record it."
)


def _dropbox(key: str, filename: str) -> tuple[str, str]:
    # ?dl=1 asks for the file rather than the preview page; dl.dropboxusercontent.com serves it directly.
    return (f"https://www.dropbox.com/s/{key}/{filename}?dl=1", f"https://dl.dropboxusercontent.com/s/{key}/{filename}")


def _embeddings(name: str, key: str, filename: str, size_mb: float | None, what: str) -> Asset:
    return Asset(
        name,
        filename,
        "embeddings",
        _dropbox(key, filename),
        size_mb,
        None,
        check_embeddings,
        f"BigBiGAN encoder z_sample of {what}, float32 [N, 120]",
        _BGW + "download_all.sh",
    )


def _unet(name: str, key: str, filename: str, what: str) -> Asset:
    return Asset(
        name,
        filename,
        "weights",
        _dropbox(key, filename),
        54,
        None,
        check_unet,
        f"U-Net trained on synthetic BigBiGAN data from {what} (reference pretrained model)",
        _BGW + "README.md#pre-trained-models",
    )


ASSETS: tuple[Asset, ...] = (
    Asset(
        "bigbigan",
        "BigBiGAN_x1.pth",
        "weights",
        (
            *_dropbox("9w2i45h455k3b4p", "BigBiGAN_x1.pth"),
            # the same file re-hosted for lukemelas/pytorch-pretrained-gans (its BigBiGAN/__init__.py)
            "https://github.com/greeneggsandyaml/tmp/releases/download/0.0.1/BigBiGAN_x1.pth",
        ),
        282,
        None,
        check_bigbigan,
        "BigBiGAN (TF-Hub bigbigan-resnet50/1) generator ported to BigGAN-PyTorch, 128 px",
        _BGW + "download_all.sh",
    ),
    Asset(
        "bg-direction",
        "bg_direction.pth",
        "weights",
        _dropbox("np74kmkohkbx76t", "bg_direction.pth"),
        0.001,
        None,
        check_direction,
        "BigBiGAN latent direction: darker background, lighter object",
        _BGW + "download_all.sh",
    ),
    _embeddings("embeddings-imagenet", "y5qr9wwtop7ot6b", "BigBiGAN_ImageNet_z.npy", 551, "ImageNet"),
    _embeddings("embeddings-cub", "qgacaoo7urh35j9", "BigBiGAN_CUB_train_z.npy", 2.9, "CUB-200-2011 train"),
    _embeddings("embeddings-duts", "b77in0vuc8jy1yf", "BigBiGAN_DUTS-TR_z.npy", 5.1, "DUTS-TR"),
    _embeddings("embeddings-flowers", "fmw2g54xqli59ck", "BigBiGAN_Flowers_train_z.npy", None, "Flowers-102 train"),
    _unet("unet-imagenet", "3nty6x7fwof7xyv", "u_net_imagenet.pth", "ImageNet embeddings"),
    _unet("unet-cub", "90odh34ddpjvuxk", "u_net_cub2002011.pth", "CUB-200-2011 embeddings"),
    _unet("unet-flowers", "fk8r9q0tvwaxbpl", "u_net_flowers.pth", "Flowers embeddings"),
    Asset(
        "stylegan2-ffhq",
        "ffhq.tar",
        "weights",
        (),
        121,
        None,
        stylegan2_check(1024),
        "StyleGAN2 FFHQ 1024 px in SAIC's {'netGA', 'latent_avg'} format",
        _SAIC,
        _SAIC_MANUAL.format(file="ffhq.tar", folder="weights"),
    ),
    Asset(
        "stylegan2-ada-ffhq",
        "stylegan2-ada-ffhq.pkl",
        "weights",
        ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",),
        364,
        None,
        ada_check(1024),
        "StyleGAN2 FFHQ 1024 px as NVlabs stylegan2-ada-pytorch publishes it (network pickle, read without its code)",
        "https://github.com/NVlabs/stylegan2-ada-pytorch#pretrained-networks",
    ),
    Asset(
        "stylegan2-cars",
        "cars.tar",
        "weights",
        (),
        121,
        None,
        stylegan2_check(512),
        "StyleGAN2 LSUN cars 512 px in SAIC's {'netGA', 'latent_avg'} format",
        _SAIC,
        _SAIC_MANUAL.format(file="cars.tar", folder="weights"),
    ),
)


# ---- where files go, the lock file ----


def folder_path(folder: str, dest: str | os.PathLike | None = None) -> Path:
    """weights/ (GANSEG_WEIGHTS_DIR) or <root>/embeddings/; <dest>/<folder> if dest is given (relative: to the root)."""
    if dest is not None:
        return resolve(dest) / folder
    return weights_dir() if folder == "weights" else embeddings_dir()


def target_path(asset: Asset, dest: str | os.PathLike | None = None) -> Path:
    """Where the asset's file lives."""
    return folder_path(asset.folder, dest) / asset.filename


def read_lock(folder: Path) -> dict[str, dict[str, Any]]:
    """The entries of folder/assets.lock.json by file name (empty without one)."""
    path = folder / LOCK
    return json.loads(path.read_text())["files"] if path.exists() else {}


def _record(asset: Asset, path: Path, url: str | None, checked: str) -> None:
    files = read_lock(path.parent)
    files[path.name] = {
        "asset": asset.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "url": url,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "check": checked,
    }
    write_json(path.parent / LOCK, {"files": dict(sorted(files.items()))})


IN_PLACE = ("verified", "unverified: structure only")  # what a checked file in place reports


def status(asset: Asset, dest: str | os.PathLike | None = None) -> str:
    """'missing'; 'verified' (the published sha256 matches); 'unverified: structure only' (no sha256 is published:
    the file passed its structural check when recorded and is unchanged since, which a well-formed wrong file would
    too); 'unrecorded' (not checked yet); or 'MODIFIED' (changed since, or not the published file)."""
    path = target_path(asset, dest)
    if not path.exists():
        return "missing"
    expected = asset.sha256 or read_lock(path.parent).get(path.name, {}).get("sha256")
    if expected is None:
        return "unrecorded"
    if sha256_file(path) != expected:
        return "MODIFIED"
    return "verified" if asset.sha256 else "unverified: structure only"


# ---- download and verification ----


def _verify(asset: Asset, path: Path) -> str:
    """The known sha256 if there is one, else the structural check; raises ValueError with the reason."""
    if asset.sha256:
        digest = sha256_file(path)
        if digest != asset.sha256:
            raise ValueError(f"sha256 mismatch: got {digest}, expected {asset.sha256}")
        return "sha256"
    try:
        return "structural: " + asset.check(path)
    except Exception as err:  # any failure to load means a malformed file
        raise ValueError(f"structural check failed: {type(err).__name__}: {err}") from err


def _transfer(url: str, part: Path, progressbar: bool) -> None:
    """One GET into ``part``, continuing from its current size when the server honours Range."""
    offset = part.stat().st_size if part.exists() else 0
    expected: list[int] = []
    with open(part, "ab") as out:  # append mode: every write goes to the end of what is kept

        def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            content_range = response.headers.get("Content-Range", "")
            resumed = response.status_code == 206 and content_range.startswith(f"bytes {offset}-")
            if response.status_code in (206, 416) and not resumed:
                out.truncate(0)
                raise OSError(f"server could not resume at byte {offset} (HTTP {response.status_code}); restarting")
            if response.status_code == 200:
                out.truncate(0)  # no Range asked, or the server ignored it: the whole file follows
            elif not resumed:
                return  # a redirect or an error status (raise_for_status reports it; the .part is kept)
            if response.headers.get("Content-Type", "").startswith("text/html"):
                raise ValueError("the server sent an HTML page, not the file (expired link or a browser-only page)")
            if "Content-Length" in response.headers:
                expected.append((offset if resumed else 0) + int(response.headers["Content-Length"]))

        headers = {"Range": f"bytes={offset}-"} if offset else {}
        downloader = pooch.HTTPDownloader(
            progressbar=progressbar, chunk_size=1 << 20, timeout=60, headers=headers, hooks={"response": on_response}
        )
        downloader(url, out, None)
    if expected and part.stat().st_size != expected[0]:
        raise OSError(f"truncated: received {part.stat().st_size} of {expected[0]} bytes")


def _fetch(url: str, part: Path, retries: int, retry_delay: float, progressbar: bool) -> None:
    """Downloads url into part in up to ``retries`` attempts, each resuming the last; raises OSError if all fail."""
    retries = max(retries, 1)
    for attempt in range(1, retries + 1):
        try:
            return _transfer(url, part, progressbar)
        except requests.HTTPError as err:
            code = err.response.status_code if err.response is not None else 0
            if code < 500 and code != 429:  # 404, 403, ...: retrying will not help
                raise
            last = err
        except OSError as err:  # connection errors, timeouts, truncated bodies (requests' errors are OSErrors)
            last = err
        if attempt < retries:
            time.sleep(retry_delay * attempt)
    raise OSError(f"{_reason(last)} (after {retries} attempts)")


def _reason(err: BaseException) -> str:
    """The innermost message of a requests/urllib3 error, which nest exceptions inside exceptions."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    return err.args[0] if err.args and isinstance(err.args[0], str) else str(err)


def ensure(
    asset: Asset,
    dest: str | os.PathLike | None = None,
    force: bool = False,
    retries: int = 3,
    retry_delay: float = 2.0,
    progressbar: bool | None = None,
) -> str:
    """Puts the asset's file in place, checked; returns a `status` of a file in place (`IN_PLACE`), 'recorded',
    'downloaded' or 'manual'."""
    path = target_path(asset, dest)
    part = path.with_name(path.name + ".part")
    if path.exists() and not force:
        state = status(asset, dest)
        if state in IN_PLACE:
            return state
        if state == "MODIFIED":
            raise AssetError(
                f"{asset.name}: {path} differs from its expected sha256 (known or in {LOCK}); "
                "delete it or rerun with --force to download it again"
            )
        try:
            _record(asset, path, None, _verify(asset, path))
        except ValueError as err:
            raise AssetError(
                f"{asset.name}: {path} is in place but fails verification ({err}); "
                "it was left untouched: delete it or rerun with --force"
            ) from err
        return "recorded"
    if not asset.urls:
        return "manual"
    path.parent.mkdir(parents=True, exist_ok=True)
    progressbar = sys.stderr.isatty() if progressbar is None else progressbar
    if force:
        part.unlink(missing_ok=True)
    failures = []
    for url in asset.urls:
        print(f"{asset.name}: downloading {asset.filename} ({_size(asset)}) from {url}", flush=True)
        try:
            _fetch(url, part, retries, retry_delay, progressbar)
            checked = _verify(asset, part)
        except (OSError, ValueError) as err:
            failures.append(f"  {url}: {err}")
            part.unlink(missing_ok=True)  # the next mirror starts afresh; nothing half-written remains
            continue
        os.replace(part, path)
        _record(asset, path, url, checked)
        return "downloaded"
    raise AssetError(
        f"{asset.name}: could not get {asset.filename} from any URL:\n"
        + "\n".join(failures)
        + f"\nNothing was written to {path} and no partial file was kept."
    )


def _size(asset: Asset) -> str:
    return "size unknown" if asset.size_mb is None else f"~{asset.size_mb:g} MB"


# ---- command line ----


def _list(assets: Sequence[Asset], dest: str | os.PathLike | None) -> None:
    for asset in assets:
        where = target_path(asset, dest)
        print(f"{asset.name:<20} {asset.filename:<30} {_size(asset):>12}  {status(asset, dest):<26} {where}")
        if asset.manual:
            print(f"{'':<20} manual: {asset.manual}")


def main(argv: Sequence[str] | None = None) -> int:
    """Downloads and verifies the registry's assets (or lists them); exit status 1 if any failed."""
    names = [a.name for a in ASSETS]
    parser = argparse.ArgumentParser(prog="download_all.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="show every asset, its size, place and state")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"only these: {', '.join(names)}")
    parser.add_argument("--force", action="store_true", help="download again even if the file is in place")
    parser.add_argument("--dest", help="put files under DEST/weights and DEST/embeddings (relative to the repo root)")
    args = parser.parse_args(argv)
    assets = [a for a in ASSETS if args.only is None or a.name in args.only]
    if args.list:
        _list(assets, args.dest)
        return 0
    failed = 0
    for asset in assets:
        try:
            outcome = ensure(asset, args.dest, force=args.force)
        except AssetError as err:
            print(f"ERROR {err}", file=sys.stderr)
            failed += 1
            continue
        where = target_path(asset, args.dest)
        if outcome == "manual":
            print(f"{asset.name}: not in place; manual step: {asset.manual}")
            if args.only:  # asked for by name, so its absence is a failure
                failed += 1
        else:
            print(f"{asset.name}: {outcome} ({where})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
