"""Fitting the decoder on annotated latents (helpers.semantic_projection.fitting): loss, resume, fingerprints."""

import numpy as np
import pytest
import torch

from helpers.gans import load
from helpers.semantic_projection.dataset import draw_inputs
from helpers.semantic_projection.decoder import predict
from helpers.semantic_projection.fitting import (
    IGNORE_INDEX,
    FitConfig,
    LabelledLatent,
    class_weights,
    fit,
    read_log,
    samples_fingerprint,
    segmentation_loss,
)

SMALL = dict(width=16, epochs=6, min_epoch_size=4, checkpoint_every=100)


@pytest.fixture(scope="module")
def biggan():
    return load("default-biggan")


def _samples(G, n=2):
    """Latents with a half-positive, half-negative, partly ignored mask each."""
    z, seeds = draw_inputs(G, 0, range(n))
    labels = np.full((G.resolution, G.resolution), IGNORE_INDEX, np.int64)
    labels[:, :24], labels[:, 40:] = 1, 0
    return [
        LabelledLatent(z[i], labels, None if seeds is None else seeds[i], 0.7 if seeds else None, f"s{i}")
        for i in range(n)
    ]


def test_ignored_pixels_do_not_contribute():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    labels = torch.full((1, 8, 8), IGNORE_INDEX)
    labels[0, :4] = 1
    loss = segmentation_loss(logits, labels)
    loss.backward()
    assert logits.grad[0, :, 4:].abs().max() == 0
    changed = logits.detach().clone()
    changed[0, :, 4:] += 100
    assert torch.allclose(segmentation_loss(changed, labels), loss.detach())


def test_fit_reduces_loss_and_predicts_in_eval_mode(tmp_path, stylegan):
    samples = _samples(stylegan)
    epochs = []
    result = fit(
        stylegan,
        samples,
        tmp_path / "run",
        FitConfig(**{**SMALL, "epochs": 8, "lr": 3e-3}),
        progress=False,
        on_epoch=lambda epoch, decoder: epochs.append(epoch),
    )
    assert result.complete and result.step == 32 and epochs == list(range(1, 9))
    assert np.mean(result.losses[-4:]) < 0.7 * np.mean(result.losses[:4])
    assert [row["step"] for row in read_log(tmp_path / "run")] == list(range(1, 33))
    assert (tmp_path / "run" / "decoder.pt").exists()

    decoder = result.decoder.train()
    modes = []
    decoder.lateral[0].register_forward_hook(lambda m, i, o: modes.append(m.training))
    s = samples[0]
    first = predict(stylegan, decoder, s.z, [s.noise_seed], s.truncation)
    second = predict(stylegan, decoder, s.z, [s.noise_seed], s.truncation)
    assert modes == [False, False] and decoder.training  # eval while predicting, mode restored afterwards
    np.testing.assert_array_equal(first.probs, second.probs)  # dropout off: deterministic
    assert first.labels.shape == (1, 64, 64) and first.probs.shape == (1, 2, 64, 64)
    labelled = s.labels != IGNORE_INDEX
    assert (first.labels[0][labelled] == s.labels[labelled]).mean() > 0.9


