import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from helpers.core.runtime import amp_dtype
from helpers.data.folders import Sample
from helpers.segmentation import (
    ArrayBatches,
    DihedralAverage,
    SegmentationInference,
    SegmentationSettings,
    SegmentationTrainer,
    ShardBatches,
    ShardDataset,
    UNet,
    batch_function,
    class_probabilities,
    dihedral,
    evaluate_arrays,
    evaluate_folder,
    evaluate_labels,
    mean_loss_on,
    min_edge_size,
    multiclass_scores,
    predict_labels,
    predict_proba,
    undo_dihedral,
    write_shards,
)
from helpers.segmentation.inference import inference_autocast
from helpers.segmentation.shards import link_shared_shards, shard_path


def squares(n, size=32, seed=0):
    """Dark noisy images with one bright square each, and the square masks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        side = rng.integers(8, 16)
        y, x = rng.integers(0, size - side, 2)
        masks[i, y : y + side, x : x + side] = True
    images[masks] = rng.integers(170, 255, (masks.sum(), 3), dtype=np.uint8)
    return images, masks


class Oracle(nn.Module):
    """Parameterless 'perfect' model for bright-on-dark images: foreground logit grows with brightness."""

    def __init__(self, n_classes=2):
        super().__init__()
        self.n_classes = n_classes
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        s = 20 * x.mean(1, keepdim=True)
        return torch.cat([-s, s, torch.zeros_like(s).expand(-1, self.n_classes - 2, -1, -1)], 1)


def settings(**kw):
    return SegmentationSettings(**{"steps": 6, "lr": 1e-2, "checkpoint_every": 100, "log_every": 1, **kw})


# --- U-Net ------------------------------------------------------------------------------------------------------


def test_unet_reference_layout():
    model = UNet()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 13_395_394
    assert len(state) == 128
    assert [k for k in state if k.startswith("inc.")][:5] == [
        "inc.double_conv.0.weight",
        "inc.double_conv.0.bias",
        "inc.double_conv.1.weight",
        "inc.double_conv.1.bias",
        "inc.double_conv.1.running_mean",
    ]
    assert {k.split(".")[0] for k in state} == {
        "inc",
        *(f"down{k}" for k in range(1, 5)),
        *(f"up{k}" for k in range(1, 5)),
        "outc",
    }
    assert state["down4.maxpool_conv.1.double_conv.3.weight"].shape == (512, 512, 3, 3)
    assert state["up1.conv.double_conv.0.weight"].shape == (256, 1024, 3, 3)
    assert state["up4.conv.double_conv.4.num_batches_tracked"].shape == ()
    assert state["outc.conv.weight"].shape == (2, 64, 1, 1) and "outc.conv.bias" in state
    assert all(k.split(".")[1] in {"double_conv", "maxpool_conv", "conv"} for k in state)


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("size", [(16, 16), (17, 23), (45, 30)])
def test_unet_any_input_size(size, bilinear):
    model = UNet(width=4, n_classes=3, bilinear=bilinear).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 3, *size)


def test_unet_width_scales_channels():
    state = UNet(width=16).state_dict()
    assert state["inc.double_conv.0.weight"].shape == (16, 3, 3, 3)
    assert state["down4.maxpool_conv.1.double_conv.0.weight"].shape == (128, 128, 3, 3)
    assert state["up1.conv.double_conv.0.weight"].shape == (64, 256, 3, 3)


# --- batch sources ----------------------------------------------------------------------------------------------


def test_array_batches_are_seeded_epochs_with_consistent_flips():
    images, masks = squares(10, size=16)
    source = ArrayBatches(images, masks, batch_size=4, seed=3)
    x, y = source(0)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (4, 16, 16) and y.dtype == torch.long
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal((x.mean(1) > 0).long(), y)  # flips move images and masks together
    assert all(torch.equal(a, b) for a, b in zip(source(1), ArrayBatches(images, masks, 4, seed=3)(1)))
    assert not torch.equal(x, ArrayBatches(images, masks, 4, seed=4)(0)[0])
    no_flip = ArrayBatches(images, masks, batch_size=5, seed=0, augment="none")
    seen = torch.cat([no_flip(0)[0], no_flip(1)[0]])  # one epoch: every image exactly once
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255) * 2 - 1
    assert sorted(seen.sum((1, 2, 3)).tolist()) == sorted(expected.sum((1, 2, 3)).tolist())


def test_dihedral_views_are_the_eight_distinct_symmetries_and_undo_inverts_them():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = [dihedral(x, v) for v in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x) and torch.equal(views[1], torch.rot90(x, 1, (2, 3)))
    assert torch.equal(views[4], x.flip(-1))
    assert all(torch.equal(undo_dihedral(v, i), x) for i, v in enumerate(views))
    labels = torch.arange(16).reshape(4, 4)  # 2-d labels take the same view over their last two dims
    assert torch.equal(dihedral(labels, 5), dihedral(x, 5)[0, 0].long())
    with pytest.raises(ValueError, match="view"):
        dihedral(x, 8)


def test_dihedral_average_is_the_mean_softmax_of_the_views_mapped_back():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)  # not symmetric: its views disagree
    x = torch.randn(2, 3, 8, 8)
    expected = torch.stack([undo_dihedral(model(dihedral(x, v)).softmax(1), v) for v in range(8)]).mean(0)
    averaged = DihedralAverage(model)(x)
    assert averaged.shape == (2, 3, 8, 8)
    assert torch.allclose(averaged.softmax(1), expected, atol=1e-6)
    assert not torch.allclose(expected, model(x).softmax(1), atol=1e-3)
    assert torch.equal(predict_labels(DihedralAverage(model), x), expected.argmax(1))
    oracle = Oracle(3)  # per-pixel, so it commutes with every view: averaging changes nothing
    assert torch.allclose(DihedralAverage(oracle)(x).softmax(1), oracle(x).softmax(1), atol=1e-6)
    unet = UNet(n_classes=2, width=4).eval()  # BatchNorm: evaluating through the wrapper keeps eval mode
    images, masks = squares(2, size=16)
    evaluate_arrays(DihedralAverage(unet), images, masks)
    assert not unet.training and not DihedralAverage(unet).training


def test_dihedral_augmentation_moves_images_and_labels_together_and_is_seeded(tmp_path):
    images, masks = squares(12, size=16)
    source = ArrayBatches(images, masks, batch_size=6, seed=2, augment="dihedral")
    x, y = source(0)
    assert torch.equal((x.mean(1) > 0).long(), y)  # each image and its mask under the same view
    assert torch.equal(x, ArrayBatches(images, masks, 6, seed=2, augment="dihedral")(0)[0])
    plain_x, _ = ArrayBatches(images, masks, 6, seed=2, augment="none")(0)
    views = source.sampler.views(0)
    assert all(torch.equal(xi, dihedral(pi, int(v))) for xi, pi, v in zip(x, plain_x, views))
    assert len(set(np.concatenate([source.sampler.views(s) for s in range(20)]).tolist())) == 8
    write_shards(
        tmp_path,
        12,
        lambda shard, n: {"images": images[6 * shard : 6 * shard + n], "masks": masks[6 * shard : 6 * shard + n]},
        shard_size=6,
        progress=False,
    )
    shard_x, shard_y = ShardBatches(tmp_path, 6, seed=2, augment="dihedral")(0)
    assert torch.equal(shard_x, x) and torch.equal(shard_y, y)
    with pytest.raises(ValueError, match="augment"):
        ShardBatches(tmp_path, 6, augment="rotate")
    with pytest.raises(ValueError, match="square"):
        ArrayBatches(images[:, :, :8], masks[:, :, :8], 6, augment="dihedral")
    assert ArrayBatches(images[:, :, :8], masks[:, :, :8], 6, augment="flip")(0)[0].shape == (6, 3, 16, 8)


def test_batch_function_accepts_step_callables_bare_callables_and_iterators():
    batch = (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    steps = []
    assert batch_function(lambda step: steps.append(step) or batch)(7) is batch and steps == [7]
    assert batch_function(lambda: batch)(7) is batch
    assert batch_function(iter([batch]))(0) is batch

    class Synthesizer(nn.Module):
        def forward(self):
            return batch

    class StepSynthesizer(nn.Module):
        def forward(self, step):
            return steps.append(step) or batch

    assert batch_function(Synthesizer())(3) is batch
    assert batch_function(StepSynthesizer())(5) is batch and steps == [7, 5]


# --- training ---------------------------------------------------------------------------------------------------


def test_trainer_learns_bright_squares(tmp_path):
    torch.manual_seed(0)
    images, masks = squares(64)
    trainer = SegmentationTrainer(tmp_path / "run", UNet(width=8), settings(steps=30), "cpu")
    val_images, val_masks = squares(16, seed=1)
    val = mean_loss_on(
        [(torch.from_numpy(val_images).permute(0, 3, 1, 2).float() / 127.5 - 1, torch.from_numpy(val_masks).long())]
    )
    assert trainer.train(ArrayBatches(images, masks, 8, seed=0), progress=False, validation=val) == 30
    scores = evaluate_arrays(trainer.model, val_images, val_masks, batch_size=8)
    assert scores["iou"] > 0.9 and scores["f_max"] > 0.95 and scores["n_images"] == 16
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30 and losses[-1] < losses[0] / 3
    assert [r["step"] for r in rows if "val_loss" in r] == [30]  # validate_every 1000: only the last step


def test_resume_equals_uninterrupted_run(tmp_path):
    images, masks = squares(16, size=16)
    source = ArrayBatches(images, masks, 4, seed=0)
    torch.manual_seed(1)
    whole = SegmentationTrainer(tmp_path / "whole", UNet(width=4), settings(lr_step=4, lr_gamma=0.5))
    assert whole.train(source, progress=False) == 6

    torch.manual_seed(1)
    first = SegmentationTrainer(tmp_path / "split", UNet(width=4), settings(lr_step=4, lr_gamma=0.5))
    assert first.train(source, steps=3, progress=False) == 3
    resumed = SegmentationTrainer(tmp_path / "split", UNet(width=4), settings(lr_step=4, lr_gamma=0.5, steps=9))
    assert resumed.step == 3
    assert resumed.train(source, steps=6, progress=False) == 6
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rows] == pytest.approx([1e-2] * 4 + [5e-3] * 2)  # StepLR per iteration

    exported = resumed.export(tmp_path / "segmentation.pth")
    UNet(width=4).load_state_dict(torch.load(exported, weights_only=True), strict=True)


def test_interrupt_saves_checkpoint(tmp_path):
    images, masks = squares(8, size=16)
    source = ArrayBatches(images, masks, 2)

    def interrupted(step):
        if step == 2:
            raise KeyboardInterrupt
        return source(step)

    trainer = SegmentationTrainer(tmp_path / "run", UNet(width=4), settings())
    with_latents = iter([(*source(0), torch.zeros(2, 5))])  # extra items, e.g. latents, are ignored
    assert trainer.train(with_latents, steps=1, progress=False) == 1
    with pytest.raises(KeyboardInterrupt):
        trainer.train(interrupted, progress=False)
    assert SegmentationTrainer(tmp_path / "run", UNet(width=4), settings()).step == 2


def test_resume_refuses_other_settings_or_model(tmp_path):
    images, masks = squares(4, size=16)
    SegmentationTrainer(tmp_path / "run", UNet(width=4), settings()).train(
        ArrayBatches(images, masks, 2), steps=1, progress=False
    )
    with pytest.raises(ValueError, match="different settings"):
        SegmentationTrainer(tmp_path / "run", UNet(width=4), settings(lr=1e-3))
    with pytest.raises(ValueError, match="different model"):
        SegmentationTrainer(tmp_path / "run", UNet(width=8), settings())
    assert SegmentationTrainer(tmp_path / "run", UNet(width=4), settings(steps=50, checkpoint_every=7)).step == 1


def test_multiclass_with_ignore_index(tmp_path):
    images, masks = squares(8, size=16)
    labels = masks.astype(np.uint8)
    labels[:, :, :8] *= 2  # left half of each square is class 2
    labels[:, 0, :] = 255  # unlabelled first row
    model = UNet(width=4, n_classes=3)
    trainer = SegmentationTrainer(tmp_path / "run", model, settings(steps=3, ignore_index=255))
    trainer.train(ArrayBatches(images, labels, 4, augment="none"), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert predict_labels(model, x, batch_size=3).shape == (8, 16, 16)

    perfect = evaluate_labels(Oracle(n_classes=3), images, masks.astype(np.uint8), n_classes=3)
    assert perfect["class_iou"][:2] == [1.0, 1.0] and np.isnan(perfect["class_iou"][2])
    assert perfect["mean_iou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    ignored = evaluate_labels(Oracle(), images, labels, n_classes=3, ignore_index=255)
    assert ignored["class_iou"][2] == 0.0 and ignored["class_iou"][0] == 1.0


def test_one_pass_multiclass_evaluation_equals_the_two_evaluations():
    images, masks = squares(10, size=16)
    labels = masks.astype(np.uint8)
    labels[:, :, :8] *= 2
    torch.manual_seed(0)
    model = DihedralAverage(UNet(n_classes=3, width=4))  # untrained: its classes are mixed, nothing is perfect
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    probs = class_probabilities(model, images, batch_size=4)
    assert len(calls) == 3  # one call per batch
    assert probs.shape == (10, 3, 16, 16) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    both = multiclass_scores(probs, labels, n_classes=3)
    assert both["binary"] == evaluate_arrays(model, images, labels > 0, batch_size=4)
    assert both["binary"]["iou"] < 1
    separate = evaluate_labels(model, images, labels, n_classes=3, batch_size=4)
    assert {k: v for k, v in both.items() if k != "binary"} == separate
    with pytest.raises(ValueError, match="labels must be"):
        multiclass_scores(probs, labels[:, :8], n_classes=3)


def test_multiclass_scores_score_the_probabilities_given():
    labels = squares(10, size=16)[1].astype(np.uint8)
    labels[:, :, :8] *= 2
    oracle = np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2)  # the true labels as one-hot probabilities
    perfect = multiclass_scores(oracle, labels, n_classes=3)
    assert perfect["binary"]["iou"] == 1 and perfect["mean_iou"] == 1
    flipped = multiclass_scores(oracle[:, ::-1], labels, n_classes=3)  # background and part swapped
    assert flipped["binary"]["iou"] < 1 and flipped["mean_iou"] < 1


# --- shards -----------------------------------------------------------------------------------------------------


def make_batch_recording(calls):
    def make_batch(index, n):
        calls.append(index)
        rng = np.random.default_rng(index)
        return {
            "images": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
            "masks": rng.random((n, 8, 8)) > 0.5,
            "z": rng.standard_normal((n, 5)).astype(np.float32),
        }

    return make_batch


def read_all(folder):
    ds = ShardDataset(folder)
    return ds.read(np.arange(len(ds)))


def test_shards_resume_to_identical_content(tmp_path):
    calls = []
    folder = write_shards(
        tmp_path / "s", 10, make_batch_recording(calls), shard_size=4, attrs={"seed": 1}, progress=False
    )
    assert calls == [0, 1, 2] and [shard_path(folder, i).exists() for i in range(4)] == [True] * 3 + [False]
    before = read_all(folder)
    shard_path(folder, 2).unlink()
    calls.clear()
    write_shards(folder, 10, make_batch_recording(calls), shard_size=4, attrs={"seed": 1}, progress=False)
    assert calls == [2]
    after = read_all(folder)
    assert all(np.array_equal(before[k], after[k]) for k in ("images", "masks", "z"))
    assert after["masks"].dtype == np.uint8 and set(np.unique(after["masks"])) == {0, 1}

    for kw in ({"shard_size": 5, "attrs": {"seed": 1}}, {"shard_size": 4, "attrs": {"seed": 2}}):
        with pytest.raises(ValueError, match=str(folder)):
            write_shards(folder, 10, make_batch_recording([]), progress=False, **kw)


def test_shards_of_the_same_dataset_are_linked_from_a_donor_and_others_written(tmp_path):
    donor = write_shards(
        tmp_path / "big", 10, make_batch_recording([]), shard_size=4, attrs={"seed": 1}, progress=False
    )
    calls = []
    small = write_shards(
        tmp_path / "small", 6, make_batch_recording(calls), shard_size=4, attrs={"seed": 1}, progress=False, donor=donor
    )
    assert calls == [1]  # shard 0 is the donor's; shard 1 holds 2 pairs there and 4 in the donor
    assert shard_path(small, 0).stat().st_ino == shard_path(donor, 0).stat().st_ino
    assert all(np.array_equal(read_all(small)[k][:4], read_all(donor)[k][:4]) for k in ("images", "z"))
    calls.clear()
    other = write_shards(
        tmp_path / "other", 4, make_batch_recording(calls), shard_size=4, attrs={"seed": 2}, progress=False, donor=donor
    )
    assert calls == [0] and shard_path(other, 0).stat().st_ino != shard_path(donor, 0).stat().st_ino
    assert link_shared_shards(tmp_path / "missing", small) == 0


def test_shard_reader_batches(tmp_path):
    folder = write_shards(tmp_path / "s", 10, make_batch_recording([]), shard_size=4, progress=False)
    ds = ShardDataset(folder)
    assert len(ds) == 10 and ds.keys == ("images", "masks", "z") and ds.shapes["images"] == (8, 8, 3)
    reference = make_batch_recording([])(2, 2)
    rows = ds.read([9, 0, 9, 8])
    assert np.array_equal(rows["images"][[0, 2, 3]], reference["images"][[1, 1, 0]])
    assert np.array_equal(ds[9]["z"], reference["z"][1])
    assert pickle.loads(pickle.dumps(ds)).read([1])["images"].shape == (1, 8, 8, 3)

    batches = ShardBatches(folder, batch_size=3, seed=5)
    x, y = batches(0)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert y.shape == (3, 8, 8) and y.dtype == torch.long
    again = ShardBatches(ds, batch_size=3, seed=5)(0)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert not torch.equal(x, ShardBatches(ds, batch_size=3, seed=6)(0)[0])
    held, streamed = ShardBatches(ds, 3, seed=5), ShardBatches(ds, 3, seed=5, max_memory=0)
    assert held.arrays is not None and streamed.arrays is None  # small shards are read once, big ones per batch
    for step in range(5):
        assert all(torch.equal(a, b) for a, b in zip(held(step), streamed(step)))

    shard_path(folder, 1).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ShardDataset(folder)


# --- inference and evaluation -----------------------------------------------------------------------------------


def test_min_edge_size_floors_and_keeps_aspect():
    assert min_edge_size(300, 200, 128) == (192, 128)
    assert min_edge_size(200, 300, 128) == (128, 192)
    assert min_edge_size(100, 333, 128) == (128, 426)  # 426.24 floored
    assert min_edge_size(50, 50, 128) == (128, 128)


def test_segmentation_inference_protocol():
    oracle = Oracle()
    image = np.zeros((300, 200, 3), np.uint8)
    image[100:200, 50:150] = 255
    prob = SegmentationInference(oracle, resize_to=128)(image)
    assert oracle.seen[-1].shape == (1, 3, 192, 128)
    assert prob.shape == (300, 200) and prob.dtype == np.float32
    assert np.array_equal(prob * 255, np.round(prob * 255))  # on the k/255 grid
    assert prob[150, 100] == 1.0 and prob[10, 10] == 0.0

    # The ToPILImage round trip truncates: grey level 1 reaches the model as 0, i.e. -1.
    SegmentationInference(oracle, resize_to=16)(np.ones((20, 20, 3), np.uint8))
    assert oracle.seen[-1].shape == (1, 3, 16, 16) and torch.all(oracle.seen[-1] == -1)

    native = SegmentationInference(oracle, resize_to=None)(image)
    assert oracle.seen[-1].shape == (1, 3, 300, 200) and native.shape == (300, 200)


def test_predict_proba_restores_mode_and_evaluate_perfect_model():
    images, masks = squares(6, size=16)
    model = UNet(width=4).train()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    prob = predict_proba(model, x, batch_size=4)
    assert prob.shape == (6, 16, 16) and prob.dtype == torch.float32 and model.training
    with torch.no_grad(), inference_autocast("cpu"):  # the precision the trainers train in
        assert torch.allclose(prob, torch.softmax(model.eval()(x).float(), 1)[:, 1], atol=1e-6)

    images = np.repeat(masks[..., None], 3, axis=-1).astype(np.uint8) * 255
    scores = evaluate_arrays(Oracle(), images, masks, batch_size=4)
    assert scores["iou"] == 1.0 and scores["f_max"] == 1.0 and scores["accuracy"] == 1.0

    dataset = [
        Sample(np.kron(image, np.ones((4, 4, 1), np.uint8)), np.kron(mask, np.ones((4, 4), bool)), str(i))
        for i, (image, mask) in enumerate(zip(images, masks))
    ]
    scores = evaluate_folder(Oracle(), dataset, resize_to=32, limit=4, progress=False)
    assert scores["n_images"] == 4 and scores["iou"] > 0.95


def test_inference_runs_in_the_trainers_precision():
    model = UNet(width=4).eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        full = torch.softmax(model(x), 1)
        with inference_autocast("cpu"):
            low = model(x)
    assert low.dtype == (amp_dtype("auto", "cpu") or torch.float32)
    assert (predict_proba(model, x) - full[:, 1]).abs().max() < 0.02  # bf16 logits, float32 probabilities
    assert torch.equal(predict_labels(model, x), low.argmax(1))


def test_a_run_folder_refuses_other_data_or_batches(tmp_path):
    """Resuming (or reusing a finished run) on other images, another batch size or other shards is refused, naming
    what differs; the same source goes on."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, (10, 32, 32)) > 0
    settings = SegmentationSettings(steps=2, checkpoint_every=1, amp="off")

    def trainer():
        torch.manual_seed(0)
        return SegmentationTrainer(tmp_path / "run", UNet(width=4), settings)

    trainer().train(ArrayBatches(images, labels, 4), progress=False)
    assert trainer().train(ArrayBatches(images, labels, 4), progress=False) == 2  # the same data: reused
    with pytest.raises(ValueError, match=r"other data or batches \(differing: \['batch_size'\]\)"):
        trainer().train(ArrayBatches(images, labels, 8), progress=False)
    with pytest.raises(ValueError, match=r"differing: \['arrays'\]"):
        trainer().train(ArrayBatches(images[::-1].copy(), labels, 4), progress=False)
    with pytest.raises(ValueError, match=r"differing: \['arrays', 'n'\]"):
        trainer().train(ArrayBatches(images[:8], labels[:8], 4), progress=False)
    # shards made another way
    for name, attrs in [("a", {"seed": 0}), ("b", {"seed": 1})]:
        write_shards(
            tmp_path / name,
            8,
            lambda i, n: {"images": images[:n], "masks": labels[:n]},
            shard_size=4,
            attrs=attrs,
            progress=False,
        )
    torch.manual_seed(0)
    SegmentationTrainer(tmp_path / "shards_run", UNet(width=4), settings).train(
        ShardBatches(tmp_path / "a", 4), progress=False
    )
    with pytest.raises(ValueError, match=r"differing: \['shards'\]"):
        SegmentationTrainer(tmp_path / "shards_run", UNet(width=4), settings).train(
            ShardBatches(tmp_path / "b", 4), progress=False
        )


def test_a_truncated_shard_is_named(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    folder = write_shards(tmp_path / "s", 4, lambda i, n: {"images": images[:n], "masks": images[:n, ..., 0]},
                          shard_size=2, progress=False)  # fmt: skip
    path = shard_path(folder, 1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OSError, match=r"shard_00001\.h5 cannot be read .* run write_shards again"):
        ShardDataset(folder).read([3])
