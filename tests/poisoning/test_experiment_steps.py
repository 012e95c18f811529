"""``PoisonExperiment``'s steps for attacks that need the clean model, and the transfer victim's retraining."""

from __future__ import annotations

import pytest
import torch

from advlab.data import load_dataset
from advlab.poisoning.base import PoisonedData
from advlab.poisoning.experiment import PoisonExperiment
from advlab.poisoning.features import Penultimate, last_linear, penultimate_features
from advlab.poisoning.training import TargetedGoal, Training, retrain_last_layer

TRAIN, TEST = load_dataset("digits", "train").head(400), load_dataset("digits", "test").head(100)
TRAINING = Training((1, 8, 8), 10, arch="mlp", epochs=2, batch_size=64, lr=3e-3)


class Counting:
    """A training that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        self.calls += 1
        return TRAINING(x, y)

    def record(self) -> dict:
        return TRAINING.record()


def test_an_attack_that_needs_the_clean_model_gets_the_baseline_trained_once() -> None:
    seen = []

    def attack(x, y, model) -> PoisonedData:
        seen.append(model)
        rows = torch.arange(3)
        return PoisonedData(x.clone(), y.clone(), rows, y[rows].clone(), "identity", target=1)

    training = Counting()
    goal = TargetedGoal(index=0, image=TEST.x[0], label=int(TEST.y[0]), intended=1)
    exp = PoisonExperiment(
        (TRAIN.x, TRAIN.y), (TEST.x, TEST.y), attack, training, needs_clean_model=True, targeted=goal
    ).run()
    assert training.calls == 2 and seen == [exp.baseline_]  # baseline first, handed over, never trained again
    m = exp.metrics_
    assert m.target_prediction == int(exp.model_(TEST.x[:1]).argmax(1))
    assert m.baseline_target_prediction == int(exp.baseline_(TEST.x[:1]).argmax(1))
    assert m.targeted_success == (m.target_prediction == 1) and exp.record()["targeted"]["intended_class"] == 1


def test_the_clean_model_is_required_before_any_training() -> None:
    with pytest.raises(ValueError, match="needs_clean_model"):
        PoisonExperiment((TRAIN.x, TRAIN.y), (TEST.x, TEST.y), None, TRAINING, baseline=False, needs_clean_model=True)


def test_retrain_last_layer_changes_only_the_last_layer() -> None:
    clean = TRAINING(TRAIN.x, TRAIN.y)
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    y = (TRAIN.y + 1) % 10  # other labels, so the head must move
    victim = retrain_last_layer(clean, TRAIN.x, y, TRAINING)
    assert all(torch.equal(v, clean.state_dict()[k]) for k, v in before.items())  # the clean model is untouched
    assert torch.equal(penultimate_features(victim, TEST.x), penultimate_features(clean, TEST.x))
    assert not torch.equal(last_linear(victim).weight, last_linear(clean).weight)
    fitted = float((victim(TRAIN.x).argmax(1) == y).float().mean())
    assert fitted > float((clean(TRAIN.x).argmax(1) == y).float().mean())


def test_penultimate_is_differentiable_and_matches_the_hooked_features() -> None:
    clean = TRAINING(TRAIN.x, TRAIN.y)
    x = TEST.x[:5].clone().requires_grad_(True)
    features = Penultimate(clean)(x)
    assert torch.allclose(features.detach(), penultimate_features(clean, TEST.x[:5]), atol=1e-6)
    (grad,) = torch.autograd.grad(features.sum(), x)
    assert grad.shape == x.shape and float(grad.abs().sum()) > 0