def test_fit_resumes_exactly_and_refuses_other_samples(tmp_path, stylegan):
    samples, config = _samples(stylegan), FitConfig(**{**SMALL, "epochs": 2, "checkpoint_every": 3})
    straight = fit(stylegan, samples, tmp_path / "a", config, progress=False)
    part = fit(stylegan, samples, tmp_path / "b", config, progress=False, stop_after=5)
    assert not part.complete and part.step == 5 and not (tmp_path / "b" / "decoder.pt").exists()
    resumed = fit(stylegan, samples, tmp_path / "b", config, progress=False)
    assert resumed.step == 8 and resumed.losses == straight.losses[5:]
    for k, v in straight.decoder.state_dict().items():
        assert torch.equal(v, resumed.decoder.state_dict()[k])
    assert len(read_log(tmp_path / "b")) == 8

    def interrupt(epoch, decoder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(stylegan, samples, tmp_path / "c", config, progress=False, on_epoch=interrupt)
    after_interrupt = fit(stylegan, samples, tmp_path / "c", config, progress=False)
    assert after_interrupt.losses == straight.losses[4:]
    with pytest.raises(ValueError, match="other samples or settings"):
        fit(stylegan, samples[:1], tmp_path / "b", config, progress=False)


def test_samples_fingerprint_depends_on_inputs_labels_and_order(stylegan):
    a, b = _samples(stylegan)
    relabelled = LabelledLatent(a.z, np.where(a.labels == 1, 0, a.labels), a.noise_seed, a.truncation, "other name")
    renamed = LabelledLatent(a.z, a.labels, a.noise_seed, a.truncation, "other name")
    fingerprints = {samples_fingerprint(s) for s in ([a, b], [b, a], [relabelled, b], [a])}
    assert len(fingerprints) == 4 and all(len(f) == 64 for f in fingerprints)
    assert samples_fingerprint([renamed, b]) == samples_fingerprint([a, b])  # names do not count


def test_fit_rejects_unusable_samples(tmp_path, stylegan):
    s = _samples(stylegan, 1)[0]
    empty = LabelledLatent(s.z, np.full_like(s.labels, IGNORE_INDEX), s.noise_seed, s.truncation, "blank")
    with pytest.raises(ValueError, match="blank: no labelled pixel"):
        fit(stylegan, [empty], tmp_path, progress=False)
    unseeded = LabelledLatent(s.z, s.labels, None, s.truncation, "unseeded")
    with pytest.raises(ValueError, match="unseeded: no noise seed"):
        fit(stylegan, [unseeded], tmp_path, progress=False)


def test_class_weights_follow_labelled_pixel_shares():
    labels = np.full((8, 8), IGNORE_INDEX, np.int64)
    labels[:4], labels[4, :4] = 0, 1  # 32 background, 4 object, no part, 28 ignored
    samples = [LabelledLatent(np.zeros(4, np.float32), labels, None, None, "s")]
    assert class_weights(samples, 3, 0.0) is None  # the reference: plain cross-entropy
    weights = class_weights(samples, 3, 0.5)
    torch.testing.assert_close(weights, torch.tensor([1.0, 8**0.5, 8**0.5]))
    logits, target = torch.randn(1, 3, 8, 8), torch.from_numpy(labels)[None]
    only_object = torch.where(target == 1, target, torch.full_like(target, IGNORE_INDEX))
    weighted, plain = segmentation_loss(logits, target, class_weights=weights), segmentation_loss(logits, target)
    assert not torch.isclose(weighted, plain)
    torch.testing.assert_close(
        segmentation_loss(logits, only_object, class_weights=weights), segmentation_loss(logits, only_object)
    )  # weights cancel within one class


def test_class_weighted_fit_is_its_own_configuration(tmp_path, stylegan):
    samples = _samples(stylegan)
    for s in samples:
        s.labels[:, 30:40] = 0  # 34 background columns, 24 object columns: unequal shares
    plain = fit(stylegan, samples, tmp_path / "plain", FitConfig(**SMALL), progress=False)
    weighted = fit(stylegan, samples, tmp_path / "weighted", FitConfig(**SMALL, class_weight_power=1.0), progress=False)
    assert plain.losses[0] != weighted.losses[0]
    with pytest.raises(ValueError, match="other samples or settings"):
        fit(stylegan, samples, tmp_path / "plain", FitConfig(**SMALL, class_weight_power=1.0), progress=False)


def test_each_sample_goes_through_the_generator_once_per_fit(tmp_path, stylegan, monkeypatch):
    samples = _samples(stylegan, 3)
    calls = []
    features = stylegan.features

    def counted(z, noise_seed=None, truncation=None):
        calls.append(len(z))
        return features(z, noise_seed=noise_seed, truncation=truncation)

    monkeypatch.setattr(stylegan, "features", counted)
    result = fit(stylegan, samples, tmp_path / "run", FitConfig(**{**SMALL, "epochs": 4}), progress=False)
    assert result.complete and result.step == 4 * 4  # 4 epochs of 4 draws from 3 samples
    assert len(calls) == 1 + 3  # one to size the decoder, then one per sample, kept for the later epochs
