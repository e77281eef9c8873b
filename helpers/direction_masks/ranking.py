"""Automatic choice of the "background darkening / foreground lightening" direction among candidates.

Background score (reference ``directions_scoring.py``): per pixel, G(z + h) is explained by the better of
two affine RGB maps of G(z) (each initialised to I + 0.01 W), fitted with Adam (lr 5e-3, 200 steps on
batches of 4 latents, then 5 test batches); the score is the mean per-pixel L2 residual of the test
batches. A direction whose effect is a two-region recolouring (darken one region, keep or lighten the
other) is explained well. The absolute residual also rewards directions that barely change the image, so
``rank_directions`` divides it by the mean per-pixel change (``relative``) and ranks by that; the winner is
oriented so that its smaller cluster (the object) gets lighter than the rest. Deviations from the
reference, all for speed: the four-latent batches are drawn from one pool generated once per direction,
and all directions are fitted at once as a batch of independent problems (Adam is per-parameter, so
this equals fitting them one by one).

Image consistency (beyond the reference; ``rank_directions(by="consistency")``, notebook 03's default): each
oriented candidate's reference masks that pass the filters are re-fitted to their own images with GrabCut,
and the mean IoU between mask and re-fit ranks the candidates (higher first). On the default generators it
orders candidates by the quality of their masks better than the residual does
(docs/direction_masks.md#image-consistency).

`choose` takes the ranking's winner or a named candidate (a researcher's pick); `shift_strips`
renders a candidate's effect for the eye.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.direction_masks.synthesis import MaskRules, apply_rules, gray, raw_masks
from helpers.gans.base import Generator, forward_chunk, to_uint8
from helpers.segmentation.grabcut import grabcut_agreement


class TwoMapScorer(nn.Module):
    """Per-direction pair of affine RGB maps; each pixel takes the map that fits its shifted colour best."""

    def __init__(self, n_directions: int):
        super().__init__()
        init = nn.Linear(3, 3)  # default-initialised template, as in the reference
        weights, biases = [], []
        for _ in range(n_directions * 2):
            nn.init.kaiming_uniform_(init.weight, a=math.sqrt(5))
            nn.init.uniform_(init.bias, -1 / math.sqrt(3), 1 / math.sqrt(3))
            weights.append(torch.eye(3) + 0.01 * init.weight.detach())
            biases.append(init.bias.detach().clone())
        self.weight = nn.Parameter(torch.stack(weights).view(n_directions, 2, 3, 3))
        self.bias = nn.Parameter(torch.stack(biases).view(n_directions, 2, 3))

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel colours x [3, P] (shared by all directions) and target [3, D, P] -> per-pixel residual [D, P] and
        chosen map [D, P]."""
        return _two_map_residuals(self.weight, self.bias, x, target)


def _two_map_residuals(weight: Tensor, bias: Tensor, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """`TwoMapScorer.forward` for maps ``weight`` [D, 2, 3, 3] and ``bias`` [D, 2, 3]: each pixel's distance to its
    target under the better map, and that map. Channel by channel on [D, 2, P] planes, which gives the values of
    mapping [D, 2, P, 3] colour vectors at once (up to float rounding) in a quarter of the time."""
    squared = None
    for i in range(3):
        w = weight[:, :, i]  # [D, 2, 3]: output channel i of each map
        mapped = w[..., 0, None] * x[0] + w[..., 1, None] * x[1] + w[..., 2, None] * x[2] + bias[:, :, i, None]
        term = (mapped.clamp(-1, 1) - target[i][:, None]).square()
        squared = term if squared is None else squared + term
    positive = squared > 0  # the Euclidean distance, with torch.norm's zero gradient where it is 0
    distance = torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)  # [D, 2, P]
    return distance.min(1)


def _pixels(images: Tensor) -> Tensor:
    """Colours [3, P] of the pixels of images [N, 3, H, W] (image by image, row by row)."""
    return images.transpose(0, 1).reshape(3, -1)


