import json
from pathlib import Path

import numpy as np
import pytest

from helpers.preflight import PlannedRun, check


@pytest.fixture
def folders(tmp_path, monkeypatch) -> Path:
    for folder in ("weights", "embeddings", "datasets"):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(f"GANSEG_{folder.upper()}_DIR", str(tmp_path / folder))
    return tmp_path


def planned(name: str, **given) -> PlannedRun:
    return PlannedRun(name, Path(f"{name}.ipynb"), None, given, {"PROCEDURAL_SPLIT": True})


def test_a_hand_placed_asset_is_verified_and_recorded(folders):
    np.save(folders / "embeddings" / "BigBiGAN_CUB_train_z.npy", np.zeros((4, 120), np.float32))
    result = check([planned("a", EMBEDDINGS=str(folders / "embeddings" / "BigBiGAN_CUB_train_z.npy"))])
    (need,) = result.needs
    assert result.ok and need.state == "verified" and need.label == "asset embeddings-cub"
    assert "float32 array (4, 120)" in need.detail
    lock = json.loads((folders / "embeddings" / "assets.lock.json").read_text())["files"]
    assert lock["BigBiGAN_CUB_train_z.npy"]["asset"] == "embeddings-cub"


def test_a_malformed_asset_is_invalid_and_stops_the_run(folders):
    np.save(folders / "embeddings" / "BigBiGAN_CUB_train_z.npy", np.zeros((4, 60), np.float32))
    result = check([planned("a", EMBEDDINGS=str(folders / "embeddings" / "BigBiGAN_CUB_train_z.npy"))])
    assert not result.ok and result.needs[0].state == "invalid"
    assert "[INVALID] asset embeddings-cub" in result.report() and "shape [N, 120]" in result.report()


def test_missing_benchmarks_are_dropped_and_a_run_left_without_any_is_skipped(folders, write_benchmark):
    write_benchmark("ECSSD", folders / "datasets" / "ECSSD")
    both = f"ECSSD: {folders / 'datasets' / 'ECSSD'}; DUTS-TE: {folders / 'datasets' / 'DUTS-TE'}"
    lost = f"CUB-200-2011: {folders / 'datasets' / 'CUB'}"
    embeddings = str(folders / "embeddings" / "BigBiGAN_CUB_train_z.npy")  # missing, but only the skipped run uses it
    runs = [
        planned("saliency", BENCHMARKS=both, PROCEDURAL_SPLIT=False),
        planned("cub", BENCHMARKS=lost, PROCEDURAL_SPLIT=False, EMBEDDINGS=embeddings),
    ]
    result = check(runs)
    assert result.ok
    assert (
        result.runs[0].given["BENCHMARKS"] == f"ECSSD: {folders / 'datasets' / 'ECSSD'}" and not result.runs[0].skipped
    )
    assert result.runs[1].skipped == "none of its benchmark folders exists"
    report = result.report()
    assert "[     ok] benchmark ECSSD" in report and "3 image/mask pairs" in report
    assert "[   SKIP] benchmark DUTS-TE" in report and "[ unused] asset embeddings-cub" in report
    assert "Folders that will be left out (missing): DUTS-TE, CUB-200-2011" in report
    assert "saliencydetection.net/duts/" in report  # the step that gets the missing benchmark
    # with the procedural split on, a run still has something to score
    assert not check([planned("p", BENCHMARKS=lost)]).runs[0].skipped


def test_a_benchmark_folder_that_does_not_pair_up_is_an_error(folders, write_benchmark):
    root = folders / "datasets" / "ECSSD"
    write_benchmark("ECSSD", root)
    (root / "ground_truth_mask" / "0002.png").unlink()
    result = check([planned("a", BENCHMARKS=f"ECSSD: {root}")])
    assert not result.ok and "[INVALID] benchmark ECSSD" in result.report() and "have no mask" in result.report()


def test_files_that_are_not_assets_only_have_to_exist(folders):
    result = check([planned("a", ANNOTATIONS=str(folders / "annotations"), GENERATOR="default-biggan")])
    report = result.report()
    assert (
        not result.ok and "[MISSING] annotation store" in report and "in notebook 05 with INTERACTIVE = True" in report
    )
    assert "[MISSING] generator file" in report and "git checkout" in report
    (folders / "annotations").mkdir()
    (folders / "annotations" / "store.json").write_text("{}")
    (folders / "weights" / "default_biggan.pt").write_bytes(b"x")
    assert check([planned("a", ANNOTATIONS=str(folders / "annotations"), GENERATOR="default-biggan")]).ok


def test_missing_labelled_folders_are_left_out_and_a_run_without_data_is_skipped(folders, write_labelled):
    present, absent = folders / "datasets" / "labelled", str(folders / "datasets" / "nowhere")
    write_labelled(present, n=3)
    runs = [
        planned("projection", PROCEDURAL_SPLIT=False, TEST_FOLDER=absent),
        planned("fewshot", PROCEDURAL_SPLIT=False, TRAIN_FOLDER=str(present), TEST_FOLDER=absent),
        planned("both", PROCEDURAL_SPLIT=False, TRAIN_FOLDER=str(present), TEST_FOLDER=str(present)),
    ]
    result = check(runs)
    assert result.ok
    projection, fewshot, both = result.runs
    assert projection.given["TEST_FOLDER"] == "" and not projection.skipped  # it still trains
    assert fewshot.given["TRAIN_FOLDER"] == fewshot.given["TEST_FOLDER"] == ""  # useless without its test folder
    assert fewshot.skipped == "its labelled folders do not both exist"
    assert both.given["TRAIN_FOLDER"] == str(present) and not both.skipped
    report = result.report()
    assert "[     ok] labelled folder TRAIN_FOLDER" in report and "3 image/mask pairs" in report
    assert (
        "[   SKIP] labelled folder TEST_FOLDER" in report and "docs/semantic_projection.md#labelled-folders" in report
    )
    (present / "masks" / "000.png").unlink()
    assert not check(runs[2:]).ok  # a folder that does not pair up is an error
