"""Mask synthesis (helpers.direction_masks.synthesis): the reference rules on hand-made tensors, and the batched
path against the per-image reference procedure on the shipped default generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.direction_masks.direction_files import as_direction
from helpers.direction_masks.reference_path import (
    apply_rules_per_image,
    components_filter_single,
    count_maxima_single,
    synthesize_per_image,
)
from helpers.direction_masks.synthesis import (
    STOP_CHUNK,
    MaskRules,
    MaskSynthesizer,
    SyntheticBatch,
    apply_rules,
    area_ok,
    border_fraction,
    components_filter,
    count_maxima,
    gray,
    histogram_counts,
    maxes_ok,
    raw_masks,
    synthesize,
)
from helpers.gans import load, to_uint8
from helpers.gans.base import Generator
from helpers.gans.shift_spaces import with_shift_space
from helpers.metrics import mask_iou
from helpers.segmentation.grabcut import grabcut_refine


class RowwiseG(Generator):
    """Wraps a generator so every row is its own forward pass (batch-invariant floats) and records the inputs."""

    def __init__(self, inner: Generator):
        super().__init__()
        self.inner = inner
        self.dim_z, self.resolution = inner.dim_z, inner.resolution
        self.calls: list[torch.Tensor] = []
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.clone())
        return torch.cat([self.inner(row) for row in z.split(1)])


@pytest.fixture(scope="module")
def G():
    return load("default-biggan")


@pytest.fixture(scope="module")
def direction(G):
    h = torch.randn(G.dim_z, generator=torch.Generator().manual_seed(0))
    return h / h.norm()


def _image(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(1, 3, 1, 1)


def test_gray_uses_reference_coefficients_on_raw_range():
    assert gray(_image(1, 0, 0)).item() == torch.tensor(0.2989).item()
    assert gray(_image(0, 1, 0)).item() == torch.tensor(0.5870).item()
    assert gray(_image(0, 0, -1)).item() == torch.tensor(-0.1140).item()
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(gray(x), 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2])


def test_lighting_mask_is_strictly_brighter():
    images = torch.zeros(1, 3, 1, 3)
    shifted = images.clone()
    shifted[0, :, 0, 1] = 1e-3  # brighter
    shifted[0, :, 0, 2] = -1e-3  # darker; pixel 0 unchanged
    assert raw_masks(images, shifted, "lighting").tolist() == [[[False, True, False]]]


def test_mean_threshold_is_strict_and_per_image():
    shifted = torch.tensor([[0.0, 0.0, 0.5, -0.5], [0.4, 0.6, 0.4, 0.6]]).view(2, 1, 1, 4).expand(2, 3, 1, 4)
    masks = raw_masks(torch.zeros_like(shifted), shifted, "mean_thr")
    # Image 0 has mean gray exactly 0, so the two zero pixels stay background; image 1 is judged on its own mean.
    assert masks.tolist() == [[[False, False, True, False]], [[False, True, False, True]]]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule"):
        MaskRules(rule="intensity")


def test_area_filter_is_strict_without_lower_bound():
    masks = torch.zeros(4, 4, 4, dtype=torch.long)
    masks[0].view(-1)[:8] = 1  # exactly half: rejected
    masks[1].view(-1)[:7] = 1
    masks[3] = 1
    assert area_ok(masks).tolist() == [False, True, True, False]
    assert area_ok(masks, max_fraction=7 / 16).tolist() == [False, False, True, False]


def _edge_values() -> torch.Tensor:
    """Bin edges of histc and of the exact sixths, their float32 neighbours, the range ends and outside values."""
    centres = torch.cat([torch.linspace(-1, 1, 13), torch.tensor([-1 + k / 6 for k in range(13)])])
    values, up, down = [centres], centres.clone(), centres.clone()
    for _ in range(8):
        up, down = torch.nextafter(up, torch.tensor(2.0)), torch.nextafter(down, torch.tensor(-2.0))
        values += [up, down]
    special = torch.tensor([-1.0, 1.0, -1.5, 1.5, 1e30, -1e30, float("inf"), -float("inf"), float("nan")])
    return torch.cat(values + [special])


def test_histogram_counts_equal_torch_histc_per_image():
    values = _edge_values()
    one_each = values.view(-1, 1, 1, 1).expand(-1, 3, 1, 1)
    reference = torch.stack([torch.histc(x, 12, -1, 1) for x in one_each]).long()
    assert torch.equal(histogram_counts(one_each), reference)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(20, 3, 8, 8, generator=gen) * 2.4 - 1.2
    spots = torch.randint(0, images[0].numel(), (20, 60), generator=gen)
    images.view(20, -1).scatter_(1, spots, values[torch.randint(0, len(values), (20, 60), generator=gen)])
    reference = torch.stack([torch.histc(x, 12, -1, 1) for x in images]).long()
    assert torch.equal(histogram_counts(images), reference)


def _maxima_loop(counts: list[int]) -> int:
    padded = [0, *counts, 0]
    s = [padded[i - 1] + padded[i] + padded[i + 1] for i in range(1, len(padded) - 1)]
    return sum((i == 0 or s[i] >= s[i - 1]) and (i == len(s) - 1 or s[i] >= s[i + 1]) for i in range(len(s)))


def test_count_maxima_hand_cases():
    cases = {
        (1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0): 1,  # unimodal
        (1, 5, 9, 5, 1, 1, 2, 6, 10, 6, 2, 1): 2,  # two peaks
        (1, 2, 3, 3, 2, 1, 2, 3, 4, 5, 6, 7): 3,  # a tie at the top counts twice, the end bin only if >= its neighbour
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0): 12,  # all ties: every bin is a (non-strict) maximum
        (0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0): 10,  # a spike smooths into a plateau of three; empty runs count too
    }
    for counts, expected in cases.items():
        assert _maxima_loop(list(counts)) == expected
        assert count_maxima(torch.tensor([counts])).item() == expected


def test_count_maxima_matches_loop_on_random_counts_with_ties():
    counts = torch.randint(0, 3, (200, 12), generator=torch.Generator().manual_seed(3))
    assert count_maxima(counts).tolist() == [_maxima_loop(row) for row in counts.tolist()]


def test_maxes_filter_equals_reference_on_images_with_edge_values():
    gen = torch.Generator().manual_seed(4)
    images = 0.3 * torch.randn(64, 3, 16, 16, generator=gen)  # mostly unimodal, some not
    edges = _edge_values()
    spots = torch.randint(0, images[0].numel(), (64, 40), generator=gen)
    images.view(64, -1).scatter_(1, spots, edges[torch.randint(0, len(edges), (64, 40), generator=gen)])
    expected = [count_maxima_single(x) >= 2 for x in images]
    assert maxes_ok(images).tolist() == expected
    assert 0 < sum(expected) < len(expected)


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


def test_components_use_8_connectivity_and_strict_ratio():
    mask = _mask(
        [
            "##.....",
            "##.....",
            "..#....",  # joined to the 2x2 block diagonally: one component of area 5
            ".......",
            "......#",  # area 1: ratio exactly 0.2, removed
        ]
    )
    expected = mask.copy()
    expected[4, 6] = False
    assert np.array_equal(components_filter_single(mask), expected)
    assert np.array_equal(components_filter(torch.from_numpy(mask)[None])[0].numpy(), expected)
    kept = mask.copy()
    kept[3, 6] = True  # area 2 of 5 = 0.4 > 0.2
    assert np.array_equal(components_filter_single(kept), kept)
    assert not components_filter_single(np.zeros((3, 3), dtype=bool)).any()


def test_batched_components_do_not_connect_images():
    big = _mask(["#####", "#####", ".....", ".....", "...##"])  # area 10, plus area 2 (ratio 0.2)
    small = _mask([".....", ".....", ".....", ".....", "...##"])  # the same 2 pixels alone: largest, kept
    out = components_filter(torch.from_numpy(np.stack([big, small, big])))
    assert np.array_equal(out[0].numpy(), components_filter_single(big))
    assert not out[0, 4].any()
    assert np.array_equal(out[1].numpy(), small)
    assert np.array_equal(out[2].numpy(), out[0].numpy())


def test_batched_components_equal_per_image_on_random_masks():
    rng = np.random.default_rng(5)
    stack = rng.random((12, 16, 16)) < rng.uniform(0.1, 0.7, (12, 1, 1))
    stack[3] = False
    out = components_filter(torch.from_numpy(stack))
    assert out.dtype == torch.bool
    assert np.array_equal(out.numpy(), np.stack([components_filter_single(m) for m in stack]))


def test_direction_shapes(G, direction):
    assert as_direction(direction, G.dim_z).shape == (1, G.dim_z)
    assert as_direction(direction[None], G.dim_z).shape == (1, G.dim_z)
    with pytest.raises(ValueError, match="shape"):
        as_direction(torch.zeros(2, G.dim_z), G.dim_z)


@pytest.mark.parametrize("rule", ["lighting", "mean_thr"])
def test_fast_path_is_bit_identical_to_per_image_path(G, direction, rule):
    rowwise = RowwiseG(G)
    z = G.sample_z(12, seed=6)
    rules = MaskRules(rule=rule)
    fast = synthesize(rowwise, z, direction, rules)
    (inputs,) = rowwise.calls  # one forward for G(z) and G(z + r h)
    assert torch.equal(inputs, torch.cat([z, z + 5.0 * direction]))
    slow = synthesize_per_image(G, z, direction, rules)
    assert torch.equal(fast.images, slow.images)
    assert fast.masks.dtype == slow.masks.dtype == torch.long
    assert torch.equal(fast.masks, slow.masks)
    assert torch.equal(fast.area_ok, slow.area_ok) and torch.equal(fast.maxes_ok, slow.maxes_ok)
    for verdicts in (fast.area_ok, fast.maxes_ok):  # both outcomes of each filter are covered
        assert verdicts.any() and not verdicts.all()
    assert not torch.equal(fast.masks.bool(), raw_masks(*rowwise(inputs).chunk(2), rule))  # cleaning removed pixels


def test_filters_can_be_switched_off(G, direction):
    z = G.sample_z(6, seed=7)
    raw = synthesize(G, z, direction, MaskRules(maxes_filter=False, connected_components=False))
    assert raw.maxes_ok.all()
    images, shifted = G(torch.cat([z, z + 5.0 * direction])).chunk(2)
    assert torch.equal(raw.masks, (gray(images) < gray(shifted)).long())


@pytest.mark.parametrize(
    "rule,refine,min_consistency,max_border",
    [
        ("lighting", "none", 0.0, 1.0),
        ("mean_thr", "none", 0.0, 1.0),
        ("lighting", "grabcut", 0.0, 1.0),
        ("lighting", "grabcut", 0.7, 1.0),
        ("mean_thr", "none", 0.0, 0.1),
        ("lighting", "grabcut", 0.7, 0.1),
    ],
)
def test_vectorised_rules_are_bit_identical_to_per_image_rules(G, direction, rule, refine, min_consistency, max_border):
    z = G.sample_z(24, seed=10)
    images, shifted = G(torch.cat([z, z + 5.0 * direction])).chunk(2)
    rules = MaskRules(rule=rule, refine=refine, min_consistency=min_consistency, max_border=max_border)
    fast, slow = apply_rules(images, shifted, rules), apply_rules_per_image(images, shifted, rules)
    assert torch.equal(fast.masks, slow.masks) and torch.equal(fast.keep, slow.keep)
    assert torch.equal(fast.area_ok, slow.area_ok) and torch.equal(fast.maxes_ok, slow.maxes_ok)


def test_batched_generator_agrees_with_per_image_path(G, direction):
    """A batched forward rounds differently from single-row forwards (about 1e-6), so only near-ties may differ."""
    z = G.sample_z(32, seed=8)
    fast, slow = synthesize(G, z, direction), synthesize_per_image(G, z, direction)
    assert (fast.images - slow.images).abs().max() < 1e-4
    assert (fast.masks != slow.masks).float().mean() < 1e-3
    assert (fast.keep != slow.keep).sum() <= 1


def test_synthesizer_refills_until_the_batch_is_full(G, direction):
    """The area threshold is set between the foreground fractions of the first draw, so a refill must happen."""
    first = MaskSynthesizer(G, direction, batch_size=6, rng=9).sample_z(6)
    fractions = synthesize(G, first, direction, MaskRules(rule="mean_thr", max_fraction=1.0)).masks.float().mean((1, 2))
    threshold = fractions.sort().values[3].item()  # at most 3 of the first 6 are strictly below it
    rowwise = RowwiseG(G)
    synth = MaskSynthesizer(rowwise, direction, rule="mean_thr", max_fraction=threshold, batch_size=6, rng=9)
    batch = synth.batch()
    R = G.resolution
    assert batch.images.shape == (6, 3, R, R) and batch.masks.shape == (6, R, R)
    assert batch.masks.dtype == torch.long and set(batch.masks.unique().tolist()) <= {0, 1}
    assert batch.images.abs().max() <= 1
    assert synth.n_generated > 6 and synth.n_generated % 6 == 0 and synth.n_kept >= 6
    again = synthesize(rowwise, batch.z, direction, synth.rules)  # the returned z reproduce the batch
    assert again.keep.all()
    assert torch.equal(again.masks, batch.masks) and torch.equal(again.images, batch.images)


def test_synthesizer_raises_with_filter_counts(G, direction):
    synth = MaskSynthesizer(G, direction, max_fraction=0.0, maxes_filter=False, batch_size=4, max_tries=3, rng=0)
    expected = r"kept 0 of the 4 .* 3 tries \(12 latents\).* area filter .* rejected 12, .*maxes filter .* rejected 0"
    with pytest.raises(RuntimeError, match=expected):
        synth.batch()


def test_seeds_repeat(G, direction):
    batches = [MaskSynthesizer(G, direction, rule="mean_thr", batch_size=4, rng=seed).batch() for seed in (11, 11, 12)]
    for a, b in zip(batches[0], batches[1]):
        assert torch.equal(a, b)
    assert not torch.equal(batches[0].z, batches[2].z)
    from_generator = MaskSynthesizer(G, direction, rule="mean_thr", batch_size=4, rng=torch.Generator().manual_seed(11))
    assert torch.equal(from_generator.batch().z, batches[0].z)


def test_given_z_is_tried_first(G, direction):
    synth = MaskSynthesizer(G, direction, rule="mean_thr", maxes_filter=False, max_fraction=1.01, batch_size=3, rng=0)
    z = G.sample_z(5, seed=13)
    assert torch.equal(synth.batch(z=z).z, z[:3])


def test_embeddings_source_with_noise(G, direction, tmp_path):
    table = torch.arange(5 * G.dim_z, dtype=torch.float32).view(5, G.dim_z)
    np.save(tmp_path / "z.npy", table.numpy())
    mapped = np.load(tmp_path / "z.npy", mmap_mode="r")
    for source in (table, mapped):
        exact = MaskSynthesizer(G, direction, embeddings=source, rng=14).sample_z(400)
        rows = (exact[:, None] == table[None]).all(-1)
        assert (rows.sum(1) == 1).all()  # every z is one of the rows
        assert rows.any(0).all()  # drawn with replacement from all of them
    noisy = MaskSynthesizer(G, direction, embeddings=mapped, z_noise=0.2, rng=14).sample_z(400)
    residual = noisy - exact  # same seed: same rows, then the noise
    assert abs(residual.std().item() - 0.2) < 0.01 and abs(residual.mean().item()) < 0.01
    with pytest.raises(ValueError, match="embeddings"):
        MaskSynthesizer(G, direction, embeddings=table[:, :5])


def test_generator_must_be_in_eval_mode(direction):
    G = load("default-biggan").train()
    with pytest.raises(ValueError, match="eval"):
        synthesize(G, G.sample_z(1), direction)


def test_step_batches_repeat_and_feed_the_trainer_protocol(G, direction):
    synth = MaskSynthesizer(G, direction, batch_size=4, rng=3)
    first = synth.batch_at(7)
    synth.batch()  # drawing other batches in between does not change a step's batch
    again = synth.batch_at(7)
    assert torch.equal(first.z, again.z) and torch.equal(first.masks, again.masks)
    assert not torch.equal(synth.batch_at(8).z, first.z)
    images, masks = synth(7)
    assert torch.equal(images, first.images) and torch.equal(masks, first.masks)
    shard = synth.shard(7, 4)
    assert shard["images"].dtype == np.uint8 and shard["images"].shape == (4, G.resolution, G.resolution, 3)
    assert np.array_equal(shard["masks"], first.masks.numpy().astype(np.uint8))
    assert np.array_equal(shard["z"], first.z.numpy())
    with pytest.raises(ValueError, match="integer seed"):
        MaskSynthesizer(G, direction, rng=torch.Generator()).batch_at(0)


def test_step_batches_of_a_noisy_generator_ignore_the_global_rng(noisy_stylegan2):
    """StyleGAN2 draws noise maps for each pair: a step's batch draws them from its own seed."""
    G = with_shift_space(noisy_stylegan2, "w")
    direction = torch.nn.functional.normalize(torch.randn(G.dim_z, generator=torch.Generator().manual_seed(1)), dim=0)
    synth = MaskSynthesizer(G, direction, max_fraction=1.0, maxes_filter=False, connected_components=False, rng=0)
    torch.manual_seed(0)
    first = synth.shard(2, 4)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    again = synth.shard(2, 4)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was


