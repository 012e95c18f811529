"""Feature-collision poisons (Shafahi et al. 2018) in the transfer setting, on scikit-learn's digits."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from advlab.poisoning import PoisonedData, feature_collision


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small MLP trained on 1200 digits; its hidden layer is the frozen feature extractor."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
    head = nn.Linear(32, 10)
    opt = torch.optim.Adam([*features.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(head(features(x[:1200])), y[:1200]).backward()
        opt.step()
    return features.eval(), x[:1200], y[:1200], x[1200:], y[1200:]


FEATURES, X, Y, X_TEST, Y_TEST = _setup()


def _retrained_prediction(poisoned: PoisonedData, image: torch.Tensor) -> int:
    """The independent victim: scikit-learn's logistic regression refitted on the frozen features."""
    with torch.no_grad():
        train, query = FEATURES(poisoned.x).numpy(), FEATURES(image[None]).numpy()
    head = LogisticRegression(C=10.0, max_iter=2000).fit(train, poisoned.y.numpy())
    return int(head.predict(query)[0])


def test_poisons_collide_with_the_target_in_feature_space_and_stay_near_their_base() -> None:
    target = X_TEST[0]
    poisoned = feature_collision(FEATURES, (X, Y), target, base_class=1, n_poisons=3, steps=100, seed=0)
    poisons, bases = poisoned.x[-3:], X[poisoned.extra["base_rows"]]
    with torch.no_grad():
        goal = FEATURES(target[None])
        before = (FEATURES(bases) - goal).norm(dim=1)
        after = (FEATURES(poisons) - goal).norm(dim=1)
    assert bool((after < 0.1 * before).all())
    assert torch.allclose(after, poisoned.extra["feature_distance"], atol=1e-4)
    moved = (poisons - bases).flatten(1).norm(dim=1)
    assert bool((moved < (target - bases).flatten(1).norm(dim=1)).all())
    held = feature_collision(FEATURES, (X, Y), target, base_class=1, n_poisons=3, beta0=25.0, steps=100, seed=0)
    assert bool(((held.x[-3:] - bases).flatten(1).norm(dim=1) < moved).all())  # a larger beta stays nearer the base
    assert float(poisons.min()) >= 0.0 and float(poisons.max()) <= 1.0
    assert poisoned.y[-3:].tolist() == [1, 1, 1] and torch.equal(poisoned.x[:1200], X)
    assert poisoned.inserted == 3 and poisoned.target == 1
    assert bool((Y[poisoned.extra["base_rows"]] == 1).all())


def test_the_retrained_last_layer_gives_targets_the_base_class() -> None:
    hits, tried = 0, 0
    for i in range(6):
        target, label = X_TEST[i], int(Y_TEST[i])
        base = (label + 1) % 10
        clean = PoisonedData(X, Y, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), "none")
        if _retrained_prediction(clean, target) != label:
            continue
        tried += 1
        poisoned = feature_collision(FEATURES, (X, Y), target, base, n_poisons=5, opacity=0.3, steps=100, seed=i)
        hits += _retrained_prediction(poisoned, target) == base
    assert tried >= 5 and hits >= tried // 2, (hits, tried)  # measured: 4 of 6


def test_watermark_blends_the_target_into_the_bases() -> None:
    target = X_TEST[0]
    poisoned = feature_collision(FEATURES, (X, Y), target, base_class=2, n_poisons=2, opacity=0.3, steps=0, seed=1)
    expected = 0.3 * target + 0.7 * X[poisoned.extra["base_rows"]]
    assert torch.allclose(poisoned.x[-2:], expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_class": 10}, "base_class"),
        ({"n_poisons": 0}, "n_poisons"),
        ({"n_poisons": 10_000}, "n_poisons"),
        ({"opacity": 1.0}, "opacity"),
        ({"step_size": 0.0}, "step_size"),
        ({"steps": -1}, "steps"),
        ({"target_image": torch.rand(1, 6, 6)}, "target_image"),
    ],
)
def test_bad_input_is_refused_naming_the_option(kwargs: dict, message: str) -> None:
    args = {"target_image": X_TEST[0], "base_class": 1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        feature_collision(FEATURES, (X, Y), **args)
