"""helpers.core.distributed: jobs on two gloo processes (CPU) give what one process gives, and resume after a kill."""

import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.core import distributed
from helpers.direction_masks.synthesis import MaskSynthesizer
from helpers.gans import load
from helpers.segmentation import ArrayBatches, SegmentationSettings, SegmentationTrainer, UNet
from helpers.segmentation.shards import shard_path
from helpers.segmentation.train import train_job
from helpers.semantic_projection.dataset import generate_dataset
from helpers.semantic_projection.decoder import build_decoder


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_sharded_generation_matches_one_process_and_redoes_only_missing_shards(tmp_path):
    G = load("default-stylegan2")
    torch.manual_seed(0)
    decoder = build_decoder(G, width=8)
    kwargs = dict(n_total=7, shard_size=2, batch_size=2, seed=3, progress=False)
    one = generate_dataset(G, decoder, tmp_path / "one", **kwargs)
    two = tmp_path / "two"
    job = functools.partial(generate_dataset, G, decoder, two, **kwargs)
    distributed.launch(job, 2, tmp_path / "job")
    assert _files(two) == _files(one) and len(_files(one)) == 5  # manifest + 4 shards, byte for byte
    # a rerun after a crash writes only the missing shard
    shard_path(two, 2).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in two.iterdir()}
    distributed.launch(job, 2, tmp_path / "job")
    after = {p.name: p.stat().st_mtime_ns for p in two.iterdir()}
    assert {name for name in after if after[name] != before.get(name)} == {"shard_00002.h5"}
    assert _files(two) == _files(one)


def _unet_job(tmp_path, steps, name, batch_size=6):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (12, 32, 32)).astype(np.uint8)
    labels[:, :8] = 255  # unlabelled rows: the loss is normalised by the global batch's labelled pixels
    settings = SegmentationSettings(
        steps=steps, lr_step=5, checkpoint_every=3, log_every=2, seed=1, amp="off", ignore_index=255
    )
    torch.manual_seed(0)
    model = UNet(n_classes=3, width=4)
    source = ArrayBatches(images, labels, batch_size=batch_size, seed=0, augment="dihedral")
    return functools.partial(train_job, tmp_path / name, model, settings, source, progress=False)


def _assert_same_model(a, b):
    """The same outputs, up to float rounding. (Not the same weights to float precision: Adam turns the rounding
    noise of near-zero gradients, such as those of the biases before each batch norm, into updates of about lr.)"""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=5e-3)


def _trainer(folder, job):
    return SegmentationTrainer(folder, UNet(n_classes=3, width=4), job.args[2])


def test_ddp_training_takes_the_steps_of_one_process(tmp_path):
    # the first step's gradients, as Adam's first moments (0.1 x gradient): equal, with batch norm synchronised and
    # the loss normalised by the global batch's labelled pixels
    # (the one-process runs are torchrun jobs too, so that both compute on one thread whatever this process set)
    for name, nproc in (("one", 1), ("two", 2)):
        distributed.launch(_unet_job(tmp_path, 1, f"{name}_1"), nproc, tmp_path / "job")
    moments = [
        torch.load(tmp_path / f"{n}_1" / "checkpoint.pt", weights_only=False)["opt"]["state"] for n in ("one", "two")
    ]
    assert moments[0].keys() == moments[1].keys()
    for i in moments[0]:
        torch.testing.assert_close(moments[0][i]["exp_avg"], moments[1][i]["exp_avg"], rtol=1e-4, atol=1e-7)
    # eight steps: the same losses, weights and outputs
    job = _unet_job(tmp_path, 8, "one")
    distributed.launch(job, 1, tmp_path / "job")
    distributed.launch(_unet_job(tmp_path, 8, "two"), 2, tmp_path / "job")
    one, two = _trainer(tmp_path / "one", job), _trainer(tmp_path / "two", job)
    assert one.step == two.step == 8
    _assert_same_model(one.model, two.model)
    log_one, log_two = one.run.read_log(), two.run.read_log()
    assert [r["step"] for r in log_two] == [r["step"] for r in log_one] == [2, 4, 6, 8]
    np.testing.assert_allclose([r["loss"] for r in log_two], [r["loss"] for r in log_one], rtol=1e-4)


