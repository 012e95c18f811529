"""Noise augmentation / test-time noise, dropout, weight decay + L1, RBF: each trains, reduces to standard
training when switched off, and behaves as documented (random deployed models, exact penalties)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp, same_weights

from advlab import zoo
from advlab.defenses import DropoutTraining, GaussianNoiseTraining, RBFTraining, RegularizedTraining, StandardTraining
from advlab.defenses.dropout import dropout_classifier
from advlab.defenses.noise import noisy_classifier

SETTINGS = dict(epochs=2, lr=1e-2, batch_size=64, progress=False, seed=2)


def _data(n=500):
    x, y = digits()
    return (x[:n], y[:n])


def test_switched_off_defenses_equal_standard_training():
    data = _data()
    std = StandardTraining(**SETTINGS).fit(mlp(), data)
    for trainer in (
        GaussianNoiseTraining(sigma=0.0, **SETTINGS),
        DropoutTraining(p=0.0, input_p=0.0, **SETTINGS),
        RegularizedTraining(l1=0.0, weight_decay=0.0, **SETTINGS),
    ):
        same_weights(std.model_, trainer.fit(mlp(), data).model_)


def test_noise_step_and_random_deployed_model():
    x, y = _data(32)
    t = GaussianNoiseTraining(sigma=0.3, test_sigma=0.5, **SETTINGS)
    model = mlp()
    _, logits = t.training_step(model, x, y, 0.25)
    seed = (2 * 1_000_003 + 250_000) % (2**63 - 1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(logits, model((x + 0.3 * noise).clamp(0, 1)))
    t.fit(model, _data())
    random_model = t.defended_model_
    with torch.no_grad():
        a, b = random_model(x), random_model(x)
        assert not torch.equal(a, b)  # a random model: the evaluation engine will attack it through EOT
        # the expectation over noise is close to the noise-free model's average prediction on noisy inputs
        assert random_model.num_classes == 10 and random_model.bounds == (0.0, 1.0)
    assert noisy_classifier(model, 0.0)(x).equal(model(x))
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoiseTraining(sigma=-0.1)


def test_dropout_hooks_are_removed_and_test_time_dropout_is_random():
    data = _data()
    model = mlp()
    keys = list(model.state_dict())
    t = DropoutTraining(p=0.5, input_p=0.2, test_time=True, **SETTINGS).fit(model, data)
    assert list(t.model_.state_dict()) == keys  # saved as its own architecture
    x = data[0][:16]
    with torch.no_grad():
        assert torch.equal(t.model_(x), t.model_(x))  # the trained model itself is deterministic
        r = t.defended_model_
        assert not torch.equal(r(x), r(x))
    assert all(not m._forward_pre_hooks for m in t.model_.modules())
    with pytest.raises(ValueError, match="p"):
        DropoutTraining(p=1.0)
    assert dropout_classifier(t.model_, 0.0, 0.0)(x).equal(t.model_(x))


def test_regularized_loss_by_hand():
    x, y = _data(32)
    model = mlp()
    t = RegularizedTraining(l1=1e-3, **SETTINGS)
    t.setup(model, x, y)
    loss, _ = t.training_step(model, x, y, 0.0)
    w1 = model.module[1].weight
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y) + 1e-3 * w1.abs().sum())
    trained = RegularizedTraining(l1=1e-2, **SETTINGS).fit(mlp(), _data())
    plain = StandardTraining(**SETTINGS).fit(mlp(), _data())
    assert trained.model_.module[1].weight.abs().sum() < plain.model_.module[1].weight.abs().sum()
    assert t.settings()["weight_decay"] == 5e-4 and t.settings()["l1"] == 1e-3
    with pytest.raises(ValueError, match="l1"):
        RegularizedTraining(l1=-1)


def test_rbf_trains_an_rbf_network_only():
    x, y = digits()
    clf = zoo.build_classifier("rbf", (1, 8, 8), 10)
    t = RBFTraining(epochs=3, batch_size=64, progress=False).fit(clf, (x[:1400], y[:1400]), (x[1400:], y[1400:]))
    assert t.history_[-1]["val_accuracy"] > 0.5  # well above chance (0.1)
    with pytest.raises(TypeError, match="rbf"):
        RBFTraining(epochs=1, progress=False).fit(mlp(), (x[:100], y[:100]))
