"""Direction discovery (deformator and reconstructor, resumable) and the PCA baseline."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

from helpers.core import distributed
from helpers.direction_masks.discovery import (
    Deformator,
    DirectionDiscovery,
    DiscoveryConfig,
    discovery_job,
    pca_directions,
    sample_shifts,
)
from helpers.gans.biggan import BigGAN


def tiny_biggan() -> BigGAN:
    torch.manual_seed(0)
    return BigGAN(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[]).eval()


@pytest.mark.parametrize("kind", ["ortho", "linear", "proj"])
def test_deformator_starts_at_coordinate_axes(kind):
    deformator = Deformator(8, 5, kind)
    dirs = deformator.directions()
    assert dirs.shape == (5, 8)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(5))
    assert torch.allclose(dirs, torch.eye(8)[:5], atol=0.02)


def test_ortho_deformator_is_orthogonal_and_linear_in_the_shift():
    deformator = Deformator(6, kind="ortho", random_init=True)
    m = deformator.matrix()
    assert torch.allclose(m.T @ m, torch.eye(6), atol=1e-5)
    shift = torch.zeros(1, 6)
    shift[0, 2] = 3.0
    assert torch.allclose(deformator(shift)[0], 3.0 * m[:, 2], atol=1e-6)


def test_proj_deformator_keeps_the_shift_norm():
    deformator = Deformator(6, kind="proj", random_init=True)
    shift = torch.zeros(2, 6)
    shift[0, 1], shift[1, 4] = 2.5, -4.0
    assert torch.allclose(deformator(shift).norm(dim=1), torch.tensor([2.5, 4.0]), atol=1e-5)


def test_deformator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        Deformator(4, kind="fc")
    with pytest.raises(ValueError, match="at most"):
        Deformator(4, 5)


def test_shift_magnitudes_respect_scale_and_minimum():
    k, eps = sample_shifts(10_000, 7, 6.0, 0.5, torch.Generator().manual_seed(0))
    assert k.min() == 0 and k.max() == 6
    assert eps.abs().min() >= 0.5 and eps.abs().max() <= 6.0
    assert (eps > 0).float().mean().sub(0.5).abs() < 0.03


def test_discovery_trains_and_resumes_exactly(tmp_path):
    G = tiny_biggan()
    config = DiscoveryConfig(n_directions=4, batch_size=4, steps=4, lr=1e-3, reconstructor_width=4, checkpoint_every=2)
    straight = DirectionDiscovery(tmp_path / "a", G, config)
    assert straight.train(progress=False) == 4
    first = DirectionDiscovery(tmp_path / "b", G, config)
    assert first.train(steps=2, progress=False) == 2
    resumed = DirectionDiscovery(tmp_path / "b", G, config)
    assert resumed.step == 2
    assert resumed.train(progress=False) == 4
    assert torch.allclose(straight.directions(), resumed.directions(), atol=1e-6)
    assert not torch.allclose(straight.directions(), torch.eye(16)[:4], atol=1e-6)  # the deformator moved
    assert (tmp_path / "b" / "log.jsonl").exists()


def test_two_process_discovery_resumes_like_an_uninterrupted_run(tmp_path):
    """Two gloo processes, each with half of every batch: stopped after 2 steps and resumed to 4, the same run."""
    G = tiny_biggan()
    config = DiscoveryConfig(
        n_directions=4, batch_size=4, lr=1e-3, reconstructor_width=4, checkpoint_every=2, amp="off"
    )
    for name, budgets in [("straight", [4]), ("split", [2, 4])]:
        for steps in budgets:
            job = functools.partial(discovery_job, tmp_path / name, G, replace(config, steps=steps))
            distributed.launch(job, 2, tmp_path / "job")
    straight, split = (
        DirectionDiscovery(tmp_path / name, G, replace(config, steps=4)) for name in ("straight", "split")
    )
    assert straight.step == split.step == 4
    assert torch.equal(straight.directions(), split.directions())
    assert not torch.allclose(split.directions(), torch.eye(16)[:4], atol=1e-6)  # the deformator moved
    with pytest.raises(RuntimeError, match="batch_size 3 cannot be split evenly over 2 processes"):
        distributed.launch(
            functools.partial(discovery_job, tmp_path / "odd", G, replace(config, batch_size=3)), 2, tmp_path / "job"
        )


def test_discovery_refuses_another_configuration(tmp_path):
    G = tiny_biggan()
    config = DiscoveryConfig(n_directions=4, batch_size=2, steps=1, reconstructor_width=4)
    DirectionDiscovery(tmp_path, G, config).train(progress=False)
    torch.manual_seed(1)
    other = BigGAN(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[]).eval()
    with pytest.raises(ValueError, match="different generator"):
        DirectionDiscovery(tmp_path, other, config)
    with pytest.raises(ValueError, match="different configuration"):
        DirectionDiscovery(tmp_path, G, DiscoveryConfig(n_directions=5, batch_size=2, steps=1, reconstructor_width=4))


def test_pca_directions_are_unit_and_sorted():
    dirs, explained = pca_directions(tiny_biggan(), 5, n_samples=200, batch_size=100)
    assert dirs.shape == (5, 16)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(5), atol=1e-5)
    assert (explained[:-1] >= explained[1:]).all() and explained.sum() <= 1