def test_killed_ddp_run_resumes_to_the_same_weights(tmp_path):
    steps = 40
    command = distributed.write_job(_unet_job(tmp_path, steps, "killed"), tmp_path / "job", 2)
    process = subprocess.Popen(command, cwd=Path(distributed.__file__).parents[2], start_new_session=True)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job at once: torchrun and both ranks
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=False)["step"]
    if killed_at >= steps:
        pytest.skip("the run finished before it could be killed")
    job = _unet_job(tmp_path, steps, "killed")
    distributed.launch(job, 2, tmp_path / "job")
    distributed.launch(_unet_job(tmp_path, steps, "whole"), 2, tmp_path / "job")
    killed, whole = _trainer(tmp_path / "killed", job), _trainer(tmp_path / "whole", job)
    assert killed.step == whole.step == steps
    for key, value in whole.model.state_dict().items():  # the resumed run is the uninterrupted one, bit for bit
        assert torch.equal(killed.model.state_dict()[key], value), key
    assert killed.run.read_log() == whole.run.read_log()


def test_one_process_is_the_whole_world():
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.my_part([1, 2, 3]) == [1, 2, 3] and distributed.all_mean(2.5) == 2.5
    assert distributed.device() == torch.device("cpu")


def _synthesizer():
    G = load("default-biggan")
    direction = torch.nn.functional.normalize(torch.randn(G.dim_z, generator=torch.Generator().manual_seed(0)), dim=0)
    return MaskSynthesizer(
        G, direction, max_fraction=1.0, maxes_filter=False, connected_components=False, batch_size=4, rng=0
    )


def test_on_the_fly_synthesis_gives_each_rank_its_part(tmp_path):
    synth = _synthesizer()
    a, b = synth.part(5, 0, 2), synth.part(5, 1, 2)
    assert a[0].shape[0] == b[0].shape[0] == 2 and not torch.equal(a[0], b[0])
    torch.testing.assert_close(synth.part(5, 1, 2)[0], b[0])  # repeatable per (step, rank)
    with pytest.raises(ValueError, match="split evenly"):
        synth.part(0, 0, 3)
    settings = SegmentationSettings(steps=3, lr_step=5, checkpoint_every=3, log_every=1, seed=1, amp="off")
    torch.manual_seed(0)
    job = functools.partial(train_job, tmp_path / "two", UNet(width=4), settings, synth, progress=False)
    distributed.launch(job, 2, tmp_path / "job")

    def union(step):  # one process on what the two ranks synthesised
        parts = [synth.part(step, r, 2) for r in range(2)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    torch.manual_seed(0)
    one = train_job(tmp_path / "one", UNet(width=4), settings, union, progress=False)
    two = SegmentationTrainer(tmp_path / "two", UNet(width=4), settings)
    losses = [[r["loss"] for r in t.run.read_log()] for t in (one, two)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)  # the ranks' single-thread generator rounds apart
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(one.model.eval()(x), two.model.eval()(x), rtol=0, atol=5e-3)


def test_a_launch_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    distributed.launch(functools.partial(int, "1"), 2, tmp_path / "job")
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("nproc", [0, -1, 2.5, "2", True])
def test_a_bad_process_count_is_refused_before_any_work(nproc, tmp_path):
    calls = []
    with pytest.raises(ValueError, match="integer of at least 1"):
        distributed.on_ranks(lambda: calls.append(1), nproc, tmp_path)
    assert not calls and not (tmp_path / "job.pt").exists()


def test_uneven_batches_split_over_three_processes(tmp_path):
    """A global batch of 4 over 3 ranks (slices of 2, 1, 1) trains as one process does."""
    job = _unet_job(tmp_path, 2, "one", batch_size=4)
    distributed.launch(job, 1, tmp_path / "job")
    distributed.launch(_unet_job(tmp_path, 2, "three", batch_size=4), 3, tmp_path / "job")
    _assert_same_model(_trainer(tmp_path / "one", job).model, _trainer(tmp_path / "three", job).model)
