"""Biggio et al. 2012 SVM poisoning: the KKT gradient, the attack against random flipped points, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from advlab.poisoning import PoisonedData, biggio_svm
from advlab.poisoning.biggio import SVMSettings, kkt_gradient


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    centre = torch.where(y[:, None] == 1, 0.65, 0.35)
    return (centre + 0.1 * torch.randn(n, 2, generator=g)).clamp(0, 1), y


def _digits_7_vs_1() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The paper's pair of digits, from scikit-learn's 8x8 digits: 40 training, 120 validation, 201 test rows."""
    digits = load_digits()
    x, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
    keep = (y == 7) | (y == 1)
    x, y = x[keep], y[keep]
    order = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[:40], y[:40]), (x[40:160], y[40:160]), (x[160:], y[160:])


TRAIN, VAL = _blobs(40, 1), _blobs(200, 2)
DIGITS_TRAIN, DIGITS_VAL, DIGITS_TEST = _digits_7_vs_1()


def _sklearn_svc(poisoned: PoisonedData, kernel: str) -> SVC:
    """The independent oracle: scikit-learn's SVC retrained on the poisoned set."""
    return SVC(kernel=kernel, C=1.0, gamma=poisoned.settings["gamma"]).fit(poisoned.x.numpy(), poisoned.y.numpy())


def _sklearn_test_error(poisoned: PoisonedData, kernel: str) -> float:
    return float(1 - _sklearn_svc(poisoned, kernel).score(DIGITS_TEST[0].numpy(), DIGITS_TEST[1].numpy()))


def _sklearn_val_hinge(poisoned: PoisonedData, kernel: str) -> float:
    signs = np.where(DIGITS_VAL[1].numpy() == 7, 1, -1)
    decision = _sklearn_svc(poisoned, kernel).decision_function(DIGITS_VAL[0].numpy())
    return float(np.maximum(0, 1 - signs * decision).sum())


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_kkt_gradient_matches_finite_differences_of_the_retrained_svm(kernel: str) -> None:
    svm = SVMSettings(kernel, 1.0, 5.0)
    x = torch.cat([TRAIN[0], TRAIN[0][:1]]).double()
    signs = torch.cat([2.0 * TRAIN[1] - 1, torch.tensor([1.0 - 2 * float(TRAIN[1][0])])]).double()
    val_signs = (2.0 * VAL[1] - 1).double()

    def loss(rows: torch.Tensor) -> float:
        svc = SVC(kernel=kernel, C=1.0, gamma=5.0, tol=1e-9).fit(rows.numpy(), (signs > 0).long().numpy())
        return float(np.maximum(0, 1 - val_signs.numpy() * svc.decision_function(VAL[0].double().numpy())).sum())

    svc = svm.fit(x, (signs > 0).long())
    grad = kkt_gradient(svc, svm, x, signs, VAL[0].double(), val_signs)
    for d in range(2):
        step = torch.zeros_like(x)
        step[-1, d] = 1e-4
        numeric = (loss(x + step) - loss(x - step)) / 2e-4
        assert abs(float(grad[d]) - numeric) < 1e-2 * max(1.0, abs(numeric))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_attack_points_hurt_more_than_the_random_flipped_points_they_start_from(kernel: str) -> None:
    attack = biggio_svm(DIGITS_TRAIN, DIGITS_VAL, n_points=2, kernel=kernel, steps=20, seed=0)
    random = biggio_svm(DIGITS_TRAIN, DIGITS_VAL, n_points=2, kernel=kernel, steps=0, seed=0)
    assert _sklearn_val_hinge(attack, kernel) > _sklearn_val_hinge(random, kernel) + 3.0
    assert _sklearn_test_error(attack, kernel) > _sklearn_test_error(random, kernel)
    losses = attack.extra["validation_loss"]
    assert bool((losses[1:] >= losses[:-1]).all())
    assert abs(float(losses[-1]) - _sklearn_val_hinge(attack, kernel)) < 1e-2 * float(losses[-1])


def test_the_poisoned_set_keeps_the_clean_rows_and_records_the_inserted_points(tmp_path) -> None:
    x, y = TRAIN
    before = x.clone()
    poisoned = biggio_svm((x, y), VAL, n_points=2, label=1, steps=5, step_size=0.1, seed=3)
    assert torch.equal(x, before)
    assert torch.equal(poisoned.x[:40], x) and torch.equal(poisoned.y[:40], y)
    assert poisoned.inserted == 2 and poisoned.indices.tolist() == [40, 41]
    assert poisoned.original_labels.tolist() == [-1, -1] and poisoned.y[40:].tolist() == [1, 1]
    assert float(poisoned.x.min()) >= 0.0 and float(poisoned.x.max()) <= 1.0
    again = PoisonedData.load(poisoned.save(tmp_path / "p"))
    assert torch.equal(again.x, poisoned.x) and again.attack == "biggio"
    assert torch.equal(biggio_svm((x, y), VAL, n_points=2, label=1, steps=5, step_size=0.1, seed=3).x, poisoned.x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_points": 0}, "n_points"),
        ({"kernel": "poly"}, "kernel"),
        ({"C": 0.0}, "C"),
        ({"gamma": -1.0}, "gamma"),
        ({"steps": -1}, "steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"label": 5}, "label"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        biggio_svm(TRAIN, VAL, **kwargs)


def test_data_that_is_not_binary_or_outside_the_box_is_refused() -> None:
    x, y = TRAIN
    with pytest.raises(ValueError, match="binary SVM"):
        biggio_svm((x, y % 2 + (torch.arange(40) % 3 == 0).long()), VAL)
    with pytest.raises(ValueError, match="val y"):
        biggio_svm(TRAIN, (VAL[0], VAL[1] + 1))
    with pytest.raises(ValueError, match="val x"):
        biggio_svm(TRAIN, (VAL[0][:, :1], VAL[1]))
    with pytest.raises(ValueError, match="train x"):
        biggio_svm((x + 2, y), VAL)
