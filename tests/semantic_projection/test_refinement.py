import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from helpers.core.runs import settings_tag
from helpers.segmentation import UNet
from helpers.segmentation.inference import inference_autocast
from helpers.segmentation.shards import ShardDataset
from helpers.semantic_projection.dataset import draw_inputs, generate_dataset
from helpers.semantic_projection.decoder import build_decoder, load_decoder, predict
from helpers.semantic_projection.fitting import IGNORE_INDEX, FitConfig, LabelledLatent, samples_fingerprint
from helpers.semantic_projection.refinement import (
    DihedralBatches,
    HeldOut,
    MaskRefiner,
    RefinerConfig,
    fit_refiner,
    fold_indices,
    held_out_predictions,
    refiner_input,
    train_refiner,
)

TINY_DECODER = FitConfig(num_classes=2, width=8, epochs=1, min_epoch_size=2, checkpoint_every=100)


def _samples(G, n):
    """Latents whose labels mark the left columns positive, the right ones negative, the middle ignored."""
    z, seeds = draw_inputs(G, 0, range(n))
    labels = np.full((G.resolution, G.resolution), IGNORE_INDEX, np.int64)
    labels[:, :20], labels[:, 44:] = 1, 0
    return [LabelledLatent(z[i], labels, seeds[i], None, f"s{i}") for i in range(n)]


