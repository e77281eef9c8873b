import json

import numpy as np
import pytest
import torch

from helpers.core.runs import RunFolder
from helpers.gans import load
from helpers.gans.encoder import LatentEncoder, reconstruction_error, train_encoder
from helpers.gans.train import Discriminator, TrainConfig, Trainer, prepare_for_sampling

DATA = dict(size=32, n_train=32, n_val=4, n_test=4, seed=0)
SMALL = {
    "biggan": dict(resolution=32, ch=2, dim_z=16, shared_dim=4, n_classes=1, attention=[]),
    "stylegan2": dict(resolution=32, dim_z=16, n_mlp=2, fmap_base=64, fmap_max=16),
}


def _config(generator="biggan", **kw):
    kw = {
        "data": DATA,
        "generator_config": SMALL[generator],
        "batch_size": 8,
        "d_ch": 8,
        "steps": 2,
        "checkpoint_every": 1,
        "sample_every": 2,
        "ema_start": 1,
        "threads": 1,
        **kw,
    }
    return TrainConfig.for_generator(generator, **kw)


@pytest.mark.parametrize("generator", ["biggan", "stylegan2"])
def test_train_resume_and_export(tmp_path, generator):
    trainer = Trainer(tmp_path / "run", _config(generator))
    assert trainer.train(progress=False) == 2
    assert (tmp_path / "run" / "samples" / "step_000002.png").exists()
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}

    resumed = Trainer(tmp_path / "run", _config(generator, steps=3))
    assert resumed.step == 2
    assert all(torch.equal(before[k], v) for k, v in resumed.G.state_dict().items())
    assert resumed.train(progress=False) == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite([row["loss_d"], row["loss_g"]]).all() for row in log)

    model = load(resumed.export(tmp_path / "g.pt"))
    images = model(model.sample_z(2, 0))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1.0 + 1e-4
    meta = torch.load(tmp_path / "g.pt", weights_only=True)["meta"]
    assert meta["steps"] == 3 and meta["train_config"]["generator"] == generator


def test_resume_refuses_a_different_recipe(tmp_path):
    Trainer(tmp_path, _config()).train(progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        Trainer(tmp_path, _config(lr_g=1e-3))


def test_same_seed_same_training(tmp_path):
    a, b = Trainer(tmp_path / "a", _config()), Trainer(tmp_path / "b", _config())
    a.train(progress=False)
    b.train(progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.G.state_dict().values(), b.G.state_dict().values()))


def test_ema_follows_g_before_its_start_and_lags_after(tmp_path):
    trainer = Trainer(tmp_path, _config(ema_start=2, ema_decay=0.5, steps=3))
    trainer.train(steps=1, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(trainer.G.parameters(), trainer.G_ema.parameters()))
    trainer.train(steps=3, progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(trainer.G.parameters(), trainer.G_ema.parameters()))


def test_unknown_generator():
    with pytest.raises(ValueError, match="generator must be one of"):
        TrainConfig.for_generator("dcgan")


def test_discriminator_shapes():
    d = Discriminator(64, 8)
    assert d(torch.randn(3, 3, 64, 64)).shape == (3,)


def test_encoder_learns_to_invert_a_generator():
    torch.manual_seed(0)
    g = prepare_for_sampling(_small_biggan(), n_batches=2, batch_size=8)
    enc = LatentEncoder(g.dim_z, resolution=32, ch=8, max_ch=16)
    losses = train_encoder(g, enc, steps=60, batch_size=16, lr=3e-3, progress=False)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    images = g(g.sample_z(4, 1))
    assert 0 <= reconstruction_error(g, enc, images) < 1


def test_encoder_training_resumes_bit_exactly(tmp_path):
    g = prepare_for_sampling(_small_biggan(), n_batches=2, batch_size=8)

    def fresh() -> LatentEncoder:
        torch.manual_seed(0)
        return LatentEncoder(g.dim_z, resolution=32, ch=8, max_ch=16)

    settings = dict(steps=12, batch_size=4, lr=3e-3, progress=False, checkpoint_every=5)
    whole = fresh()
    whole_losses = train_encoder(g, whole, **settings)

    class Interrupted(Exception):
        pass

    calls = {"n": 0}
    original_forward = g.forward

    def failing_forward(z, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise Interrupted
        return original_forward(z, *args, **kwargs)

    g.forward = failing_forward
    with pytest.raises(Interrupted):
        train_encoder(g, fresh(), run_dir=tmp_path, **settings)
    g.forward = original_forward
    (folder,) = tmp_path.glob("encoder_*")  # a run folder named after the settings and the generator
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 7  # saved when interrupted
    assert [row["loss"] for row in RunFolder(folder).read_log()] == whole_losses[:7]
    resumed = fresh()
    assert train_encoder(g, resumed, run_dir=tmp_path, **settings) == whole_losses
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # a finished run returns its losses without training
    assert train_encoder(g, fresh(), run_dir=tmp_path, **settings) == whole_losses
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    # other settings or a retrained generator train anew, beside the old checkpoint
    train_encoder(g, fresh(), run_dir=tmp_path, **(settings | {"steps": 3}))
    with torch.no_grad():
        next(g.parameters()).add_(1.0)
    train_encoder(g, fresh(), run_dir=tmp_path, **(settings | {"steps": 3}))
    assert len(list(tmp_path.glob("encoder_*/checkpoint.pt"))) == 3


def _small_biggan():
    from helpers.gans.biggan import BigGAN

    return BigGAN(**SMALL["biggan"])
