"""helpers.core.runs: resume checks, log truncation, settings records and tags."""

import json
import math
import time
from dataclasses import dataclass

import pytest

from helpers.core.runs import RunFolder, claim_record, deadline, settings_tag


def _run_with_checkpoint(tmp_path, step=4, config=None):
    run = RunFolder(tmp_path / "run", resumable={"steps"})
    with run.log() as log:
        for s in range(1, 7):
            log({"step": s, "loss": 1.0 / s})
    run.save({"config": config or {"lr": 0.1, "steps": 10}, "step": step, "method": "a"})
    return run


def test_resume_drops_log_rows_after_the_checkpoint(tmp_path):
    run = _run_with_checkpoint(tmp_path)
    state = run.resume({"lr": 0.1, "steps": 10})
    assert state["step"] == 4
    assert [row["step"] for row in run.read_log()] == [1, 2, 3, 4]


def test_resume_accepts_changed_resumable_settings_only(tmp_path):
    run = _run_with_checkpoint(tmp_path)
    assert run.resume({"lr": 0.1, "steps": 50})["step"] == 4
    with pytest.raises(ValueError, match="different configuration") as err:
        run.resume({"lr": 0.2, "steps": 10})
    assert str(run.checkpoint_path) in str(err.value) and "'lr': 0.2" in str(err.value)


def test_resume_refuses_other_expected_entries_with_the_callers_words(tmp_path):
    run = _run_with_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"written by another run \(a\); use a new run folder\."):
        run.resume(
            {"lr": 0.1, "steps": 10},
            clash=lambda s: f"was written by another run ({s['method']})",
            remedy="",
            expect={"method": "b"},
        )
    assert len(run.read_log()) == 6  # a refused resume leaves the log alone


def test_log_rows_are_flushed_as_written(tmp_path):
    run = RunFolder(tmp_path / "new")
    assert run.read_log() == [] and not run.has_checkpoint()
    with run.log() as log:
        log({"step": 1})
        assert json.loads(run.log_path.read_text()) == {"step": 1}


def test_claim_record_writes_accepts_equal_and_refuses_other(tmp_path):
    run = RunFolder(tmp_path)
    path = run.claim_record("settings.json", {"sizes": (1, 2)}, "a run of other settings")
    assert json.loads(path.read_text()) == {"sizes": [1, 2]}
    assert run.claim_record("settings.json", {"sizes": [1, 2]}, "a run of other settings") == path
    with pytest.raises(ValueError, match="holds a run of other settings .*use a new run folder"):
        run.claim_record("settings.json", {"sizes": [1, 3]}, "a run of other settings")
    claim_record(tmp_path / "n.json", 1, str)
    with pytest.raises(ValueError, match="found 1"):
        claim_record(tmp_path / "n.json", 2, lambda found: f"found {found}")


def test_settings_tag_and_deadline():
    @dataclass
    class Config:
        lr: float = 0.1

    assert settings_tag(Config()) == settings_tag({"lr": 0.1}) != settings_tag(Config(lr=0.2))
    assert deadline(None) == math.inf and 59 < deadline(1) - time.monotonic() <= 60


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_a_damaged_checkpoint_is_named(tmp_path, content):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.checkpoint_path.write_bytes(content)
    with pytest.raises(ValueError, match=r"run/checkpoint\.pt cannot be read .* damaged: delete it"):
        run.resume({"lr": 0.1})
