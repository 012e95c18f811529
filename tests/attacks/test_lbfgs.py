"""The L-BFGS attack against closed forms on linear models, a QP solver, and per-example runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import ATTACKS, LBFGS, lbfgs

BOX = (-10.0, 10.0)


@pytest.fixture(scope="module")
def linear_points(make_linear_binary):
    model, w, b = make_linear_binary(d=20, seed=3, bias=0.5, bounds=BOX)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, 20, generator=g) * 2.0
    margin = x @ w + b
    return model, w, x, (margin > 0).long(), margin.abs()


def test_registered_with_honest_flags():
    assert ATTACKS.get("lbfgs") is LBFGS
    assert LBFGS.norms == ("l2",) and LBFGS.supports_targeted and LBFGS.minimum_norm and not LBFGS.stochastic
    assert "1312.6199" in LBFGS.paper


@pytest.mark.parametrize("targeted", [False, True])
def test_linear_closed_form(linear_points, targeted):
    """The minimal L2 perturbation of sign(w.x + b) is |w.x + b| / |w|_2 along w; L-BFGS is within 0.5%."""
    model, w, x, y, margin = linear_points
    goal = Targeted(1 - y) if targeted else None
    res = lbfgs(model, x, y, ThreatModel("l2", 100.0, BOX), goal=goal, steps=30)
    minimal = margin / w.norm()
    assert bool(res.success.all())
    assert bool((res.distance >= minimal * (1 - 1e-4)).all())
    assert bool((res.distance <= minimal * 1.005).all()), (res.distance / minimal).tolist()
    delta = res.x_adv - x
    cos = (delta @ w).abs() / (delta.norm(dim=1) * w.norm())
    assert bool((cos > 0.9999).all())
    assert bool((res.info["const"] > 0).all())


def _qp_targeted_minimum(W: np.ndarray, b: np.ndarray, x: np.ndarray, t: int, bounds) -> float:
    """min |d|_2 s.t. logit t >= every other logit at x + d, x + d in the box (SLSQP): an independent solver."""
    others = [j for j in range(W.shape[0]) if j != t]
    A = W[t][None] - W[others]
    c = b[t] - b[others]
    res = minimize(
        lambda d: d @ d,
        np.zeros_like(x),
        jac=lambda d: 2 * d,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda d: A @ (x + d) + c, "jac": lambda d: A}],
        bounds=[(bounds[0] - xi, bounds[1] - xi) for xi in x],
        options={"maxiter": 500, "ftol": 1e-12},
    )
    assert res.success
    return float(np.sqrt(res.fun))


def test_targeted_near_qp_optimum_on_affine_multiclass(softmax_model, digits_batch):
    """On an affine 10-class model the minimal targeted perturbation (box [0, 1]) is a QP. L-BFGS cannot beat
    it, and lands close: its cross-entropy pulls along a softmax mix of class directions, not the QP normal."""
    x, y = digits_batch
    x, y = x[:4], y[:4]
    target = (y + 3) % 10
    W = softmax_model.module[1].weight.detach().double().numpy()
    b = softmax_model.module[1].bias.detach().double().numpy()
    expected = torch.tensor(
        [_qp_targeted_minimum(W, b, x[i].reshape(-1).double().numpy(), int(target[i]), (0.0, 1.0)) for i in range(4)],
        dtype=torch.float32,
    )
    res = lbfgs(softmax_model, x, y, ThreatModel("l2", 100.0), goal=Targeted(target), steps=50)
    assert bool(res.success.all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool((res.distance >= expected * (1 - 1e-3)).all())
    assert bool((res.distance <= expected * 1.02).all()), (res.distance / expected).tolist()


def test_one_batched_call_matches_per_example_calls(mlp_model, digits_batch):
    """The batch shares one L-BFGS-B problem with disjoint variables: the same minima as one example at a time."""
    x, y = digits_batch
    x, y = x[:2], y[:2]
    target = (y + 1) % 10
    threat = ThreatModel("l2", 100.0)
    batched = lbfgs(mlp_model, x, y, threat, goal=Targeted(target), binary_search_steps=5, steps=40)
    single = torch.cat(
        [
            lbfgs(
                mlp_model,
                x[i : i + 1],
                y[i : i + 1],
                threat,
                goal=Targeted(target[i : i + 1]),
                binary_search_steps=5,
                steps=40,
            ).distance
            for i in range(2)
        ]
    )
    assert bool(batched.success.all())
    torch.testing.assert_close(batched.distance, single, rtol=0.03, atol=1e-3)


def test_inside_non_unit_box_and_already_fooled(mlp_model, digits_batch):
    x, y = digits_batch
    x, y = x[:4], y[:4]
    model = Classifier(
        mlp_model.module, mean=[-1.0], std=[3.0], bounds=(-1.0, 2.0), num_classes=10, input_shape=(1, 8, 8)
    ).eval()
    wrong = y.clone()
    wrong[0] = (y[0] + 1) % 10  # example 0 is "misclassified" already: r = 0 is its minimum
    res = lbfgs(model, 3 * x - 1, wrong, ThreatModel("l2", 100.0, (-1.0, 2.0)), binary_search_steps=4, steps=50)
    assert float(res.x_adv.min()) >= -1.0 and float(res.x_adv.max()) <= 2.0
    assert float(res.x_adv.min()) == -1.0  # pixels stay on the lower edge: no clamp to [0, 1]
    assert bool(res.success.all())
    assert float(res.distance[0]) == 0.0 and bool((res.distance[1:] > 0).all())


def test_bad_settings_raise(mlp_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="initial_const"):
        lbfgs(mlp_model, x, y, ThreatModel("l2", 1.0), initial_const=0.0)
    with pytest.raises(ValueError, match="binary_search_steps"):
        lbfgs(mlp_model, x, y, ThreatModel("l2", 1.0), binary_search_steps=0)
    with pytest.raises(TypeError, match="steps"):
        lbfgs(mlp_model, x, y, ThreatModel("l2", 1.0), steps=None)
    with pytest.raises(ValueError, match="does not support norm 'linf'"):
        lbfgs(mlp_model, x, y, ThreatModel("linf", 0.1))
