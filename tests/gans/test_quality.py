import numpy as np
import pytest
import torch

from helpers.data.procedural import render_batch
from helpers.gans.quality import laplacian_pyramid, swd, to_float_images


def test_pyramid_levels_and_reconstruction():
    x = torch.rand(2, 3, 64, 64)
    levels = laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    # Expanding from the coarsest level and adding each band gives back the image.
    from helpers.gans.quality import _binomial_kernel  # the same filter the pyramid uses

    k = _binomial_kernel(3)
    rec = levels[-1]
    for band in reversed(levels[:-1]):
        up = torch.nn.functional.interpolate(rec, scale_factor=2, mode="nearest")
        rec = torch.nn.functional.conv2d(torch.nn.functional.pad(up, (2, 2, 2, 2), mode="reflect"), k, groups=3) + band
    assert torch.allclose(rec, x, atol=1e-5)


def test_swd_orders_distributions():
    real_a, _ = render_batch(0, range(64), 64)
    real_b, _ = render_batch(0, range(64), 64, stream=2)
    noise = np.random.default_rng(0).integers(0, 256, real_a.shape, dtype=np.uint8)
    blurred = torch.nn.functional.avg_pool2d(to_float_images(real_b), 5, 1, 2)
    same = swd(real_a, real_b)
    assert set(same) == {"64px", "32px", "16px", "mean"}
    assert same["mean"] < swd(blurred, real_a)["mean"] < swd(noise, real_a)["mean"]
    assert swd(blurred, real_a)["64px"] > 2 * same["64px"]  # blur removes the fine band
    assert swd(real_a, real_a)["mean"] < swd(noise, real_a)["mean"] / 5  # patch positions differ per set
    assert swd(real_a, real_b, seed=1) == swd(real_a, real_b, seed=1)


def test_swd_needs_equal_sets():
    with pytest.raises(ValueError, match="same shape"):
        swd(np.zeros((4, 32, 32, 3), np.uint8), np.zeros((5, 32, 32, 3), np.uint8))
