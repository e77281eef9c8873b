"""The committed notebooks: conventions (stripped, literal parameters cell) and a smoke run of all of them."""

import ast
import json
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

from helpers.core.parameters import declared_parameters
from helpers.core.paths import notebooks_dir
from helpers.direction_masks.direction_files import load_direction, save_direction
from helpers.profiles import available, load_profile, smoke_parameters
from helpers.runner import list_notebooks, run_all

TRAINING_NOTEBOOK = notebooks_dir() / "training" / "train_default_gans.ipynb"  # makes weights/, not in the run
NOTEBOOKS = [*list_notebooks(), TRAINING_NOTEBOOK]
NOTEBOOKS_BY_NAME = {p.name: p for p in NOTEBOOKS}
REQUIRED_PARAMETERS = {"SMOKE", "DEVICE", "SEED", "OUT_DIR"}


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS[0].name.startswith("00_") and TRAINING_NOTEBOOK.exists()
    assert len({p.name[:2] for p in list_notebooks()}) == len(list_notebooks()), "two notebooks share a number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    dirty = [i for i, c in enumerate(_code_cells(path)) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_a_literal_parameters_cell(path):
    cell = _code_cells(path)[0]
    assert "parameters" in cell.metadata.get("tags", []), f"{path.name}: first code cell is not tagged 'parameters'"
    names = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"{path.name}: only simple assignments allowed"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises if not a literal
    assert REQUIRED_PARAMETERS <= set(names), f"{path.name}: missing {REQUIRED_PARAMETERS - set(names)}"
    assert names["DEVICE"] == "auto" and names["SMOKE"] is False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """papermill's own parser must understand each line (e.g. a '=' inside a comment confuses it)."""
    names = {n.targets[0].id for n in ast.parse(_code_cells(path)[0].source).body}
    assert set(papermill.inspect_notebook(str(path))) == names


@pytest.mark.parametrize("name", available())
def test_every_profile_names_existing_notebooks_and_parameters(name):
    load_profile(name).check({p.stem: set(declared_parameters(p)) for p in NOTEBOOKS})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, run_all(results, smoke=True, device="cpu", timeout=600, notebooks=NOTEBOOKS)


@pytest.mark.notebooks
def test_smoke_run_passes_every_notebook(smoke_run):
    results, runs = smoke_run
    assert [r.notebook for r in runs] == [p.name for p in NOTEBOOKS]
    summary = json.loads((results / "summary.json").read_text())
    assert all(n["status"] == "passed" for n in summary["notebooks"])


@pytest.mark.notebooks
def test_embedded_domain_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "00_embedded_domain"
    for name in ["domain_grid.png", "resolutions.png", "class_balance.png", "object_area.png", "colour_baseline.png"]:
        assert (out / name).stat().st_size > 1000, name
    metrics = json.loads((out / "metrics.json").read_text())
    params = smoke_parameters()
    assert metrics["split_sizes"] == {"train": params["N_TRAIN"], "val": params["N_VAL"], "test": params["N_TEST"]}
    assert abs(sum(metrics["pixel_fraction"]["train"].values()) - 1) < 1e-6
    assert 0 <= metrics["colour_baseline_iou"] < 0.5 and metrics["render_images_per_s"] > 0


@pytest.mark.notebooks
def test_training_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "train_default_gans"
    metrics = json.loads((out / "metrics.json").read_text())
    params = smoke_parameters()
    assert metrics["steps"] == {"biggan": params["BIGGAN_STEPS"], "stylegan2": params["STYLEGAN2_STEPS"]}
    assert set(metrics["swd_x1e3"]) >= {"real vs real", "biggan", "stylegan2", "biggan (random init)"}
    manifest = json.loads((out / "weights" / "MANIFEST.json").read_text())["files"]
    assert set(manifest) == {"default_biggan.pt", "default_stylegan2.pt", "default_biggan_encoder.pt"}
    for name in ["samples_biggan.png", "samples_stylegan2.png", "swd.png", "encoder_reconstructions.png"]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_weight_conversion_notebook_outputs(smoke_run):
    results, _ = smoke_run
    metrics = json.loads((results / "01_weight_conversion" / "metrics.json").read_text())
    assert metrics["keys"] == 166
    assert set(metrics["max_abs_diff"]) >= {
        "first_linear",
        "conv",
        "conditional_bn",
        "attention",
        "output_layer",
        "end_to_end",
    }
    assert max(metrics["max_abs_diff"].values()) < 1e-4
    assert metrics["stylegan2_round_trip_image_diff"] < 1e-5


