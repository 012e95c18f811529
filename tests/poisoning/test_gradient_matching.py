"""Witches' Brew gradient matching (Geiping et al. 2021) on scikit-learn's digits."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from advlab.poisoning import gradient_matching
from advlab.poisoning.gradient_matching import Alignment

DIGITS = load_digits()
X = torch.tensor(DIGITS.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
Y = torch.tensor(DIGITS.target)
TRAIN, TARGETS = (X[:1200], Y[:1200]), X[1200:1201]


def _clean_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(TRAIN[0]), TRAIN[1]).backward()
        opt.step()
    return model.eval()


MODEL = _clean_model()
ADVERSARIAL = (int(Y[1200]) + 1) % 10


def test_poisons_align_the_training_gradient_with_the_adversarial_gradient_inside_the_ball() -> None:
    x, y = TRAIN
    before = x.clone()
    poisoned = gradient_matching(
        MODEL, TRAIN, TARGETS, ADVERSARIAL, budget=0.02, eps=0.1, steps=30, restarts=1, augment=False
    )  # digits are not flip-invariant: no crafting augmentation
    rows = poisoned.indices
    assert torch.equal(x, before) and torch.equal(poisoned.y, y)
    assert rows.numel() == 24 and bool((y[rows] == ADVERSARIAL).all())
    assert float((poisoned.x[rows] - x[rows]).abs().max()) <= 0.1 + 1e-6
    assert float(poisoned.x.min()) >= 0.0 and float(poisoned.x.max()) <= 1.0
    keep = ~poisoned.is_poison()
    assert torch.equal(poisoned.x[keep], x[keep])
    # the independent check: the cosine recomputed from plain autograd, clean bases against poisons
    alignment = Alignment.of(MODEL, TARGETS, torch.full((1,), ADVERSARIAL))
    clean = float(alignment.loss(x[rows].clone().requires_grad_(True), y[rows]).detach())
    poison = float(alignment.loss(poisoned.x[rows].clone().requires_grad_(True), y[rows]).detach())
    assert poison < clean - 0.1  # measured: 0.45 for the clean bases, 0.23 for the poisons
    trace = poisoned.extra["alignment_loss"]
    assert float(trace[-1]) == pytest.approx(poison, abs=1e-5) and float(trace[-1]) < float(trace[0])


def test_with_augmentation_the_poisons_still_align_and_the_final_loss_is_without_augmentation() -> None:
    x, y = TRAIN
    poisoned = gradient_matching(MODEL, TRAIN, TARGETS, ADVERSARIAL, budget=0.02, eps=0.1, steps=30, restarts=1)
    assert poisoned.settings["augment"] is True
    rows = poisoned.indices
    alignment = Alignment.of(MODEL, TARGETS, torch.full((1,), ADVERSARIAL))
    plain = float(alignment.loss(poisoned.x[rows].clone().requires_grad_(True), y[rows]).detach())
    assert float(poisoned.extra["alignment_loss"][-1]) == pytest.approx(plain, abs=1e-5)
    # the alignment on random crops and flips of the poisons fell below that of the bases (independent draws)
    on_crops = [
        float(alignment.loss(images[rows], y[rows], torch.Generator().manual_seed(k)).detach())
        for images in (x, poisoned.x)
        for k in range(8)
    ]
    assert sum(on_crops[8:]) < sum(on_crops[:8])  # measured: 0.37 for the bases, 0.34 for the poisons (means)


def test_more_restarts_never_end_worse() -> None:
    settings = {"budget": 0.01, "eps": 0.05, "steps": 10, "seed": 3}
    one = gradient_matching(MODEL, TRAIN, TARGETS, ADVERSARIAL, restarts=1, **settings)
    three = gradient_matching(MODEL, TRAIN, TARGETS, ADVERSARIAL, restarts=3, **settings)
    assert float(three.extra["alignment_loss"][-1]) <= float(one.extra["alignment_loss"][-1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0.0}, "budget"),
        ({"budget": 0.5}, "budget"),
        ({"adversarial_class": 10}, "adversarial_class"),
        ({"eps": 0.0}, "eps"),
        ({"steps": 0}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"targets": torch.rand(1, 64)}, "targets"),
    ],
)
def test_bad_input_is_refused_naming_the_option(kwargs: dict, message: str) -> None:
    args = {"targets": TARGETS, "adversarial_class": ADVERSARIAL, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        gradient_matching(MODEL, TRAIN, **args)


def test_a_model_without_trainable_parameters_is_refused() -> None:
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        gradient_matching(frozen, TRAIN, TARGETS, ADVERSARIAL, steps=1, restarts=1)
