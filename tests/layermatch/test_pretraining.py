"""LayerMatch (helpers.layermatch.pretraining) and generator re-injection (``synthesis_from`` of BigGAN and StyleGAN2).

Covers: heads give exactly the generator maps' shapes; re-injecting the true maps reproduces G(z) for every
injectable layer of both families; the per-layer normaliser is what the module docstring says; a few steps
reduce the losses; resuming replays the same run; segmentation models and the comparison arms.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from helpers.core import distributed
from helpers.core.plots import loss_curves
from helpers.gans.biggan import BigGAN
from helpers.gans.checkpoints import load, save_model
from helpers.gans.stylegan2 import StyleGAN2
from helpers.layermatch.backbones import ResNetBackbone, read_backbone
from helpers.layermatch.models import SegmentationModel, build_segmentation_model, comparison_models
from helpers.layermatch.pretraining import (
    NORM_SEED_OFFSET,
    AutoencoderConfig,
    AutoencoderTrainer,
    LayerMatchConfig,
    LayerMatchNet,
    LayerMatchTrainer,
    feature_variances,
    generator_kwargs,
    head_sources,
    matchable_layers,
    pretrain_job,
    train_together,
)

TINY = dict(width=4, depths=[1, 1, 1, 1])  # a backbone small enough for a few quick steps
GENERATORS = ("default-biggan", "default-stylegan2")


@pytest.fixture(scope="module", params=GENERATORS)
def generator(request):
    return load(request.param)


def _random_biggan() -> BigGAN:
    """A small BigGAN with attention and random BN statistics, so every part of the later blocks matters."""
    torch.manual_seed(0)
    model = BigGAN(resolution=32, ch=2, dim_z=16, shared_dim=8, n_classes=2, attention=[16])
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "stored_var"):
                m.stored_mean.normal_()
                m.stored_var.uniform_(0.5, 2)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)
    return model.eval()


def _random_stylegan2() -> StyleGAN2:
    """A small StyleGAN2 with random biases and noise strengths (so noise and skips matter)."""
    torch.manual_seed(0)
    model = StyleGAN2(resolution=32, dim_z=32, n_mlp=2, fmap_base=256, fmap_max=32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "bias_orig", "scale_factors")):
                p.copy_(0.3 * torch.randn_like(p))
    model.estimate_latent_avg(256, seed=1)
    return model.eval()


@pytest.mark.parametrize(
    "make",
    [_random_biggan, _random_stylegan2, lambda: load(GENERATORS[0]), lambda: load(GENERATORS[1])],
    ids=["biggan", "stylegan2", *GENERATORS],
)
def test_reinjecting_true_features_reproduces_the_image(make):
    G = make()
    z = G.sample_z(3, seed=5)
    kwargs = generator_kwargs(G, 3, noise_seed=7, truncation=0.7 if isinstance(G, StyleGAN2) else 1.0)
    with torch.no_grad():
        features = G.features(z, **kwargs)
        names = [k for k in features if k != "image"]
        assert len(names) == len(matchable_layers(G)) >= 4
        for name in names:
            rebuilt = G.synthesis_from(name, features[name], z, **kwargs)
            assert (rebuilt - features["image"]).abs().max().item() < 1e-6, name
            changed = G.synthesis_from(name, features[name] + 0.5 * torch.randn_like(features[name]), z, **kwargs)
            assert (changed - features["image"]).abs().max().item() > 1e-3, name
    with pytest.raises(ValueError, match="injectable features"):
        G.synthesis_from("image", features["image"], z, **kwargs)


@pytest.mark.parametrize("make", [_random_biggan, _random_stylegan2], ids=["biggan", "stylegan2"])
def test_reinjection_passes_gradients_to_the_map_only(make):
    G = make().requires_grad_(False)
    z = G.sample_z(2, seed=1)
    kwargs = generator_kwargs(G, 2, noise_seed=3, truncation=1.0)
    with torch.no_grad():
        features = G.features(z, **kwargs)
    x = features["res8"].clone().requires_grad_(True)
    G.synthesis_from("res8", x, z, **kwargs).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())


@pytest.mark.parametrize("stem", ["small", "imagenet"])
@pytest.mark.parametrize("head_source", ["nearest", "deepest"])
def test_heads_give_exactly_the_generator_shapes(generator, stem, head_source):
    targets = matchable_layers(generator)
    backbone = ResNetBackbone(**{**TINY, "stem": stem})
    net = LayerMatchNet(backbone, targets, generator.resolution, head_source).eval()
    with torch.no_grad():
        z = generator.sample_z(2, seed=0)
        features = generator.features(z, **generator_kwargs(generator, 2, 0, 1.0))
        predictions = net(features["image"])
    assert list(predictions) == list(targets)
    for name, prediction in predictions.items():
        assert prediction.shape == features[name].shape, name


def test_head_sources_pick_nearest_or_deepest():
    targets = {f"res{r}": (8, r, r) for r in (4, 8, 16, 32, 64)}
    small = ResNetBackbone(**TINY, stem="small")
    assert head_sources(small, 64, targets) == dict(
        res4="layer4", res8="layer3", res16="layer2", res32="layer1", res64="stem"
    )
    imagenet = ResNetBackbone(**TINY, stem="imagenet")  # maps 32, 16, 8, 4, 2 px; res4 sits exactly on layer3
    assert head_sources(imagenet, 64, targets)["res4"] == "layer3"
    assert head_sources(imagenet, 64, {"res3": (8, 3, 3)})["res3"] == "layer3"  # 3 px is nearer 4 than 2 in log scale
    assert small.stage_sizes(49)[:2] == [49, 25]  # 35 / 25 == 49 / 35: a tie goes to the deeper stage
    assert head_sources(small, 49, {"res35": (8, 35, 35)})["res35"] == "layer1"
    assert set(head_sources(small, 64, targets, "deepest").values()) == {"layer4"}


def _config(cls, generator: str, **overrides):
    base = dict(
        generator=generator, backbone=TINY, batch_size=4, lr=3e-3, checkpoint_every=1000, log_every=1, norm_batch=16
    )
    if cls is AutoencoderConfig:
        base.pop("norm_batch")
    return cls(**{**base, **overrides})


def test_layer_normaliser_is_the_variance_on_the_fixed_batch(tmp_path):
    config = _config(LayerMatchConfig, "default-stylegan2", truncation=0.8, seed=3)
    trainer = LayerMatchTrainer(tmp_path, config)
    G = trainer.G
    seed = config.seed + NORM_SEED_OFFSET
    z = G.sample_z(config.norm_batch, seed)
    with torch.no_grad():
        features = G.features(z, noise=G.make_noise(config.norm_batch, seed + 1), truncation=0.8)
    for name in config.layers:
        assert trainer.variances[name] == pytest.approx(features[name].double().var(unbiased=False).item(), rel=1e-9)
    assert trainer.variances == feature_variances(G, config.layers, config.norm_batch, seed, 0.8)

    z, kwargs = trainer.next_batch()
    with torch.no_grad():
        features = G.features(z, **kwargs)
        terms = trainer.losses(z, kwargs, features)
        predictions = trainer.run_net(features["image"])  # under the trainer's autocast
        rebuilt = G.synthesis_from("res8", predictions["res8"], z, **kwargs)
    total = terms["rec"]
    for name in config.layers:
        expected = F.mse_loss(predictions[name], features[name]) / trainer.variances[name]
        assert terms[f"feat_{name}"].item() == pytest.approx(expected.item(), rel=1e-5)
        total = total + terms[f"feat_{name}"]
    assert terms["rec"].item() == pytest.approx(F.mse_loss(rebuilt, features["image"]).item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="matched layers"):
        LayerMatchConfig(layers=("res4",), inject="res8")
    with pytest.raises(ValueError, match="layer weights"):
        LayerMatchConfig(layer_weights=(1.0,))
    with pytest.raises(ValueError, match="no feature maps"):
        LayerMatchTrainer("unused", _config(LayerMatchConfig, "default-biggan", layers=("res128",), inject=None))


def _first_and_last(log_path, n: int = 4) -> tuple[float, float]:
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines()]
    return sum(losses[:n]) / n, sum(losses[-n:]) / n


@pytest.mark.parametrize("generator_name", GENERATORS)
def test_a_few_layermatch_steps_reduce_the_loss(tmp_path, generator_name):
    trainer = LayerMatchTrainer(tmp_path, _config(LayerMatchConfig, generator_name))
    assert trainer.train(steps=24, progress=False) == 24
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"step", "loss", "feat_res4", "feat_res8", "feat_res16", "rec"}
    first, last = _first_and_last(tmp_path / "log.jsonl")
    assert last < 0.8 * first
    assert read_backbone(tmp_path / "backbone.pt")["meta"]["method"] == "layermatch"
    assert len(loss_curves(tmp_path / "log.jsonl").axes[0].lines) == 5


def test_resume_continues_from_the_checkpoint_step(tmp_path):
    config = _config(LayerMatchConfig, "default-biggan", checkpoint_every=2)
    straight = LayerMatchTrainer(tmp_path / "straight", config)
    straight.train(steps=4, progress=False)

    first = LayerMatchTrainer(tmp_path / "split", config)
    first.train(steps=2, progress=False)
    resumed = LayerMatchTrainer(tmp_path / "split", config)
    assert resumed.step == 2
    assert resumed.variances == first.variances
    resumed.train(steps=4, progress=False)
    assert resumed.step == 4
    for (k, a), (_, b) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
    logged = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]

    with pytest.raises(ValueError, match="another run"):
        LayerMatchTrainer(tmp_path / "split", _config(LayerMatchConfig, "default-biggan", rec_weight=2.0))
    with pytest.raises(ValueError, match="another run"):
        AutoencoderTrainer(tmp_path / "split", _config(AutoencoderConfig, "default-biggan", checkpoint_every=2))


def test_resume_refuses_a_changed_generator_file(tmp_path):
    """Same configuration, other weights in the generator file: the old run must not be silently continued."""
    path = tmp_path / "generator.pt"
    save_model(_random_stylegan2(), path)
    config = _config(LayerMatchConfig, str(path))
    LayerMatchTrainer(tmp_path / "run", config).train(steps=1, progress=False)
    assert LayerMatchTrainer(tmp_path / "run", config).step == 1  # same file: resumes
    replacement = _random_stylegan2()
    replacement.latent_avg.add_(1.0)
    save_model(replacement, path)
    with pytest.raises(ValueError, match="another .*generator.pt file"):
        LayerMatchTrainer(tmp_path / "run", config)


def test_autoencoder_pretraining_reduces_its_loss_on_the_same_images(tmp_path):
    config = _config(AutoencoderConfig, "default-biggan")
    trainer = AutoencoderTrainer(tmp_path, config)
    lm = LayerMatchTrainer(tmp_path / "lm", _config(LayerMatchConfig, "default-biggan"))
    for _ in range(2):  # the same seeded stream of generated images as LayerMatch
        assert torch.equal(trainer.next_batch()[0], lm.next_batch()[0])
    trainer = AutoencoderTrainer(tmp_path, config)
    trainer.train(steps=24, progress=False)
    first, last = _first_and_last(tmp_path / "log.jsonl")
    assert last < 0.8 * first
    assert read_backbone(tmp_path / "backbone.pt")["meta"]["method"] == "autoencoder"


def _count_renders(trainer, calls: list) -> None:
    render = trainer.render
    trainer.render = lambda z, kwargs: calls.append(trainer.method) or render(z, kwargs)


def test_runs_trained_together_render_a_shared_batch_once_and_end_as_alone(tmp_path):
    """LayerMatch and the autoencoder on the same stream: side by side, one render per step, and the weights and logs
    of runs trained one after the other; a run of another seed renders its own batches."""
    configs = {
        LayerMatchTrainer: _config(LayerMatchConfig, "default-stylegan2", steps=3),
        AutoencoderTrainer: _config(AutoencoderConfig, "default-stylegan2", steps=3),
    }
    alone = [cls(tmp_path / "alone" / cls.method, config) for cls, config in configs.items()]
    for trainer in alone:
        trainer.train(progress=False)
    together = [cls(tmp_path / "together" / cls.method, config) for cls, config in configs.items()]
    calls: list[str] = []
    for trainer in together:
        _count_renders(trainer, calls)
    assert train_together(together, progress=False) == [3, 3]
    assert calls == ["layermatch"] * 3
    for a, b in zip(alone, together):
        for (k, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
            assert torch.equal(x, y), (a.method, k)
        assert (b.run_dir / "log.jsonl").read_text() == (a.run_dir / "log.jsonl").read_text()
        assert read_backbone(b.run_dir / "backbone.pt")["meta"]["step"] == 3

    other = [
        LayerMatchTrainer(tmp_path / "seeds" / "lm", _config(LayerMatchConfig, "default-stylegan2", steps=2)),
        AutoencoderTrainer(tmp_path / "seeds" / "ae", _config(AutoencoderConfig, "default-stylegan2", steps=2, seed=1)),
    ]
    calls.clear()
    for trainer in other:
        _count_renders(trainer, calls)
    train_together(other, progress=False)
    assert calls == ["layermatch", "autoencoder"] * 2


@pytest.mark.parametrize("stem", ["small", "imagenet"])
@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_segmentation_model_gives_logits_at_input_size(stem, size):
    model = build_segmentation_model(3, backbone_config={**TINY, "stem": stem})
    assert isinstance(model, SegmentationModel)
    logits = model(torch.rand(2, 3, *size) * 2 - 1)
    assert logits.shape == (2, 3, *size)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_comparison_arms_share_decoders_and_load_backbones(tmp_path):
    trainer = LayerMatchTrainer(tmp_path / "lm", _config(LayerMatchConfig, "default-biggan"))
    trainer.train(steps=1, progress=False)
    models = comparison_models(2, {"random": None, "layermatch": tmp_path / "lm" / "backbone.pt"}, seed=4)
    assert models["random"].backbone.config == models["layermatch"].backbone.config == trainer.backbone.config
    for (k, a), (_, b) in zip(
        models["random"].decoder.state_dict().items(), models["layermatch"].decoder.state_dict().items()
    ):
        assert torch.equal(a, b), k
    saved = models["layermatch"].backbone.state_dict()
    for k, a in trainer.backbone.state_dict().items():
        assert torch.equal(a, saved[k]), k
    assert not torch.equal(models["random"].backbone.stem[0].weight, models["layermatch"].backbone.stem[0].weight)
    again = build_segmentation_model(2, None, trainer.backbone.config, seed=4)
    assert torch.equal(again.backbone.stem[0].weight, models["random"].backbone.stem[0].weight)
    with pytest.raises(ValueError, match="differ"):
        comparison_models(
            2, {"random": None, "layermatch": tmp_path / "lm" / "backbone.pt"}, backbone_config={**TINY, "width": 8}
        )


@pytest.mark.parametrize("cls", [LayerMatchConfig, AutoencoderConfig])
def test_two_process_pretraining_resumes_like_an_uninterrupted_run(tmp_path, cls):
    """Two gloo processes, each generating half of every batch from its own (step, rank) stream: a run stopped
    after 2 steps and resumed to 4 equals a 4-step run, and rank 0 alone writes the log and the backbone."""
    trainer = LayerMatchTrainer if cls is LayerMatchConfig else AutoencoderTrainer
    config = _config(cls, "default-biggan", checkpoint_every=2, amp="off")
    for name, steps in [("straight", [4]), ("split", [2, 4])]:
        for n in steps:
            job = functools.partial(pretrain_job, [(trainer, tmp_path / name, replace(config, steps=n))], "cpu")
            distributed.launch(job, 2, tmp_path / "job")
    straight, split = (trainer(tmp_path / name, replace(config, steps=4)) for name in ("straight", "split"))
    assert straight.step == split.step == 4
    for (k, a), (_, b) in zip(straight.net.state_dict().items(), split.net.state_dict().items()):
        assert torch.equal(a, b), k
    logged = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    assert read_backbone(tmp_path / "split" / "backbone.pt")["meta"]["step"] == 4
    # the ranks' halves differ from the one-process stream: another run than one process's, by design
    one = trainer(tmp_path / "one", replace(config, steps=4))
    one.train(progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(one.net.state_dict().values(), split.net.state_dict().values()))