@pytest.mark.notebooks
def test_embedding_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "02_embedding_extraction"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_encoded"] == metrics["n_images"] == smoke_parameters()["N_IMAGES"]
    assert metrics["n_unreadable"] == 0 and metrics["dim_z"] == 60
    import numpy as np

    codes = np.load(out / "procedural_test.npy")
    assert codes.shape == (metrics["n_encoded"], 60) and np.isfinite(codes).all()
    assert (out / "reconstructions.png").stat().st_size > 1000


@pytest.mark.notebooks
def test_direction_finding_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "03_direction_finding"
    params = smoke_parameters()
    ranking = json.loads((out / "ranking.json").read_text())
    assert len(ranking["ranking"]) == params["N_DIRECTIONS"] + params["PCA_COMPONENTS"]
    assert ranking["chosen"] == ranking["ranking"][0] and ranking["chosen"]["sign"] in (-1.0, 1.0)
    assert ranking["rank_by"] == "consistency" and 0 <= ranking["chosen"]["consistency"] <= 1
    from helpers.direction_masks.direction_files import load_direction

    assert load_direction(out / "bg_direction.pth", 64).norm().item() == pytest.approx(1.0, abs=1e-5)
    assert len(list(out.glob("strip_*.png"))) == params["TOP_K"]
    for name in ["discovery_losses.png", "direction_scores.png"]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_unsupervised_segmentation_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "04_unsupervised_segmentation"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["procedural_test"]) == {"unsupervised (synthetic masks)", "supervised (upper bound)"}
    assert metrics["final"] == "unsupervised (synthetic masks)"
    ran_with = json.loads((out / "parameters.json").read_text())
    assert ran_with["MAX_BORDER"] == 0.5 and ran_with["N_TEST"] == smoke_parameters()["N_TEST"]
    for scores in metrics["procedural_test"].values():
        assert scores["n_images"] == smoke_parameters()["N_TEST"] and 0 <= scores["iou"] <= 1
    assert 0 < metrics["synthetic_kept_fraction"] <= 1
    assert (ran_with["GENERATOR"], ran_with["SHIFT_SPACE"], ran_with["REFINE_MASKS"]) == (
        "default-stylegan2",
        "w:64",
        "grabcut",
    )
    for name in ["synthetic_pairs.png", "scores.png", "test_overlays.png", "losses_unsupervised.png"]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_semantic_projection_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "05_semantic_projection"
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["procedural_test"]
    assert test["binary"]["n_images"] == smoke_parameters()["N_TEST"] and 0 <= test["binary"]["iou"] <= 1
    assert set(test["class_iou"]) == {"background", "object", "part"}
    assert all(0 <= v <= 1 for v in test["class_iou"].values())
    assert metrics["annotations"]["n"] == 20
    assert sum(metrics["annotations"]["label_fractions"].values()) == pytest.approx(1)
    counts = declared_parameters(notebooks_dir() / "05_semantic_projection.ipynb")["CURVE_COUNTS"]
    assert [c["k"] for c in metrics["curve"]] == [int(k) for k in counts.split(",")]  # the default curve, k <= 20
    assert all(0 <= c["binary_iou"] <= 1 and 0 <= c["part_iou"] <= 1 for c in metrics["curve"])
    assert metrics["simulated_annotator_val"]["binary_iou"] > 0.5
    assert metrics["refiner"]["folds"] == 4
    assert metrics["test_grabcut"] == {"sure_foreground": 0.9, "sure_background": 0.01, "iterations": 5}
    protocols = [
        "procedural_test",
        "procedural_test_single_view",
        "procedural_test_without_grabcut",
        "procedural_test_single_view_without_grabcut",
    ]
    scored = [metrics[key] for key in protocols]  # the configured protocol, then each step left out
    assert all(s["binary"]["n_images"] == test["binary"]["n_images"] for s in scored)
    # the re-fit turns soft maps into hard masks, and one view scores differently from eight (with smoke-size
    # models the two re-fitted protocols can coincide: masks of everything, which GrabCut leaves alone)
    assert scored[0] != scored[2] and scored[1] != scored[3] and scored[2] != scored[3]
    assert all(0 <= c["binary_iou_without_grabcut"] <= 1 for c in metrics["curve"])
    assert (
        len(
            list((out / "unets").glob(f"{Path(metrics['synthetic_shards']).name}_s{smoke_parameters()['SEG_STEPS']}_*"))
        )
        == 1
    )
    assert len(list((out / "refiners").glob("k20_*/refiner/member_*"))) == 3  # the main run's ensemble
    manifest = json.loads((Path(metrics["synthetic_shards"]) / "manifest.json").read_text())
    assert manifest["attrs"]["refiner"] == metrics["refiner"]["fingerprint"]  # the pairs carry the refiner's masks
    for name in [
        "annotations.png",
        "decoder_predictions.png",
        "synthetic_pairs.png",
        "losses_unet.png",
        "procedural_test_overlays.png",
        "iou_vs_annotations.png",
    ]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_notebook_05_runs_the_papers_pipeline_without_refiner(tmp_path):
    """The reference-pipelines profile: REFINER_STEPS = 0, plain cross-entropy, no augmentation, single-view scores
    of the U-Net's own masks: the synthetic masks are the decoder's arg-max and the U-Net is trained and scored as
    in the paper."""
    from helpers.profiles import notebook_parameters
    from helpers.runner import run_notebook

    profile = load_profile("reference-pipelines")
    params = {
        **notebook_parameters("05_semantic_projection", profile, smoke=True),
        "DEVICE": "cpu",
        "INTERACTIVE": False,
        "CURVE_COUNTS": "2",
    }
    run = run_notebook(NOTEBOOKS_BY_NAME["05_semantic_projection.ipynb"], tmp_path, params, timeout=600)
    assert run.status == "passed", run.error
    assert run.metrics["refiner"] is None and run.parameters["CLASS_WEIGHT_POWER"] == 0.0
    assert run.parameters["UNET_AUGMENT"] == "none" and run.parameters["SEG_STEPS"] == smoke_parameters()["SEG_STEPS"]
    assert run.metrics["test_grabcut"] is None and not any(k.startswith("procedural_test_") for k in run.metrics)
    assert "binary_iou_without_grabcut" not in run.metrics["curve"][0]
    assert [c["k"] for c in run.metrics["curve"]] == [2]
    manifest = json.loads((Path(run.metrics["synthetic_shards"]) / "manifest.json").read_text())
    assert "refiner" not in manifest["attrs"]
    assert not (tmp_path / "05_semantic_projection" / "refiners").exists()


