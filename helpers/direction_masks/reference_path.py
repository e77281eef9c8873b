"""The literal per-sample mask procedure of the reference code, kept as the correctness and speed baseline
of the batched rules in `helpers.direction_masks.synthesis`.

Per sample: ``G(z_i)`` and ``G(z_i + r h)`` as two forwards with one noise seed, the mask cleaned on the host
with scipy, the area fraction, and a ``torch.histc`` of the shifted image with a loop over its bins.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from helpers.direction_masks.direction_files import as_direction
from helpers.direction_masks.synthesis import (
    COMPONENT_RATIO,
    HIST_BINS,
    HIST_RANGE,
    MIN_MAXIMA,
    MaskRules,
    SynthesisResult,
    beyond_reference,
    raw_masks,
)
from helpers.gans.base import Generator, require_eval


def components_filter_single(mask: np.ndarray) -> np.ndarray:
    """Reference cleaning of one [H, W] mask: label 8-connected components, keep area / largest > 0.2."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    areas = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], areas / areas.max() > COMPONENT_RATIO])
    return keep[labels]


def count_maxima_single(image: Tensor) -> int:
    """Reference bimodality count of one image [3, H, W]: torch.histc, ones-kernel conv1d, a loop over bins."""
    stats = torch.histc(image, bins=HIST_BINS, min=HIST_RANGE[0], max=HIST_RANGE[1])
    kernel = torch.ones(1, 1, 3, dtype=stats.dtype, device=stats.device)
    smooth = F.conv1d(stats[None, None], kernel, padding=1)[0, 0].tolist()
    last = len(smooth) - 1
    return sum(
        (i == 0 or smooth[i] >= smooth[i - 1]) and (i == last or smooth[i] >= smooth[i + 1]) for i in range(len(smooth))
    )


def rules_single(image: Tensor, shifted: Tensor, rules: MaskRules = MaskRules()) -> tuple[Tensor, bool, bool]:
    """Reference rules for one sample [1, 3, R, R]: mask (cleaned on the host), area verdict, maxes verdict."""
    mask = raw_masks(image, shifted, rules.rule)[0]
    if rules.connected_components:
        mask = torch.from_numpy(components_filter_single(mask.cpu().numpy())).to(image.device)
    fits = mask.sum().item() / mask.numel() < rules.max_fraction
    bimodal = not rules.maxes_filter or count_maxima_single(shifted[0]) >= MIN_MAXIMA
    return mask.long(), fits, bimodal


def _stack_results(images: list[Tensor], verdicts: list[tuple[Tensor, bool, bool]]) -> SynthesisResult:
    """Stacks per-sample images and `rules_single` outputs into one result."""
    masks, fits, bimodal = zip(*verdicts)
    flags = dict(dtype=torch.bool, device=masks[0].device)
    flag_tensors = [torch.tensor(values, **flags) for values in (fits, bimodal)]
    return SynthesisResult(torch.cat(images), torch.stack(masks), *flag_tensors)


def apply_rules_per_image(images: Tensor, shifted: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """`apply_rules` one sample at a time with the reference rules: the baseline for the vectorised rules."""
    pairs = list(zip(images.split(1), shifted.split(1)))
    result = _stack_results([image for image, _ in pairs], [rules_single(*pair, rules) for pair in pairs])
    return beyond_reference(result, rules)


@torch.no_grad()
def synthesize_per_image(G: Generator, z: Tensor, direction: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """The literal reference procedure, one sample at a time; kept as a correctness and speed baseline.

    Per sample: ``G(z_i)`` and ``G(z_i + r h)`` as two forwards (same noise seed), then `rules_single`: the mask,
    the cleaning of that single mask on the host with scipy, the area fraction and a ``torch.histc`` of
    the shifted image.
    """
    require_eval(G)
    z = z.to(G.device)
    shift = rules.r * as_direction(direction, G.dim_z).to(z)
    images, verdicts = [], []
    seeds = torch.randint(2**31, (len(z),)).tolist()
    for z_i, seed in zip(z.split(1), seeds):
        image, shifted = G.render(z_i, [seed]), G.render_shifted(z_i, shift, [seed])
        images.append(image)
        verdicts.append(rules_single(image, shifted, rules))
    return beyond_reference(_stack_results(images, verdicts), rules)
