"""Synthetic (image, mask) pairs from a generator and a background direction, with the reference rules.

A latent ``z`` gives the image ``G(z)`` and the shifted image ``G(z + r h)``, where ``h`` is a latent
direction that darkens the background and lightens the object (BigBiGAN: the released
``bg_direction.pth``, r = 5). The shift is added to the raw latent before any split. The rules follow
the reference mask generator of "Big GANs Are Watching You" (spec §5 and §10, items 6 and 8):

* **Gray level** ``gray(x) = 0.2989 R + 0.5870 G + 0.1140 B``, computed on the [-1, 1] images.
* **Mask** (1 = foreground). Rule ``"lighting"`` (the default): pixels that got strictly brighter,
  ``gray(G(z)) < gray(G(z + r h))``. Rule ``"mean_thr"``: pixels of the shifted image strictly above
  that image's mean gray level.
* **Connected components** (on by default): 8-connected components of each mask; a component stays
  iff its area divided by the largest component's area of the same mask is strictly above 0.2.
* **Area filter**: a sample is kept iff the foreground fraction of its (cleaned) mask is strictly
  below 0.5. There is no lower bound, so an empty mask passes.
* **Maxes (bimodality) filter** (on by default), on the shifted image: a 12-bin ``torch.histc`` over
  [-1, 1] of all three channels together, smoothed by window sums of width 3 (zero padding), must
  have at least two local maxima, where bin i counts as a maximum iff it is >= each existing
  neighbour (the end bins have one neighbour). Ties count, so a run of empty bins is a plateau of
  maxima: an image that leaves part of [-1, 1] empty usually passes.
* **Refinement** (off by default; beyond the reference): ``refine="grabcut"`` re-fits each kept mask to
  its own image with GrabCut (the mask as probable foreground, the rest as probable background). The
  filters' verdicts stay those of the reference masks.
* **Consistency filter** (off by default; beyond the reference): ``min_consistency=t`` keeps a sample only
  if its mask and that re-fit agree with IoU >= t: masks that GrabCut would move or empty (and empty masks)
  are dropped rather than trained on.
* **Border filter** (off by default; beyond the reference): ``max_border=t`` keeps a sample only if its mask (the
  one the pair carries, after any refinement) covers at most a fraction t of the image's frame, the ring of
  outermost pixels. It is the boundary prior of salient-object detection: a background region usually runs
  into the frame, an object rarely covers much of it.

`synthesize` applies the rules to a whole batch: one generator forward on ``cat([z, z + r h])`` (``G.pair``),
every rule on the generator's device, and one host round trip for the connected components (all
masks labelled in a single call). `synthesize_per_image` is the literal per-sample procedure, kept as
the correctness and speed baseline (`apply_rules_per_image` is its rules part). `MaskSynthesizer`
draws latents (N(0, I), or rows of an embeddings array plus optional Gaussian noise) and refills
until a batch of survivors is complete.
The batched generator forward rounds differently from per-sample forwards (batch-size dependent
matrix kernels, about 1e-6), so the two paths agree bit for bit on the rules given the same images,
and up to rare near-tie pixels end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from helpers.gans.base import Generator, to_uint8
from helpers.grabcut import grabcut_refine

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
HIST_BINS = 12
HIST_RANGE = (-1.0, 1.0)
MIN_MAXIMA = 2
COMPONENT_RATIO = 0.2
# 8-connectivity inside each plane of a [B, H, W] stack, no connection between planes.
STACK_STRUCTURE = np.pad(np.ones((1, 3, 3), dtype=bool), ((1, 1), (0, 0), (0, 0)))

Rule = Literal["lighting", "mean_thr"]
Refinement = Literal["none", "grabcut"]
# On a CPU the generator forward runs 2-3x faster per image in chunks of 16 latents (32 images) than in
# batches of 128 or more, whose activations outgrow the caches (benchmarks/generator_forward.py --chunks).
CPU_LATENT_CHUNK = 16


@dataclass(frozen=True)
class MaskRules:
    """The synthesis settings: shift magnitude, mask rule and which filters run (reference defaults)."""

    r: float = 5.0
    rule: Rule = "lighting"
    max_fraction: float = 0.5
    maxes_filter: bool = True
    connected_components: bool = True
    refine: Refinement = "none"
    min_consistency: float = 0.0
    max_border: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in ("lighting", "mean_thr"):
            raise ValueError(f"rule must be 'lighting' or 'mean_thr', got {self.rule!r}")
        if self.refine not in ("none", "grabcut"):
            raise ValueError(f"refine must be 'none' or 'grabcut', got {self.refine!r}")
        if not 0.0 <= self.min_consistency <= 1.0:
            raise ValueError(f"min_consistency must lie in [0, 1], got {self.min_consistency}")
        if not 0.0 <= self.max_border <= 1.0:
            raise ValueError(f"max_border must lie in [0, 1], got {self.max_border}")


@dataclass(frozen=True)
class SynthesisResult:
    """Images G(z), masks (long {0, 1}) and per-sample filter verdicts for a batch of latents.

    ``consistent_ok`` is None unless the consistency filter ran (``MaskRules.min_consistency > 0``),
    ``border_ok`` unless the border filter did (``MaskRules.max_border < 1``).
    """

    images: Tensor
    masks: Tensor
    area_ok: Tensor
    maxes_ok: Tensor
    consistent_ok: Tensor | None = None
    border_ok: Tensor | None = None

    @property
    def keep(self) -> Tensor:
        """Samples that pass every filter."""
        keep = self.area_ok & self.maxes_ok
        for verdict in (self.consistent_ok, self.border_ok):
            if verdict is not None:
                keep = keep & verdict
        return keep


class SyntheticBatch(NamedTuple):
    """A training batch: images [b, 3, R, R] in [-1, 1], masks [b, R, R] long {0, 1}, and their latents."""

    images: Tensor
    masks: Tensor
    z: Tensor


def gray(x: Tensor) -> Tensor:
    """Gray level [B, H, W] of RGB images [B, 3, H, W] with the reference weights, on the raw value range."""
    return GRAY_WEIGHTS[0] * x[:, 0] + GRAY_WEIGHTS[1] * x[:, 1] + GRAY_WEIGHTS[2] * x[:, 2]


def raw_masks(images: Tensor, shifted: Tensor, rule: Rule = "lighting") -> Tensor:
    """Boolean masks [B, H, W] before cleaning: brighter after the shift, or above the shifted image's mean."""
    if rule == "lighting":
        return gray(images) < gray(shifted)
    if rule == "mean_thr":
        level = gray(shifted)
        return level > level.mean(dim=(1, 2), keepdim=True)
    raise ValueError(f"rule must be 'lighting' or 'mean_thr', got {rule!r}")