@pytest.mark.notebooks
def test_layermatch_notebook_outputs(smoke_run):
    results, _ = smoke_run
    out = results / "06_layermatch"
    metrics = json.loads((out / "metrics.json").read_text())
    params = smoke_parameters()
    ks = [str(k) for k in params["K_VALUES"]]
    assert metrics["arms"] == ["random", "layermatch", "autoencoder", "layermatch + synthetic"]  # notebook 05's shards
    for arm in metrics["arms"]:
        assert list(metrics["iou"][arm]) == ks
        for cell in metrics["iou"][arm].values():
            assert cell["n"] == len(params["SEEDS"]) and 0 <= cell["mean"] <= 1 and cell["std"] >= 0
    assert len(metrics["runs"]) == len(metrics["arms"]) * len(ks) * len(params["SEEDS"])
    assert all(r["n_images"] == params["EVAL_IMAGES"] for r in metrics["runs"])
    assert set(metrics["layermatch_minus_random_iou"]) == set(ks) and isinstance(metrics["target_met"], bool)
    for name in ["iou_vs_k.png", "losses_layermatch.png", "losses_autoencoder.png", "test_overlays.png"]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_inspection_notebook_outputs(smoke_run):
    """Notebook 07 inspects notebook 04's final model on the procedural test split, per image and per attribute."""
    results, _ = smoke_run
    out = results / "07_inspection"
    metrics = json.loads((out / "metrics.json").read_text())
    final = json.loads((results / "04_unsupervised_segmentation" / "metrics.json").read_text())
    assert metrics["model"] == str(Path(final["final_model"]) / "checkpoint.pt")
    assert metrics["dataset"] == "procedural test" and metrics["n_images"] == smoke_parameters()["N_TEST"]
    # the same model and images as notebook 04's own evaluation, so the same scores
    assert metrics["scores"]["iou"] == pytest.approx(final["procedural_test"][final["final"]]["iou"], abs=1e-4)
    assert set(metrics["by_attribute"]) == {"background", "shape"}
    assert sum(r["n"] for r in metrics["by_attribute"]["shape"].values()) == metrics["n_images"]
    assert metrics["worst"][0]["iou"] <= metrics["best"][0]["iou"]
    assert metrics["synthetic_shards"] == str(results / "04_unsupervised_segmentation" / "shards")  # PREGENERATED
    for name in [
        "synthetic_pairs.png",
        "iou_histogram.png",
        "worst_cases.png",
        "best_cases.png",
        "iou_by_attribute.png",
    ]:
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.notebooks
def test_the_smoke_runs_report_holds_each_notebooks_numbers(smoke_run, browser):
    results, runs = smoke_run
    report = json.loads((results / "report.json").read_text())
    markdown = (results / "report.md").read_text()
    assert [r["run"] for r in report["runs"]] == [r.run for r in runs]
    assert "[report.html](report.html)" in (results / "summary.md").read_text()
    rows = {run["run"]: {row["label"]: row["value"] for row in run["rows"]} for run in report["runs"]}
    direction = json.loads((results / "04_unsupervised_segmentation" / "metrics.json").read_text())
    final = direction["procedural_test"][direction["final"]]["iou"]
    assert rows["04_unsupervised_segmentation"][f"procedural test IoU, {direction['final']}"] == final
    projection = json.loads((results / "05_semantic_projection" / "metrics.json").read_text())
    assert (
        rows["05_semantic_projection"]["procedural_test foreground IoU"]
        == projection["procedural_test"]["binary"]["iou"]
    )
    fewshot = json.loads((results / "06_layermatch" / "metrics.json").read_text())
    for k, gain in fewshot["layermatch_minus_random_iou"].items():
        assert rows["06_layermatch"][f"LayerMatch − random IoU, k {k}"] == gain
        assert f"| LayerMatch − random IoU, k {k} | {gain:.4f} |" in markdown
    figures = sorted(results.glob("*/*.png"))
    browser.get((results / "report.html").as_uri())
    shown = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);")
    assert len(shown) == len(figures) and all(shown)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.mark.notebooks
