"""Destruction rate (Kurakin et al. 2016, eq. 1) and the expectation-over-transformation wrapper."""

from __future__ import annotations

import math

import pytest
import torch

from advlab.physical import (
    ExpectationOverTransformation,
    GaussianNoise,
    destruction_rate,
    eot_attack,
    measure_destruction,
    with_transformations,
)
from advlab.threat import ThreatModel


def test_destruction_rate_on_hand_made_predictions():
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = torch.tensor([0, 1, 2, 3, 9, 5])  # example 4 is wrong on clean: not counted
    adv = torch.tensor([7, 1, 8, 8, 8, 8])  # example 1 is not adversarial: not counted
    trans = torch.tensor([0, 1, 2, 7, 4, 5])  # counted {0, 2, 3, 5}; destroyed {0, 2, 5}
    assert destruction_rate(y, clean, adv, trans) == pytest.approx(3 / 4)
    # logits are accepted in place of labels
    eye = torch.eye(10)
    assert destruction_rate(y, eye[clean], eye[adv], eye[trans]) == pytest.approx(3 / 4)
    # the formula written out term by term
    c = lambda p: (p == y).float()  # noqa: E731
    num = (c(clean) * (1 - c(adv)) * c(trans)).sum()
    den = (c(clean) * (1 - c(adv))).sum()
    assert destruction_rate(y, clean, adv, trans) == pytest.approx(float(num / den))


def test_destruction_rate_empty_denominator_and_shape_errors():
    y = torch.tensor([0, 1])
    assert math.isnan(destruction_rate(y, y, y, y))  # nothing was adversarial
    with pytest.raises(ValueError, match="one prediction per label"):
        destruction_rate(y, y, torch.tensor([1]), y)


def test_eot_with_identity_transform_equals_plain_model_exactly(mlp_model, digits):
    x = digits["x_test"][:32]
    for samples in (1, 4, 7):
        eot = with_transformations(mlp_model, "none", samples=samples)
        with torch.no_grad():
            assert torch.equal(eot(x), mlp_model(x))


def test_eot_is_the_average_over_draws_from_its_own_generator(mlp_model, digits):
    x = digits["x_test"][:16]
    t = GaussianNoise((0.0, 0.2))
    k = 5
    eot = ExpectationOverTransformation(mlp_model, t, samples=k, seed=11)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        manual = torch.stack([mlp_model(t(x, g)) for _ in range(k)]).mean(0)
        got = eot(x)
        assert torch.allclose(got, manual, atol=1e-5)
        eot.reset()
        assert torch.allclose(eot(x), got, atol=0)  # reset replays the same draws
    state = torch.random.get_rng_state()
    with torch.no_grad():
        eot(x)
    assert torch.equal(state, torch.random.get_rng_state())


def test_eot_log_probs_average_and_gradients_flow(mlp_model, digits):
    x = digits["x_test"][:4].clone().requires_grad_(True)
    eot = ExpectationOverTransformation(mlp_model, "noise=0.05,blur=0.5..1", samples=3, average="log_probs")
    out = eot(x)
    g0 = torch.Generator().manual_seed(0)
    manual = torch.stack([torch.log_softmax(mlp_model(eot.transform(x, g0)), 1) for _ in range(3)]).mean(0)
    assert torch.allclose(out, manual, atol=1e-5)
    assert bool((out.exp().sum(1) <= 1 + 1e-5).all())  # a geometric mean of distributions sums to at most 1
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert float(g.abs().sum()) > 0


def test_identity_transform_destroys_nothing(mlp_model, digits):
    x, y = digits["x_test"][:60], digits["y_test"][:60]
    report = measure_destruction(mlp_model, x, y, "none", attacks=["fgsm", "illc"], eps=[0.2], draws=2)
    for row in report.rows:
        assert row.destruction_rate == 0.0
        assert row.transformed_adversarial_accuracy == pytest.approx(row.adversarial_accuracy)
        assert row.transformed_clean_accuracy == pytest.approx(row.clean_accuracy)
        assert row.counted > 0


@pytest.mark.parametrize("spec, factor", [("noise=0.15..0.25", 0.85), ("blur=0.5..1", 0.3)])
def test_eot_pgd_survives_transformations_better_than_plain_pgd(mlp_model, digits, spec, factor):
    # comparative and seeded: same images, same evaluation draws, same PGD settings; only the model attacked differs
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    report = measure_destruction(
        mlp_model,
        x,
        y,
        spec,
        attacks=["pgd"],
        eps=[0.15],
        eot_samples=[0, 10],
        draws=8,
        seed=1,
        attack_options={"pgd": {"steps": 20}},
    )
    plain, eot = report.rows
    assert plain.eot_samples == 0 and eot.eot_samples == 10
    assert plain.counted > 50 and eot.counted > 50
    assert plain.destruction_rate > 0.1  # the transformation does destroy plain PGD examples here ...
    assert eot.destruction_rate < factor * plain.destruction_rate  # ... and fewer EOT ones
    assert len(eot.destruction_rate_per_draw) == 8


def test_eot_attack_runs_any_registered_attack(mlp_model, digits):
    x, y = digits["x_test"][:20], digits["y_test"][:20]
    threat = ThreatModel("linf", 0.1)
    res = eot_attack("bim", mlp_model, x, y, threat, "brightness=-0.05..0.05", samples=3)
    assert bool(threat.contains(torch.as_tensor(res.x_adv), x).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": [-0.1]}, "eps"),
        ({"attacks": ["fgsmm"]}, "(?i)did you mean"),
        ({"draws": 0}, "draws"),
        ({"eot_samples": [-1]}, "eot_samples"),
        ({"eot_samples": []}, "eot_samples"),
    ],
)
def test_measure_destruction_bad_input(mlp_model, digits, kwargs, match):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with pytest.raises(ValueError, match=match):
        measure_destruction(mlp_model, x, y, "none", **kwargs)


def test_eot_bad_settings(mlp_model):
    with pytest.raises(ValueError, match="samples"):
        with_transformations(mlp_model, "none", samples=0)
    with pytest.raises(ValueError, match="average"):
        with_transformations(mlp_model, "none", average="probs")
    with pytest.raises(ValueError, match="method"):
        with_transformations(mlp_model, "jpeg=50", jpeg="exact")