def components_filter(masks: Tensor) -> Tensor:
    """Drops small 8-connected components of every mask (area / largest area <= 0.2), one CPU round trip."""
    stack = masks.to("cpu", torch.bool).numpy()
    labels, n = ndimage.label(stack, structure=STACK_STRUCTURE)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    image_of = np.zeros(n + 1, dtype=np.int64)
    image_of[labels] = np.arange(len(stack))[:, None, None]
    largest = np.zeros(len(stack), dtype=np.int64)
    np.maximum.at(largest, image_of[1:], areas[1:])
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = areas[1:] / largest[image_of[1:]] > COMPONENT_RATIO
    return torch.from_numpy(keep[labels]).to(masks.device)


def components_filter_single(mask: np.ndarray) -> np.ndarray:
    """Reference cleaning of one [H, W] mask: label 8-connected components, keep area / largest > 0.2."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    areas = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], areas / areas.max() > COMPONENT_RATIO])
    return keep[labels]


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample IoU of two bool mask stacks [B, H, W]; 0 where both are empty."""
    return (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)


def grabcut_agreement(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each mask's GrabCut re-fit and the per-sample IoU between mask and re-fit (its *consistency*).

    The one definition that the consistency filter and the image-consistency ranking of candidate
    directions share; an empty mask has consistency 0.
    """
    refined = grabcut_refine(images, masks)
    return refined, mask_iou(masks, refined)


def refine_kept(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """GrabCut on the masks of the samples that pass the reference filters, when the rules ask for it.

    ``refine="grabcut"`` replaces those masks by their re-fits; ``min_consistency > 0`` also drops the samples
    whose mask and re-fit agree with IoU below it (the consistency filter). The reference verdicts stay.
    """
    if rules.refine == "none" and rules.min_consistency == 0:
        return result
    keep = result.keep
    masks = result.masks.clone()
    consistent = torch.ones_like(keep) if rules.min_consistency > 0 else None
    if keep.any():
        refined, agreement = grabcut_agreement(to_uint8(result.images[keep]), masks[keep].bool().cpu().numpy())
        if rules.refine == "grabcut":
            masks[keep] = torch.from_numpy(refined).to(masks)
        if consistent is not None:
            consistent[keep] = torch.from_numpy(agreement >= rules.min_consistency).to(keep.device)
    return replace(result, masks=masks, consistent_ok=consistent)


def border_fraction(masks: Tensor) -> Tensor:
    """Per-mask fraction [B] of the image frame (the ring of outermost pixels) that the mask covers."""
    m = masks.bool()
    frame = torch.cat([m[:, 0], m[:, -1], m[:, 1:-1, 0], m[:, 1:-1, -1]], dim=1)
    return frame.float().mean(1)


def check_border(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """The border filter on the masks the samples carry (after any refinement), when the rules ask for it."""
    if rules.max_border >= 1:
        return result
    return replace(result, border_ok=border_fraction(result.masks) <= rules.max_border)


def beyond_reference(result: SynthesisResult, rules: MaskRules) -> SynthesisResult:
    """The steps after the reference filters, in order: refinement and the consistency filter, then the border
    filter on the masks the samples then carry."""
    return check_border(refine_kept(result, rules), rules)


def area_ok(masks: Tensor, max_fraction: float = 0.5) -> Tensor:
    """Per-mask verdict [B]: foreground fraction strictly below ``max_fraction`` (no lower bound)."""
    fraction = masks.flatten(1).sum(1).double() / masks[0].numel()
    return fraction < max_fraction


def histogram_counts(images: Tensor) -> Tensor:
    """Per-image 12-bin counts [B, 12] over [-1, 1] of all channels, equal to ``torch.histc`` of each image.

    Same arithmetic as histc: bin = trunc((x - min) * bins / (max - min)) in the input dtype, x == max
    goes to the last bin, values outside [min, max] (and NaN) are not counted.
    """
    low, high = HIST_RANGE
    flat = images.flatten(1)
    inside = (flat >= low) & (flat <= high)
    index = ((flat - low) * HIST_BINS / (high - low)).long().clamp_(max=HIST_BINS - 1)
    index = torch.where(inside, index, HIST_BINS)  # a spare bin for values that are not counted
    counts = torch.zeros(len(flat), HIST_BINS + 1, dtype=torch.long, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts[:, :HIST_BINS]


def count_maxima(counts: Tensor) -> Tensor:
    """Number of non-strict local maxima [B] of the width-3 window sums of integer histograms [B, bins]."""
    padded = F.pad(counts, (1, 1))
    smooth = padded[:, :-2] + counts + padded[:, 2:]
    edged = F.pad(smooth, (1, 1), value=-1)  # an end bin has only one neighbour
    return ((smooth >= edged[:, :-2]) & (smooth >= edged[:, 2:])).sum(1)


def maxes_ok(shifted: Tensor) -> Tensor:
    """Per-image verdict [B]: the smoothed histogram of the shifted image has at least two maxima."""
    return count_maxima(histogram_counts(shifted)) >= MIN_MAXIMA


def count_maxima_single(image: Tensor) -> int:
    """Reference bimodality count of one image [3, H, W]: torch.histc, ones-kernel conv1d, a loop over bins."""
    stats = torch.histc(image, bins=HIST_BINS, min=HIST_RANGE[0], max=HIST_RANGE[1])
    kernel = torch.ones(1, 1, 3, dtype=stats.dtype, device=stats.device)
    smooth = F.conv1d(stats[None, None], kernel, padding=1)[0, 0].tolist()
    last = len(smooth) - 1
    return sum(
        (i == 0 or smooth[i] >= smooth[i - 1]) and (i == last or smooth[i] >= smooth[i + 1])
        for i in range(len(smooth))
    )


def as_direction(direction: Tensor, dim_z: int) -> Tensor:
    """A direction as a [1, dim_z] row; accepts the released [dim_z] or [1, dim_z] tensors."""
    if tuple(direction.shape) not in ((dim_z,), (1, dim_z)):
        raise ValueError(f"direction must have shape [{dim_z}] or [1, {dim_z}], got {list(direction.shape)}")
    return direction.reshape(1, dim_z)


def require_eval(G: Generator) -> None:
    """The reference runs G in eval mode only (stored BN statistics, frozen spectral-norm vectors)."""
    if G.training:
        raise ValueError("the generator must be in eval mode: call G.eval() first")


def apply_rules(images: Tensor, shifted: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """Masks and filter verdicts for a batch of images and their shifted versions, vectorised over the batch."""
    bimodal = maxes_ok(shifted) if rules.maxes_filter else None
    return filter_masks(images, raw_masks(images, shifted, rules.rule), rules, bimodal)


def filter_masks(images: Tensor, masks: Tensor, rules: MaskRules = MaskRules(),
                 bimodal: Tensor | None = None) -> SynthesisResult:
    """The mask filters of ``rules`` on masks [B, H, W] of ``images`` [B, 3, H, W], from a shift or from elsewhere
    (a segmentation model's, for self-training): components, area, then refinement and the consistency and
    border filters. ``bimodal`` is the maxes filter's verdict, which needs the shifted images (None: all pass)."""
    if rules.connected_components:
        masks = components_filter(masks)
    fits = area_ok(masks, rules.max_fraction)
    bimodal = torch.ones_like(fits) if bimodal is None else bimodal
    return beyond_reference(SynthesisResult(images, masks.long(), fits, bimodal), rules)


@torch.no_grad()
def synthesize(G: Generator, z: Tensor, direction: Tensor, rules: MaskRules = MaskRules()) -> SynthesisResult:
    """Masks and verdicts for latents z [B, dim_z] without refilling: one generator forward for both images
    (in chunks of `CPU_LATENT_CHUNK` latents on a CPU)."""
    require_eval(G)
    z = z.to(G.device)
    shift = rules.r * as_direction(direction, G.dim_z).to(z)
    chunk = forward_chunk(G, len(z))
    images, shifted = (torch.cat(parts) for parts in zip(*(G.pair(part, shift) for part in z.split(chunk))))
    return apply_rules(images, shifted, rules)


def forward_chunk(G: Generator, n: int) -> int:
    """How many of n latents to put through G in one forward: `CPU_LATENT_CHUNK` on a CPU, all of them elsewhere."""
    return CPU_LATENT_CHUNK if G.device.type == "cpu" else max(n, 1)


def prefer_channels_last(G: Generator) -> Generator:
    """On a CPU, stores G's weights channels-last (in place): its small convolutions then run about 2x faster.

    Outputs change only by float rounding (about 1e-5); on other devices G is returned unchanged.
    """
    if G.device.type == "cpu":
        G.to(memory_format=torch.channels_last)
    return G


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
def synthesize_per_image(
    G: Generator, z: Tensor, direction: Tensor, rules: MaskRules = MaskRules()
) -> SynthesisResult:
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


def _cpu_generator(rng: int | torch.Generator | None) -> torch.Generator:
    """A CPU torch.Generator: the one given, one seeded with the given int, or one seeded at random."""
    if isinstance(rng, torch.Generator):
        return rng
    gen = torch.Generator()
    if rng is None:
        gen.seed()
    else:
        gen.manual_seed(rng)
    return gen


class MaskSynthesizer:
    """Batches of (image, mask) pairs that pass the filters, from N(0, I) or from embeddings plus noise.

    ``embeddings`` is an array [N, dim_z] (a memory-mapped ``.npy`` works; only the drawn rows are read):
    z is a row drawn uniformly with replacement, plus ``z_noise`` times N(0, I). ``rng`` (a seed or a CPU
    ``torch.Generator``) makes the latents, and so the batches, repeat.
    """

    def __init__(
        self,
        G: Generator,
        direction: Tensor,
        r: float = 5.0,
        rule: Rule = "lighting",
        max_fraction: float = 0.5,
        maxes_filter: bool = True,
        connected_components: bool = True,
        refine: Refinement = "none",
        min_consistency: float = 0.0,
        max_border: float = 1.0,
        embeddings: np.ndarray | Tensor | None = None,
        z_noise: float = 0.0,
        batch_size: int = 95,
        max_tries: int = 100,
        rng: int | torch.Generator | None = None,
    ):
        require_eval(G)
        prefer_channels_last(G)
        if embeddings is not None and (embeddings.ndim != 2 or embeddings.shape[1] != G.dim_z or len(embeddings) == 0):
            raise ValueError(f"embeddings must have shape [N >= 1, {G.dim_z}], got {list(embeddings.shape)}")
        self.G = G
        self.direction = as_direction(direction, G.dim_z)
        self.rules = MaskRules(r, rule, max_fraction, maxes_filter, connected_components, refine, min_consistency,
                               max_border)
        self.embeddings = embeddings
        self.z_noise = z_noise
        self.batch_size = batch_size
        self.max_tries = max_tries
        self.seed = rng if isinstance(rng, int) else None
        self.rng = _cpu_generator(rng)
        self.n_generated = 0
        self.n_kept = 0

    def sample_z(self, n: int) -> Tensor:
        """n latents on the generator's device, drawn on the CPU so a seed repeats on any device."""
        if self.embeddings is None:
            return torch.randn(n, self.G.dim_z, generator=self.rng).to(self.G.device)
        index = torch.randint(len(self.embeddings), (n,), generator=self.rng)
        if isinstance(self.embeddings, Tensor):
            rows = self.embeddings[index.to(self.embeddings.device)].cpu()
        else:
            rows = torch.from_numpy(np.asarray(self.embeddings[index.numpy()]))
        rows = rows.float()
        if self.z_noise > 0:
            rows = rows + self.z_noise * torch.randn(rows.shape, generator=self.rng)
        return rows.to(self.G.device)

    def batch(self, batch_size: int | None = None, z: Tensor | None = None) -> SyntheticBatch:
        """``batch_size`` survivors, drawing fresh latents until enough pass (``z``, if given, is tried first)."""
        n = batch_size or self.batch_size
        kept: list[SyntheticBatch] = []
        count = rejected_area = rejected_maxes = rejected_consistency = rejected_border = generated = 0
        for attempt in range(self.max_tries):
            latents = z if attempt == 0 and z is not None else self.sample_z(n)
            result = synthesize(self.G, latents, self.direction, self.rules)
            keep = result.keep
            kept.append(SyntheticBatch(result.images[keep], result.masks[keep], latents.to(keep.device)[keep]))
            area_out, maxes_out, passed = torch.stack([~result.area_ok, ~result.maxes_ok, keep]).sum(1).tolist()
            generated += len(keep)
            rejected_area += area_out
            rejected_maxes += maxes_out
            if result.consistent_ok is not None:
                rejected_consistency += int((~result.consistent_ok).sum())
            if result.border_ok is not None:
                rejected_border += int((~result.border_ok).sum())
            count += passed
            if count >= n:
                break
        self.n_generated += generated
        self.n_kept += count
        if count < n:
            raise RuntimeError(
                f"mask synthesis kept {count} of the {n} samples needed after {self.max_tries} tries "
                f"({generated} latents): the area filter (foreground fraction < {self.rules.max_fraction}) "
                f"rejected {rejected_area}, the maxes filter (>= {MIN_MAXIMA} histogram maxima) "
                f"rejected {rejected_maxes}"
                + (f", the consistency filter (IoU with the GrabCut re-fit >= {self.rules.min_consistency}) "
                   f"rejected {rejected_consistency}" if self.rules.min_consistency > 0 else "")
                + (f", the border filter (mask on <= {self.rules.max_border} of the image frame) "
                   f"rejected {rejected_border}" if self.rules.max_border < 1 else "")
            )
        return SyntheticBatch(*(torch.cat(parts)[:n] for parts in zip(*kept)))

    def batch_at(self, step: int, batch_size: int | None = None) -> SyntheticBatch:
        """The batch of training step ``step``, from latents seeded by (seed, step): a resumed run sees the same data."""
        if self.seed is None:
            raise ValueError("batch_at needs a synthesizer created with an integer seed (rng=<int>)")
        saved, self.rng = self.rng, torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        try:
            return self.batch(batch_size)
        finally:
            self.rng = saved

    def __call__(self, step: int) -> tuple[Tensor, Tensor]:
        """(images, masks) of training step ``step``: the batch-source protocol of ``helpers.segmentation``."""
        images, masks, _ = self.batch_at(step)
        return images, masks

    def shard(self, shard_index: int, n: int) -> dict[str, np.ndarray]:
        """``n`` pairs for HDF5 shard ``shard_index`` (uint8 images and masks, float32 z), repeatable per shard."""
        images, masks, z = self.batch_at(shard_index, n)
        return {"images": to_uint8(images),
                "masks": masks.byte().cpu().numpy(), "z": z.float().cpu().numpy()}

    def __iter__(self) -> Iterator[SyntheticBatch]:
        """An endless stream of batches of the default size."""
        while True:
            yield self.batch()