def test_notebook_04_runs_a_self_training_round(smoke_run, tmp_path):
    """A U-Net of 30 steps is a teacher whose masks pass the reference filters (the 3-step smoke U-Net's do not)."""
    from helpers.runner import run_notebook

    results, _ = smoke_run
    shutil.copytree(results / "03_direction_finding", tmp_path / "03_direction_finding")
    params = {
        **smoke_parameters(),
        "DEVICE": "cpu",
        "INTERACTIVE": False,
        "SEG_STEPS": 30,
        "LR_STEP": 30,
        "MIN_CONSISTENCY": 0.0,
        "MAX_BORDER": 1.0,
        "SELF_TRAINING_ROUNDS": 1,
    }
    run = run_notebook(NOTEBOOKS_BY_NAME["04_unsupervised_segmentation.ipynb"], tmp_path, params, timeout=600)
    assert run.status == "passed", run.error
    assert run.metrics["final"] == "unsupervised + 1 self-training"
    assert set(run.metrics["procedural_test"]) == {
        "unsupervised (synthetic masks)",
        "unsupervised + 1 self-training",
        "supervised (upper bound)",
    }
    manifest = json.loads(
        (tmp_path / "04_unsupervised_segmentation" / "self_training_1" / "shards" / "manifest.json").read_text()
    )
    assert manifest["n_total"] == params["SELF_TRAINING_PAIRS"] and manifest["attrs"]["round"] == 1
    # the direction file replaced (e.g. by the explorer's save button): its pairs are not reused
    direction = tmp_path / "03_direction_finding" / "bg_direction.pth"
    save_direction(direction, -load_direction(direction))
    again = run_notebook(NOTEBOOKS_BY_NAME["04_unsupervised_segmentation.ipynb"], tmp_path, params, timeout=600)
    assert again.status == "failed" and "holds a different dataset" in again.error


def _benchmark_folder(root, images, masks):
    """Three procedural test images and their object masks in a benchmark's on-disk layout."""
    from PIL import Image

    from helpers.data.splits import ProceduralSplits, load_split

    pictures, labels = load_split(ProceduralSplits(64, 8, 4, 4, 0), "test", progress=False)
    for i in range(3):
        (root / images).mkdir(parents=True, exist_ok=True)
        (root / masks).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pictures[i]).save(root / images / f"{i:04d}.jpg")
        Image.fromarray(((labels[i] > 0) * 255).astype("uint8")).save(root / masks / f"{i:04d}.png")
    return root


