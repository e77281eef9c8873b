"""Shared fixtures: every test writes its dataset cache into a temporary folder."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.gans.base import Generator
from helpers.gans.stylegan2 import StyleGAN2


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GANSEG_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


def _photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat background with a lighter ellipse; the ellipse is the object."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6), h * 0.3, w * 0.25
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    image = np.empty((h, w, 3), np.uint8)
    image[:] = rng.integers(0, 100, 3)
    image[mask] = rng.integers(150, 255, 3)
    return image, mask


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_benchmark(name: str, root: Path, n: int = 3, seed: int = 0) -> None:
    """``n`` image/mask pairs in the benchmark's released layout and file naming."""
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        image, mask = _photo(rng, int(rng.integers(40, 70)), int(rng.integers(40, 70)))
        binary = (mask * 255).astype(np.uint8)
        if name == "ECSSD":
            _save(root / "images" / f"{i:04d}.jpg", image)
            _save(root / "ground_truth_mask" / f"{i:04d}.png", binary)
        elif name == "DUTS-TE":
            _save(root / "DUTS-TE-Image" / f"ILSVRC2012_test_{i:08d}.jpg", image)
            _save(root / "DUTS-TE-Mask" / f"ILSVRC2012_test_{i:08d}.png", binary)
        elif name == "DUT-OMRON":
            _save(root / "DUT-OMRON-image" / f"im{i:03d}.jpg", image)
            _save(root / "pixelwiseGT-new-PNG" / f"im{i:03d}.png", binary)
        elif name == "CUB-200-2011":
            folder, stem = "001.Black_footed_Albatross", f"Black_Footed_Albatross_{i:04d}_79{i}"
            _save(root / "images" / folder / f"{stem}.jpg", image)
            _save(root / "segmentations" / folder / f"{stem}.png", (mask * 204).astype(np.uint8))  # soft: 0.8
        else:
            segmim = image.copy()
            segmim[~mask] = (0, 0, 254)
            _save(root / "jpg" / f"image_{i:05d}.jpg", image)
            _save(root / "segmim" / f"segmim_{i:05d}.jpg", segmim)


def _write_labelled(root: Path, n: int = 4, seed: int = 0, part: bool = True) -> None:
    """``n`` pairs of a labelled folder: images/*.jpg + masks/*.png of class indices (0 background, 1 object,
    2 a band across the object when ``part``)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = _photo(rng, int(rng.integers(40, 70)), int(rng.integers(40, 70)))
        labels = mask.astype(np.uint8)
        if part:
            labels[: labels.shape[0] // 2][mask[: labels.shape[0] // 2]] = 2
        _save(root / "images" / f"{i:03d}.jpg", image)
        _save(root / "masks" / f"{i:03d}.png", labels)


@pytest.fixture(scope="session")
def write_labelled():
    """Writes a tiny labelled folder: ``write_labelled(root, n, seed, part)``."""
    return _write_labelled


@pytest.fixture(scope="session")
def write_benchmark():
    """Writes tiny image/mask folders in a benchmark's released layout: ``write_benchmark(name, root, n, seed)``."""
    return _write_benchmark


@pytest.fixture
def noisy_stylegan2() -> StyleGAN2:
    """A tiny StyleGAN2 in eval mode whose per-pixel noise visibly moves every image (noise strength 0.5)."""
    torch.manual_seed(0)
    G = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("scale_factors"):
                p.fill_(0.5)
    G.estimate_latent_avg(64)
    return G.eval()


class ToyGenerator(Generator):
    """16 px images of a disc on a background; z0 darkens the background and lightens the disc,
    z1 adds a stripe texture (not a recolouring), z2 and z3 set the base colours."""

    dim_z, resolution = 4, 16

    def __init__(self) -> None:
        super().__init__()
        self.config = {}
        self.anchor = nn.Parameter(torch.zeros(1))
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        self.register_buffer("disc", (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 12).float())
        self.register_buffer("stripes", torch.sin(xx * 1.7))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        colour = torch.stack([torch.tanh(z[:, 2]), torch.tanh(z[:, 3]), torch.tanh(z[:, 2] - z[:, 3])], 1) * 0.3
        base = colour[:, :, None, None] * (1 - self.disc) + 0.2 * self.disc
        light = 0.1 * z[:, 0, None, None, None] * (2 * self.disc - 1)
        texture = 0.1 * z[:, 1, None, None, None] * self.stripes
        return (base + light + texture).clamp(-1, 1) + 0 * self.anchor


@pytest.fixture
def toy_generator() -> ToyGenerator:
    """A 16 px generator with a known background direction (z0), a texture (z1) and base colours (z2, z3)."""
    return ToyGenerator()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by its WebDriver (installed by scripts/ensure_browser.sh), console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are not installed: bash scripts/ensure_browser.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()