class _Renders:
    """G(z) and its shifted twins for many shifts of the same latents, in chunks (`forward_chunk`; latent i always
    with noise seed ``first_seed + i``); what every shift shares is computed once per chunk
    (`Generator.shift_renderer`)."""

    @torch.no_grad()
    def __init__(self, G: Generator, z: Tensor, first_seed: int = 0):
        chunk = forward_chunk(G, len(z))
        self.renderers = [
            G.shift_renderer(z[i : i + chunk], list(range(first_seed + i, first_seed + min(i + chunk, len(z)))))
            for i in range(0, len(z), chunk)
        ]

    @torch.no_grad()
    def __call__(self, shift: Tensor | None = None) -> Tensor:
        """G(z) [N, 3, H, W], or the images shifted by ``shift``."""
        return torch.cat([render(shift) for render in self.renderers])


def two_map_scores(
    G: Generator,
    shifts: Tensor,
    n_latents: int = 64,
    train_steps: int = 200,
    test_batches: int = 5,
    batch: int = 4,
    lr: float = 5e-3,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Tensor]:
    """The reference background score of each latent shift (rows of ``shifts``, magnitude included).

    Returns ``score`` (mean test residual, lower = better explained by two recolourings), ``change``
    (mean per-pixel colour change), ``relative`` = score / change, ``masks`` [D, N, H, W] (map index of each
    pixel of the pool images) and ``delta_gray`` [D, N, H, W] (gray(G(z + h)) - gray(G(z))).
    """
    G = G.eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_latents, G.dim_z, generator=gen).to(G.device)
    renders = _Renders(G, z)
    bar = tqdm(total=len(shifts) + train_steps, desc="two-map scores (render, fit)", disable=not progress)
    base, rendered = renders(), []
    for s in shifts.to(G.device):
        rendered.append(renders(s))
        bar.update()
    shifted = torch.stack(rendered)
    D, N = shifted.shape[:2]
    with torch.random.fork_rng(devices=[]):  # the scorer's start depends on seed alone, not on the caller's RNG
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: fork_rng restores no other
        scorer = TwoMapScorer(D).to(G.device)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr)
    for _ in range(train_steps):
        bar.update()
        idx = torch.randint(N, (batch,), generator=gen)
        residual, _ = scorer(_pixels(base[idx]), _pixels_of_each(shifted, idx))
        opt.zero_grad(set_to_none=True)
        residual.mean(1).sum().backward()
        opt.step()
    bar.close()
    with torch.no_grad():
        test = torch.randint(N, (test_batches, batch), generator=gen)
        score = torch.stack([scorer(_pixels(base[i]), _pixels_of_each(shifted, i))[0].mean(1) for i in test]).mean(0)
        change = (shifted - base).norm(dim=2).mean((1, 2, 3))
        H, W = base.shape[-2:]
        masks = torch.stack([_choice(scorer, d, base, s) for d, s in enumerate(shifted)]).view(D, N, H, W)
        delta = gray(shifted.flatten(0, 1)).view(D, N, H, W) - gray(base)[None]
    return {
        "score": score.cpu(),
        "change": change.cpu(),
        "relative": (score / change.clamp_min(1e-8)).cpu(),
        "masks": masks.cpu(),
        "delta_gray": delta.cpu(),
    }


def _pixels_of_each(shifted: Tensor, index: Tensor) -> Tensor:
    """Colours [3, D, P] of the images ``index`` of each direction's shifted images [D, N, 3, H, W]."""
    return shifted[:, index].permute(2, 0, 1, 3, 4).reshape(3, len(shifted), -1)


def _choice(scorer: TwoMapScorer, d: int, base: Tensor, shifted: Tensor) -> Tensor:
    """The map [N·H·W] each pixel of the pool images takes for direction ``d`` (``shifted``: its images)."""
    weight, bias = scorer.weight[d : d + 1], scorer.bias[d : d + 1]
    return _two_map_residuals(weight, bias, _pixels(base), _pixels(shifted)[:, None])[1][0]