@pytest.mark.notebooks
def test_the_papers_configuration_runs_through_notebooks_03_and_04(tmp_path):
    """BigGAN, shifts of z, the reference masks and no self-training: the papers' setting, one parameter set away."""
    from helpers.runner import run_notebook

    params = {
        **smoke_parameters(),
        "DEVICE": "cpu",
        "INTERACTIVE": False,
        "GENERATOR": "default-biggan",
        "SHIFT_SPACE": "z",
    }
    found = run_notebook(NOTEBOOKS_BY_NAME["03_direction_finding.ipynb"], tmp_path, params, timeout=600)
    used = run_notebook(
        NOTEBOOKS_BY_NAME["04_unsupervised_segmentation.ipynb"],
        tmp_path,
        {
            **params,
            "REFINE_MASKS": "none",
            "MIN_CONSISTENCY": 0.0,
            "MAX_BORDER": 1.0,
            "PREGENERATED": 0,
            "SELF_TRAINING_ROUNDS": 0,
            "PROCEDURAL_SPLIT": False,  # real data only: no upper bound, no procedural test
            "BENCHMARKS": f" ecssd : {_benchmark_folder(tmp_path / 'ECSSD', 'images', 'ground_truth_mask')};"
            f"DUT-OMRON:{_benchmark_folder(tmp_path / 'OMRON', 'DUT-OMRON-image', 'pixelwiseGT-new-PNG')}",
        },
        timeout=600,
    )
    assert found.status == used.status == "passed", (found.error, used.error)
    benchmarks = used.metrics["benchmarks"]  # canonical names; the one model scored on every image
    assert list(benchmarks) == ["ECSSD", "DUT-OMRON"]
    assert all(list(scores) == ["unsupervised (synthetic masks)"] for scores in benchmarks.values())
    assert all(s["n_images"] == 3 for scores in benchmarks.values() for s in scores.values())
    assert (
        used.metrics["procedural_test"] == {}
        and not (tmp_path / "04_unsupervised_segmentation" / "supervised").exists()
    )
    ranking = json.loads((tmp_path / "03_direction_finding" / "ranking.json").read_text())
    assert (ranking["generator"], ranking["shift_space"]) == ("default-biggan", "z")
    assert used.metrics["final"] == "unsupervised (synthetic masks)"
    assert not (tmp_path / "04_unsupervised_segmentation" / "shards").exists()  # trained on the fly
    clash = run_notebook(
        NOTEBOOKS_BY_NAME["04_unsupervised_segmentation.ipynb"],
        tmp_path,
        {**params, "GENERATOR": "default-stylegan2", "SHIFT_SPACE": "w:64"},
        timeout=600,
    )
    assert clash.status == "failed" and "generator 'default-biggan' (asked for 'default-stylegan2')" in clash.error


@pytest.mark.notebooks
def test_notebook_04_on_two_processes_matches_one(smoke_run, tmp_path, monkeypatch):
    """GPUS = 2 on a CPU: two gloo processes write the same shards, byte for byte, and train the same U-Net.
    Each process computes on two threads, as the one-process run did: the thread count changes the generator's
    float rounding, and a sample at a filter's threshold may then go the other way."""
    from helpers.runner import run_notebook

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    results, _ = smoke_run
    shutil.copytree(results / "03_direction_finding", tmp_path / "03_direction_finding")
    params = {**smoke_parameters(), "DEVICE": "cpu", "INTERACTIVE": False, "GPUS": 2}
    run = run_notebook(NOTEBOOKS_BY_NAME["04_unsupervised_segmentation.ipynb"], tmp_path, params, timeout=600)
    assert run.status == "passed", run.error
    one, two = results / "04_unsupervised_segmentation", tmp_path / "04_unsupervised_segmentation"
    shards = sorted(p.name for p in (one / "shards").glob("shard_*.h5"))
    assert shards == sorted(p.name for p in (two / "shards").glob("shard_*.h5")) and shards
    assert all((one / "shards" / n).read_bytes() == (two / "shards" / n).read_bytes() for n in shards)
    assert (two / "jobs" / "job.pt").exists()
    reference = json.loads((one / "metrics.json").read_text())["procedural_test"]
    for model, scores in run.metrics["procedural_test"].items():
        assert abs(scores["iou"] - reference[model]["iou"]) < 0.01, model
