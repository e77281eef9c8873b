"""The `paper` profile in miniature: released-format files with random weights (BigBiGAN at full size, a small
SAIC-format StyleGAN2 under the FFHQ name), an annotation store for it, tiny folders in the five benchmarks'
on-disk layouts and two labelled folders, and ``--profile paper --smoke`` through the runner."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data.folders import open_benchmark
from helpers.direction_masks.direction_files import save_direction
from helpers.gans.biggan import BigGAN
from helpers.gans.stylegan2 import StyleGAN2
from helpers.profiles import load_profile
from helpers.runner import main
from helpers.semantic_projection.annotations import AnnotationStore

BENCHMARK_FOLDERS = {  # the paper profile's folder under {datasets} for each benchmark
    "ECSSD": "ECSSD",
    "DUTS-TE": "DUTS-TE",
    "DUT-OMRON": "DUT-OMRON",
    "CUB-200-2011": "CUB_200_2011",
    "Flowers-102": "Flowers-102",
}
EMBEDDINGS = ["BigBiGAN_ImageNet_z.npy", "BigBiGAN_CUB_train_z.npy", "BigBiGAN_Flowers_train_z.npy"]


@pytest.fixture(scope="module")
def released(tmp_path_factory, write_benchmark, write_labelled) -> Path:
    """weights/, embeddings/, datasets/ and annotations/ as a researcher has them after download_all.sh, the
    benchmarks, a labelled folder and annotating."""
    root = tmp_path_factory.mktemp("released")
    torch.manual_seed(0)
    (root / "weights").mkdir()
    torch.save(BigGAN.bigbigan().state_dict(), root / "weights" / "BigBiGAN_x1.pth")  # the 166-key layout
    # random weights: a direction whose masks pass the reference filters about half the time keeps the run short
    direction = torch.randn(120, generator=torch.Generator().manual_seed(1))
    save_direction(root / "weights" / "bg_direction.pth", torch.nn.functional.normalize(direction, dim=0))
    (root / "embeddings").mkdir()
    for k, name in enumerate(EMBEDDINGS):
        np.save(root / "embeddings" / name, np.random.default_rng(k).normal(size=(32, 120)).astype(np.float32))
    for k, (name, folder) in enumerate(BENCHMARK_FOLDERS.items()):
        write_benchmark(name, root / "datasets" / folder, seed=k)
    stylegan = StyleGAN2(32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16)
    stylegan.latent_avg.zero_()  # a released file carries its mean w
    torch.save(stylegan.saic_checkpoint(), root / "weights" / "ffhq.tar")  # SAIC's {'netGA', 'latent_avg'}
    store = AnnotationStore.create(
        root / "annotations" / "stylegan2-ffhq", root / "weights" / "ffhq.tar", "multiclass", ["background", "hair"]
    )
    mask = np.full((32, 32), 255, np.uint8)  # a person's strokes: the rest stays unlabelled
    mask[:, :10], mask[8:24, 16:28] = 0, 1
    rng = np.random.default_rng(0)
    for seed in range(3):
        store.save(mask, rng.standard_normal(16).astype(np.float32), noise_seed=seed, truncation=0.5)
    write_labelled(root / "datasets" / "hair" / "train", n=6, part=False)
    write_labelled(root / "datasets" / "hair" / "test", n=4, seed=1, part=False)
    return root


@pytest.fixture
def in_place(released, monkeypatch) -> Path:
    for folder in ("weights", "embeddings", "datasets", "annotations"):
        monkeypatch.setenv(f"GANSEG_{folder.upper()}_DIR", str(released / folder))
    return released


def test_the_fake_benchmarks_open_in_their_layouts(released):
    for name, folder in BENCHMARK_FOLDERS.items():
        dataset = open_benchmark(name, released / "datasets" / folder)
        assert len(dataset) == 3 and 0.05 < dataset[0].mask.mean() < 0.5, name


def test_the_profile_gives_every_benchmark_a_reference_row():
    profile = load_profile("paper")
    assert set(profile.reference_scores) == set(BENCHMARK_FOLDERS)
    assert profile.variants("04_unsupervised_segmentation") == ["saliency", "cub", "flowers"]


def test_check_without_the_files_lists_each_step_and_fails(tmp_path, monkeypatch, capsys):
    for folder in ("weights", "embeddings", "datasets", "annotations"):
        monkeypatch.setenv(f"GANSEG_{folder.upper()}_DIR", str(tmp_path / folder))
    assert main(["--profile", "paper", "--check", "--results", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    for step in ("download_all.sh --only bigbigan", "download_all.sh --only bg-direction"):
        assert step in out
    for name, folder in BENCHMARK_FOLDERS.items():
        assert f"[   SKIP] benchmark {name}: {tmp_path / 'datasets' / folder}" in out
    assert "Run 04_unsupervised_segmentation@cub will be skipped" in out and not (tmp_path / "r").exists()
    assert "[MISSING] asset stylegan2-ffhq" in out and "Google Drive only" in out
    assert f"[MISSING] annotation store: {tmp_path / 'annotations' / 'stylegan2-ffhq'}" in out
    assert "annotating-a-released-generator" in out
    assert f"[   SKIP] labelled folder TRAIN_FOLDER: {tmp_path / 'datasets' / 'hair' / 'train'}" in out
    assert "Run 06_layermatch will be skipped: its labelled folders do not both exist" in out
    assert "Run 07_inspection@cub will be skipped: its dataset folder does not exist" in out


def test_check_with_the_files_in_place_verifies_them(in_place, tmp_path, capsys):
    assert main(["--profile", "paper", "--check", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "[     ok] asset bigbigan" in out and "BigGAN 128 px, ch 96, dim_z 120, 166 keys" in out
    assert "[     ok] benchmark CUB-200-2011" in out and "3 image/mask pairs" in out
    assert "[     ok] asset stylegan2-ffhq" in out and "SAIC StyleGAN2 32 px, not the released 1024 px" in out
    assert "[     ok] annotation store" in out and "[     ok] labelled folder TRAIN_FOLDER" in out
    assert "skipped" not in out


@pytest.mark.notebooks
def test_paper_profile_smoke_run_scores_every_benchmark(in_place, tmp_path):
    results = tmp_path / "results"
    assert main(["--profile", "paper", "--smoke", "--device", "cpu", "--results", str(results)]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert [n["run"] for n in summary["notebooks"]] == [
        "03_direction_finding",
        "04_unsupervised_segmentation@saliency",
        "04_unsupervised_segmentation@cub",
        "04_unsupervised_segmentation@flowers",
        "05_semantic_projection",
        "06_layermatch",
        "07_inspection@saliency",
        "07_inspection@cub",
        "07_inspection@flowers",
    ]
    assert all(n["status"] == "passed" for n in summary["notebooks"])
    rows = {row["benchmark"]: row for row in summary["benchmarks"]}
    assert set(rows) == set(BENCHMARK_FOLDERS)
    for name, row in rows.items():
        assert row["status"] == "scored" and 0 <= row["iou"] <= 1 and 0 <= row["f_max"] <= 1, name
        assert row["reference"] == load_profile("paper").reference_scores[name]
    assert rows["CUB-200-2011"]["run"] == "04_unsupervised_segmentation@cub"
    ranking = json.loads((results / "03_direction_finding" / "ranking.json").read_text())
    assert ranking["chosen"]["name"] == "given bg_direction.pth" and ranking["generator"] == "bigbigan"
    ran_with = json.loads((results / "04_unsupervised_segmentation@cub" / "parameters.json").read_text())
    assert ran_with["EMBEDDINGS"] == str(in_place / "embeddings" / "BigBiGAN_CUB_train_z.npy")
    assert ran_with["UNET_WIDTH"] == 4 and ran_with["Z_NOISE"] == 0.2 and ran_with["PREGENERATED"] == 0
    markdown = (results / "summary.md").read_text()
    assert "| ECSSD | 04_unsupervised_segmentation@saliency | scored |" in markdown and "| 0.684 |" in markdown
    projection = json.loads((results / "05_semantic_projection" / "metrics.json").read_text())
    assert set(projection["test_folder"]["class_iou"]) == {"background", "hair"}
    assert "procedural_test" not in projection and [p["k"] for p in projection["curve"]] == [1, 2]
    assert projection["annotations"]["n"] == 3 and projection["refiner"] is None  # the decoder's own masks
    fewshot = json.loads((results / "06_layermatch" / "metrics.json").read_text())
    assert fewshot["n_test_images"] == 4 and fewshot["synthetic_shards"] == projection["synthetic_shards"]
    inspected = json.loads((results / "07_inspection@cub" / "metrics.json").read_text())
    assert inspected["dataset"] == "CUB-200-2011" and inspected["architecture"] == "U-Net, width 4, 2 classes"
    assert inspected["model"].startswith(str(results / "04_unsupervised_segmentation@cub"))
    report = json.loads((results / "report.json").read_text())
    cub_rows = {r["label"]: r for run in report["runs"] for r in run["rows"] if run["run"].endswith("@cub")}
    assert cub_rows["CUB-200-2011 IoU"]["goal"] == 0.710 and cub_rows["CUB-200-2011 IoU"]["source"] == "paper"