def _discs(n, seed):
    """Images with one bright square-ish blob on noise, its exact mask, and 'decoder' probabilities that
    are a blurred disc around it: rounder and larger than the object, as the decoder's masks are."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, 32, 32, 3)).astype(np.uint8)
    masks = np.zeros((n, 32, 32), np.int64)
    for i in range(n):
        r, c = rng.integers(6, 20, size=2)
        h, w = rng.integers(4, 10, size=2)
        masks[i, r : r + h, c : c + w] = 1
    images[masks == 1] = 220
    blurred = np.stack([ndi.gaussian_filter(ndi.binary_dilation(m, iterations=2).astype(float), 2) for m in masks])
    probs = np.stack([1 - blurred, blurred], 1).astype(np.float32)
    return images, probs, masks


def test_fold_indices_partition_the_samples():
    assert fold_indices(10, 4) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert fold_indices(3, 4) == [[0], [1], [2]]
    assert sorted(i for fold in fold_indices(20, 4) for i in fold) == list(range(20))


def test_held_out_predictions_come_from_decoders_that_never_saw_the_sample(tmp_path, stylegan):
    samples = _samples(stylegan, 5)
    held = held_out_predictions(stylegan, samples, tmp_path, TINY_DECODER, folds=2, progress=False)
    assert held.images.shape == (5, 64, 64, 3) and held.probs.shape == (5, 2, 64, 64)
    np.testing.assert_array_equal(held.labels, np.stack([s.labels for s in samples]))
    for f, fold in enumerate([[0, 2, 4], [1, 3]]):
        path = tmp_path / f"fold_{f}" / "decoder.pt"
        meta = torch.load(path, weights_only=True)["meta"]
        assert meta["fingerprint"] == samples_fingerprint([s for i, s in enumerate(samples) if i not in fold])
        for i in fold:  # each sample's probabilities are those of the decoder that left its fold out
            s = samples[i]
            expected = predict(stylegan, load_decoder(path), s.z, [s.noise_seed]).probs[0]
            np.testing.assert_allclose(held.probs[i], expected, atol=1e-5)
    assert not np.allclose(held.probs[0], held.probs[1], atol=1e-3)
    with pytest.raises(ValueError, match="at least 2 annotations"):
        held_out_predictions(stylegan, samples[:1], tmp_path / "one", TINY_DECODER, progress=False)
    with pytest.raises(ValueError, match="at least 2 folds"):
        held_out_predictions(stylegan, samples, tmp_path / "one", TINY_DECODER, folds=1, progress=False)
    with pytest.raises(ValueError, match="folds must be at least 2"):
        RefinerConfig(folds=1)


def test_dihedral_batches_are_seeded_and_keep_inputs_and_labels_aligned():
    images, probs, masks = _discs(6, 0)
    masks[:, 0, :3] = IGNORE_INDEX  # an asymmetric mark (3 pixels of the top row, from the left) moves with the image
    batches = DihedralBatches(HeldOut(images, probs, masks), batch_size=5, seed=3)
    seen = set()
    for step in range(60):
        x, y = batches(step)
        assert x.shape == (5, 5, 32, 32) and y.shape == (5, 32, 32)
        labelled = y != IGNORE_INDEX
        assert torch.equal((x[:, 0] > 0)[labelled], (y == 1)[labelled])  # bright pixels are the positives
        for row in y:  # the 8 flips and turns put the mark in 8 different places
            seen.add(tuple(map(tuple, torch.nonzero(row == IGNORE_INDEX).tolist())))
    assert len(seen) == 8
    x0, y0 = batches(7)
    x1, y1 = DihedralBatches(HeldOut(images, probs, masks), batch_size=5, seed=3)(7)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(batches(8)[0], x0)


def test_refiner_input_stacks_image_and_probabilities():
    images, probs, _ = _discs(2, 1)
    x = refiner_input(images, probs)
    assert x.shape == (2, 5, 32, 32) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x[:, 3:].numpy(), probs * 2 - 1)


def test_refiner_corrects_masks_that_are_rounder_than_the_objects(tmp_path):
    train, test = _discs(24, 2), _discs(40, 3)
    refiner = train_refiner(
        HeldOut(*train), tmp_path, RefinerConfig(members=1, width=8, steps=150, batch_size=8), progress=False
    )
    images, probs, masks = test

    def iou(pred):
        return ((pred == 1) & (masks == 1)).sum() / ((pred == 1) | (masks == 1)).sum()

    before, after = iou(probs.argmax(1)), iou(refiner(images, probs))
    assert before < 0.75 and after > before + 0.1
    # a finished run loads instead of training again
    log = (tmp_path / "member_0" / "log.jsonl").read_bytes()
    again = train_refiner(
        HeldOut(*train), tmp_path, RefinerConfig(members=1, width=8, steps=150, batch_size=8), progress=False
    )
    assert again.fingerprint == refiner.fingerprint and (tmp_path / "member_0" / "log.jsonl").read_bytes() == log


def test_fit_refiner_refuses_a_folder_of_other_annotations(tmp_path, stylegan):
    samples = _samples(stylegan, 2)
    config = RefinerConfig(folds=2, members=2, width=4, steps=2, batch_size=2)
    refiner = fit_refiner(stylegan, samples, tmp_path, TINY_DECODER, config, progress=False)
    assert json.loads((tmp_path / "refiner.json").read_text())["refiner"]["steps"] == 2
    assert len(refiner.models) == 2 and (tmp_path / "refiner" / "member_1" / "checkpoint.pt").exists()
    assert (
        fit_refiner(stylegan, samples, tmp_path, TINY_DECODER, config, progress=False).fingerprint
        == refiner.fingerprint
    )
    assert config.member_seed(1) == 1 and RefinerConfig(seed=1, members=2).member_seed(0) == 2  # no shared member
    with pytest.raises(ValueError, match="other annotations or settings"):
        fit_refiner(stylegan, _samples(stylegan, 3), tmp_path, TINY_DECODER, config, progress=False)


def test_ensemble_averages_the_members_probabilities():
    class Constant(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor(logits).view(1, 2, 1, 1))

        def forward(self, x):
            return self.logits.expand(len(x), 2, *x.shape[2:])

    images, probs, _ = _discs(2, 4)
    sure, unsure = Constant([0.0, 3.0]), Constant([0.4, 0.0])  # p(object) 0.95 and 0.40: mean 0.68
    p = MaskRefiner([sure, unsure]).probabilities(images, probs)
    np.testing.assert_allclose(
        p[:, 1].numpy(), (torch.sigmoid(torch.tensor(3.0)) + torch.sigmoid(torch.tensor(-0.4))) / 2, rtol=1e-6
    )
    assert (MaskRefiner([sure, unsure])(images, probs) == 1).all() and (MaskRefiner([unsure])(images, probs) == 0).all()
    assert MaskRefiner([sure]).fingerprint != MaskRefiner([sure, unsure]).fingerprint


def test_members_score_in_their_training_precision_with_the_batches_of_one_pass():
    """The mean of each member's `predict_softmax` over the whole set equals averaging batch by batch under
    `inference_autocast` (70 images: a batch of 64 and one of 6), bit for bit."""
    images, probs, _ = _discs(70, 5)
    torch.manual_seed(0)
    members = [UNet(n_channels=5, n_classes=2, width=4).to(memory_format=torch.channels_last).eval() for _ in range(2)]
    x = refiner_input(images, probs)
    with torch.no_grad(), inference_autocast("cpu"):
        by_batch = torch.cat(
            [torch.stack([m(x[i : i + 64]).float().softmax(1) for m in members]).mean(0) for i in (0, 64)]
        )
    assert torch.equal(MaskRefiner(members).probabilities(images, probs), by_batch)


def test_generated_dataset_takes_the_refiners_masks(tmp_path, stylegan):
    class AllObject:
        fingerprint = "all-object"

        def __call__(self, images, probs):
            assert probs.shape == (len(images), 2, 64, 64)
            return np.ones(images.shape[:3], np.uint8)

    torch.manual_seed(0)
    decoder = build_decoder(stylegan, width=8)
    folder = generate_dataset(
        stylegan, decoder, tmp_path / "gen", n_total=3, shard_size=2, batch_size=2, progress=False, refiner=AllObject()
    )
    assert (ShardDataset(folder).read(range(3))["masks"] == 1).all()
    assert json.loads((folder / "manifest.json").read_text())["attrs"]["refiner"] == "all-object"
    with pytest.raises(ValueError, match="shape"):

        class Wrong(AllObject):
            def __call__(self, images, probs):
                return np.ones((len(images), 32, 32), np.uint8)

        generate_dataset(
            stylegan, decoder, tmp_path / "wrong", n_total=2, shard_size=2, progress=False, refiner=Wrong()
        )
    with pytest.raises(ValueError, match="different dataset"):  # the plain decoder's pairs are another dataset
        generate_dataset(stylegan, decoder, tmp_path / "gen", n_total=3, shard_size=2, batch_size=2, progress=False)


def test_settings_tag_follows_the_settings():
    assert settings_tag(TINY_DECODER) == settings_tag(
        FitConfig(num_classes=2, width=8, epochs=1, min_epoch_size=2, checkpoint_every=100)
    )
    assert settings_tag(TINY_DECODER) != settings_tag(
        FitConfig(num_classes=2, width=8, epochs=2, min_epoch_size=2, checkpoint_every=100)
    )
    assert len(settings_tag(RefinerConfig())) == 10