def test_synthesizer_stores_cpu_weights_channels_last_without_changing_masks(direction):
    G = load("default-biggan")
    z = G.sample_z(8, 5)
    before = synthesize(G, z, direction)
    MaskSynthesizer(G, direction)
    conv = next(m for m in G.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    after = synthesize(G, z, direction)
    assert (after.images - before.images).abs().max() < 1e-4
    assert (after.masks != before.masks).float().mean() < 1e-3


def test_masks_of_a_noisy_generator_come_from_the_shift_alone(noisy_stylegan2):
    """StyleGAN2 draws per-pixel noise: both images of a pair must get the same noise, or a zero shift
    would already mark every pixel that the noise happened to brighten."""
    G = noisy_stylegan2
    z = G.sample_z(4, seed=0)
    zero = torch.zeros(G.dim_z)
    for fn in (synthesize, synthesize_per_image):
        assert fn(G, z, zero, MaskRules(r=5.0)).masks.float().mean() < 0.01  # unshared noise marks about half


def test_refinement_changes_only_kept_masks_and_no_verdict(G, direction):
    z = G.sample_z(24, seed=10)
    images, shifted = G(torch.cat([z, z + 5.0 * direction])).chunk(2)
    plain = apply_rules(images, shifted)
    refined = apply_rules(images, shifted, MaskRules(refine="grabcut"))
    assert torch.equal(plain.area_ok, refined.area_ok) and torch.equal(plain.maxes_ok, refined.maxes_ok)
    assert torch.equal(plain.masks[~plain.keep], refined.masks[~plain.keep])
    assert not torch.equal(plain.masks[plain.keep], refined.masks[plain.keep])
    with pytest.raises(ValueError, match="refine must be"):
        MaskRules(refine="crf")


def test_consistency_filter_drops_exactly_the_masks_grabcut_disagrees_with(G, direction):
    z = G.sample_z(32, seed=11)
    images, shifted = G(torch.cat([z, z + 5.0 * direction])).chunk(2)
    plain = apply_rules(images, shifted)
    kept = plain.keep
    masks = plain.masks[kept].bool().numpy()
    agreement = mask_iou(masks, grabcut_refine(to_uint8(images[kept]), masks))
    assert 0 < (agreement >= 0.7).sum() < kept.sum()  # the filter has something to drop and something to keep
    filtered = apply_rules(images, shifted, MaskRules(min_consistency=0.7))
    assert torch.equal(filtered.masks, plain.masks)  # without refinement the masks stay the reference's
    assert torch.equal(filtered.area_ok, plain.area_ok) and torch.equal(filtered.maxes_ok, plain.maxes_ok)
    expected = kept.clone()
    expected[kept] = torch.from_numpy(agreement >= 0.7)
    assert torch.equal(filtered.keep, expected)
    both = apply_rules(images, shifted, MaskRules(refine="grabcut", min_consistency=0.7))
    assert torch.equal(both.keep, expected) and not torch.equal(both.masks[expected], plain.masks[expected])
    with pytest.raises(ValueError, match="min_consistency"):
        MaskRules(min_consistency=1.5)


def test_synthesizer_reports_the_consistency_filter_when_it_starves(G, direction):
    synth = MaskSynthesizer(G, direction, min_consistency=1.0, max_tries=2, rng=0)
    with pytest.raises(RuntimeError, match="the consistency filter .* rejected"):
        synth.batch(64)


def test_border_fraction_counts_the_frame_ring_once():
    masks = torch.zeros(3, 8, 8, dtype=torch.long)
    masks[1, 2:6, 2:6] = 1  # inside: touches no frame pixel
    masks[2, 0, :] = 1  # the top row: 8 of the 28 frame pixels
    assert border_fraction(masks).tolist() == [0.0, 0.0, pytest.approx(8 / 28)]
    assert border_fraction(torch.ones(1, 8, 8)).item() == 1.0


def test_border_filter_drops_exactly_the_masks_that_cover_the_frame(G, direction):
    z = G.sample_z(32, seed=11)
    images, shifted = G(torch.cat([z, z + 5.0 * direction])).chunk(2)
    plain = apply_rules(images, shifted)
    assert plain.border_ok is None
    on_frame = border_fraction(plain.masks)
    assert 0 < (plain.keep & (on_frame > 0.1)).sum() < plain.keep.sum()  # something to drop and something to keep
    filtered = apply_rules(images, shifted, MaskRules(max_border=0.1))
    assert torch.equal(filtered.masks, plain.masks)
    assert torch.equal(filtered.area_ok, plain.area_ok) and torch.equal(filtered.maxes_ok, plain.maxes_ok)
    assert torch.equal(filtered.keep, plain.keep & (on_frame <= 0.1))
    # with refinement the filter judges the re-fitted masks, the ones the pairs carry
    refined = apply_rules(images, shifted, MaskRules(refine="grabcut", max_border=0.1))
    assert torch.equal(refined.border_ok, border_fraction(refined.masks) <= 0.1)
    with pytest.raises(ValueError, match="max_border"):
        MaskRules(max_border=-0.1)


def test_synthesizer_reports_the_border_filter_when_it_starves(G, direction):
    synth = MaskSynthesizer(G, direction, max_border=0.0, max_fraction=1.0, maxes_filter=False, max_tries=1, rng=0)
    with pytest.raises(RuntimeError, match="the border filter .* rejected"):
        synth.batch(64)


def test_a_synthesizer_travels_to_other_processes_with_its_own_embedding_rows(tmp_path, direction):
    """Pickled for torchrun ranks, a whole memory-mapped .npy goes by name and a slice of it by its rows."""
    import pickle

    G = load("default-biggan")
    np.save(tmp_path / "e.npy", np.random.default_rng(0).standard_normal((10, G.dim_z)).astype(np.float32))
    whole = np.load(tmp_path / "e.npy", mmap_mode="r")
    for embeddings, by_name in [(whole, True), (whole[5:], False)]:
        synth = MaskSynthesizer(G, direction, embeddings=embeddings, rng=0)
        data = pickle.dumps(synth)
        again = pickle.loads(data)
        assert again.embeddings.shape == embeddings.shape and np.array_equal(again.embeddings, embeddings)
        assert (getattr(again.embeddings, "filename", None) is not None) == by_name  # re-opened, or the rows
        assert again.record() == synth.record()
    # re-extracted embeddings of the same shape in the same file are other data
    before = MaskSynthesizer(G, direction, embeddings=whole, rng=0).record()
    np.save(tmp_path / "e.npy", np.random.default_rng(1).standard_normal((10, G.dim_z)).astype(np.float32))
    after = MaskSynthesizer(G, direction, embeddings=np.load(tmp_path / "e.npy", mmap_mode="r"), rng=0).record()
    assert before["embeddings"]["shape"] == after["embeddings"]["shape"] and before != after


class ConvG(Generator):
    """A small random conv generator (16 px): cheap, and its batched convs round like a real generator's."""

    def __init__(self):
        super().__init__()
        self.dim_z, self.resolution = 8, 16
        torch.manual_seed(0)
        self.lift = torch.nn.Linear(8, 8 * 16 * 16)
        self.conv = torch.nn.Conv2d(8, 3, 3, padding=1)
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(self.lift(z).view(-1, 8, 16, 16)))


def test_a_batch_stops_at_the_latent_that_completes_it():
    """On a CPU latents are synthesised in parts of STOP_CHUNK; the batch is the first survivors of whole draws."""
    G, n = ConvG(), STOP_CHUNK + 16
    direction = torch.nn.functional.normalize(torch.randn(8, generator=torch.Generator().manual_seed(2)), dim=0)
    synth = MaskSynthesizer(G, direction, rule="mean_thr", maxes_filter=False, batch_size=n, rng=3)
    batch = synth.batch()
    gen, survivors = torch.Generator().manual_seed(3), []
    while sum(len(s.z) for s in survivors) < n:  # whole draws of n latents, each synthesised at once
        z = torch.randn(n, G.dim_z, generator=gen)
        result = synthesize(G, z, direction, synth.rules)
        survivors.append(SyntheticBatch(result.images[result.keep], result.masks[result.keep], z[result.keep]))
    for ours, whole in zip(batch, (torch.cat(parts)[:n] for parts in zip(*survivors))):
        assert torch.equal(ours, whole)
    assert len(survivors) >= 2 and synth.n_generated < n * len(survivors)  # the last draw was cut short