def orient(masks: Tensor, delta_gray: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per direction: object fraction (the smaller two-map cluster), contrast and sign.

    contrast = mean gray change on the object cluster minus that on the rest; sign = +1 when the
    direction already lightens the object relative to the background, else -1.
    """
    ones = masks.float().mean((1, 2, 3))
    fg = torch.where(ones[:, None, None, None] <= 0.5, masks == 1, masks == 0)  # [D, N, H, W]
    frac = torch.minimum(ones, 1 - ones)
    fg_change = (delta_gray * fg).sum((1, 2, 3)) / fg.sum((1, 2, 3)).clamp_min(1)
    bg_change = (delta_gray * ~fg).sum((1, 2, 3)) / (~fg).sum((1, 2, 3)).clamp_min(1)
    contrast = fg_change - bg_change
    return frac, contrast, torch.where(contrast >= 0, 1.0, -1.0)


@torch.no_grad()
def _latents(G: Generator, n: int, seed: int) -> Tensor:
    """The ``n`` scoring latents of ``seed`` (the first m of them are those of m latents)."""
    return torch.randn(n, G.dim_z, generator=torch.Generator().manual_seed(seed)).to(G.device)


def _consistency_tally(
    G: Generator, shifts: Tensor, z: Tensor, first_seed: int = 0, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Per shift: the sum of the kept masks' GrabCut agreements and their number, on latents ``z`` whose noise
    seeds start at ``first_seed`` (latent i of the full set has seed i)."""
    G = G.eval()
    renders = _Renders(G, z, first_seed=first_seed)
    base = renders()
    images = to_uint8(base)
    rules = MaskRules()
    total, kept = torch.zeros(len(shifts), dtype=torch.float64), torch.zeros(len(shifts), dtype=torch.int64)
    for d, shift in enumerate(tqdm(shifts.to(G.device), desc="image consistency", disable=not progress)):
        result = apply_rules(base, renders(shift), rules)
        keep = result.keep.cpu().numpy()
        kept[d] = int(keep.sum())
        if keep.any():
            _, agreement = grabcut_agreement(images[keep], result.masks.bool().cpu().numpy()[keep])
            total[d] = float(agreement.astype(np.float64).sum())
    return total, kept


def _consistency(total: Tensor, kept: Tensor) -> Tensor:
    """Mean agreement of the kept masks, 0 without any."""
    return torch.where(kept > 0, total / kept.clamp_min(1), 0.0).float()


def image_consistency(
    G: Generator, shifts: Tensor, n_latents: int = 64, seed: int = 0, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Per latent shift [D, dim_z]: how well the image itself explains its masks, and the filters' pass rate.

    The masks are the reference rules' (LIGHTING, components, area and maxes filters) on ``n_latents``
    latents (drawn as `two_map_scores` draws its own for the same seed); consistency is the mean IoU between each kept
    mask and its GrabCut re-fit to the image's own colours and edges (an empty mask counts 0, as does a
    direction with no kept mask). An object/background direction gives masks that follow the image; a
    texture, highlight or layout change gives masks that GrabCut moves.
    """
    total, kept = _consistency_tally(G, shifts, _latents(G, n_latents, seed), progress=progress)
    return _consistency(total, kept), kept.float() / n_latents


RANKINGS = ("relative", "consistency")


def rank_directions(
    G: Generator,
    directions: Tensor,
    magnitude: float,
    min_fraction: float = 0.02,
    max_fraction: float = 0.5,
    by: str = "relative",
    min_kept: float = 0.1,
    consistency_latents: int = 256,
    seed: int = 0,
    progress: bool = False,
    consistency_screen: int = 0,
    screen_margin: float = 0.15,
    **score_kwargs: Any,
) -> list[dict[str, float]]:
    """Scores unit ``directions`` [K, dim_z] at ``magnitude`` and ranks them, best background direction first.

    Candidates whose object cluster covers between ``min_fraction`` and ``max_fraction`` of the pixels are
    plausible. ``by="relative"`` ranks them by the relative two-map score (lower first); the rest follow,
    also by relative score. ``by="consistency"`` (beyond the reference) also scores every oriented candidate
    with `image_consistency` on ``consistency_latents`` latents and ranks the plausible ones whose masks
    pass the filters at least ``min_kept`` of the time by consistency (higher first). Consistency is a mean
    over the kept masks, whose IoUs spread widely, so it needs a few hundred latents to rank by
    (docs/direction_masks.md#image-consistency). With ``0 < consistency_screen < consistency_latents`` every
    candidate is first scored on the first ``consistency_screen`` latents, and only the candidates that pass the
    filters and come within ``screen_margin`` of the best such screened score go on to all the latents (their
    scores are then those of the full computation); each row's ``consistency_latents`` says how many it got.
    ``seed`` draws the latents of both scores; ``score_kwargs`` go to `two_map_scores`.
    """
    if by not in RANKINGS:
        raise ValueError(f"by must be one of {RANKINGS}, got {by!r}")
    result = two_map_scores(G, magnitude * directions, seed=seed, progress=progress, **score_kwargs)
    frac, contrast, sign = orient(result["masks"], result["delta_gray"])
    rows = [
        {
            "index": k,
            "score": result["score"][k].item(),
            "change": result["change"][k].item(),
            "relative": result["relative"][k].item(),
            "object_fraction": frac[k].item(),
            "contrast": contrast[k].item(),
            "sign": sign[k].item(),
            "plausible": bool(min_fraction <= frac[k] <= max_fraction),
        }
        for k in range(len(directions))
    ]
    if by == "relative":
        return sorted(rows, key=lambda r: (not r["plausible"], r["relative"]))
    shifts = magnitude * sign[:, None].to(directions) * directions
    z = _latents(G, consistency_latents, seed)
    screen = consistency_screen if 0 < consistency_screen < consistency_latents else consistency_latents
    total, kept = _consistency_tally(G, shifts, z[:screen], progress=progress)
    latents = torch.full((len(shifts),), screen)
    if screen < consistency_latents:
        plausible = torch.tensor([r["plausible"] for r in rows]) & (kept >= min_kept * screen)
        screened = _consistency(total, kept)
        best = screened[plausible].max() if plausible.any() else screened.max()
        finalists = torch.nonzero(plausible & (screened >= best - screen_margin)).flatten()
        more_total, more_kept = _consistency_tally(
            G, shifts[finalists], z[screen:], first_seed=screen, progress=progress
        )
        total[finalists] += more_total
        kept[finalists] += more_kept
        latents[finalists] = consistency_latents
    consistency, kept_fraction = _consistency(total, kept), kept.double() / latents
    for row, c, k, n in zip(rows, consistency.tolist(), kept_fraction.tolist(), latents.tolist()):
        row.update(consistency=c, kept=k, consistency_latents=n, plausible=row["plausible"] and k >= min_kept)
    return sorted(rows, key=lambda r: (not r["plausible"], -r["consistency"], -r["kept"]))


def choose(ranking: list[dict[str, Any]], name: str = "") -> dict[str, Any]:
    """The ranking's first row, or the row of candidate ``name`` (a researcher's pick after the strips)."""
    if not name:
        return ranking[0]
    for row in ranking:
        if row["name"] == name:
            return row
    raise KeyError(f"no candidate {name!r}; candidates: {', '.join(r['name'] for r in ranking)}")


@torch.no_grad()
def shift_strips(
    G: Generator, direction: Tensor, magnitudes: list[float], n_rows: int, seed: int = 0, mask_magnitude: float = 5.0
) -> np.ndarray:
    """Rows of G(z + r h) for each r in ``magnitudes``, then the lighting mask at ``mask_magnitude``.

    Returns uint8 images [n_rows * (len(magnitudes) + 1), H, W, 3] in row-major order, ready for a grid.
    """
    G = G.eval()
    z = G.sample_z(n_rows, seed)
    h = direction.reshape(1, -1).to(z.device)
    seeds = list(range(seed, seed + n_rows))  # one noise seed per row, shared by the row's images
    columns = [G.render_shifted(z, r * h, seeds) for r in magnitudes]
    mask = (
        raw_masks(G.render(z, seeds), G.render_shifted(z, mask_magnitude * h, seeds), "lighting").float().mul(2).sub(1)
    )
    columns.append(mask[:, None].expand(-1, 3, -1, -1))
    images = torch.stack(columns, 1).flatten(0, 1)
    return to_uint8(images)
