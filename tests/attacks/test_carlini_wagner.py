"""Carlini-Wagner L2 and L∞ against closed forms, a QP solver, and the algorithms' own invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import ATTACKS, CarliniWagnerL2, CarliniWagnerLinf, carlini_wagner_l2, carlini_wagner_linf

BOX = (-3.0, 3.0)


@pytest.fixture(scope="module")
def linear_points(make_linear_binary):
    """A binary linear model on a (-3, 3) box and points whose minimal perturbations stay inside the box."""
    model, w, b = make_linear_binary(d=10, seed=3, bounds=BOX)
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(200, 10, generator=g) * 0.7).clamp(-2.0, 2.0)
    margin = x @ w + b
    keep = (margin.abs() > 1.0).nonzero().flatten()[:6]
    x, margin = x[keep], margin[keep]
    return model, w, x, (margin > 0).long(), margin.abs()


def test_registered_with_honest_flags():
    assert ATTACKS.get("cw-l2") is CarliniWagnerL2 and ATTACKS.get("cw-linf") is CarliniWagnerLinf
    for cls, norm in ((CarliniWagnerL2, "l2"), (CarliniWagnerLinf, "linf")):
        assert cls.norms == (norm,) and cls.supports_targeted and cls.minimum_norm and not cls.stochastic
        assert "1608.04644" in cls.paper
    assert CarliniWagnerL2().binary_search_steps == 9 and CarliniWagnerL2().lr == 0.01
    assert CarliniWagnerL2().initial_const == 1e-3
    assert CarliniWagnerLinf().decrease_factor == 0.9


# ---------------------------------------------------------------------- L2
def test_l2_linear_closed_form(linear_points):
    """The minimal L2 perturbation of sign(w.x + b) is |w.x + b| / |w|_2; C&W gets within 0.5%."""
    model, w, x, y, margin = linear_points
    res = carlini_wagner_l2(model, x, y, ThreatModel("l2", 100.0, BOX), steps=300)
    minimal = margin / w.norm()
    assert bool(res.success.all())
    assert bool((res.distance >= minimal * (1 - 1e-4)).all())
    assert bool((res.distance <= minimal * 1.005).all()), (res.distance / minimal).tolist()
    # ... along -sign(margin) * w: the perturbation is parallel to w
    delta = res.x_adv - x
    cos = (delta @ w).abs() / (delta.norm(dim=1) * w.norm())
    assert bool((cos > 0.999).all())


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


def test_l2_targeted_matches_qp_on_affine_multiclass(softmax_model, digits_batch):
    """On an affine 10-class model the targeted minimum is a QP; C&W lands within 0.5% of its optimum."""
    x, y = digits_batch
    x, y = x[:4], y[:4]
    target = (y + 3) % 10
    bounds = (-1.0, 2.0)  # no pixel on the box edge, where the tanh variables cannot move
    W = softmax_model.module[1].weight.detach().double().numpy()
    b = softmax_model.module[1].bias.detach().double().numpy()
    expected = [_qp_targeted_minimum(W, b, x[i].reshape(-1).double().numpy(), int(target[i]), bounds) for i in range(4)]
    expected = torch.tensor(expected, dtype=torch.float32)
    res = carlini_wagner_l2(softmax_model, x, y, ThreatModel("l2", 100.0, bounds), goal=Targeted(target), steps=300)
    assert bool(res.success.all())
    assert bool((res.distance >= expected * (1 - 1e-3)).all())
    assert bool((res.distance <= expected * 1.005).all()), (res.distance / expected).tolist()


def test_l2_keeps_smallest_successful_distance_over_search(mlp_model, digits_batch):
    """The returned distance is the minimum of every run's smallest success: never larger."""
    x, y = digits_batch
    x, y = x[:8], y[:8]
    res = carlini_wagner_l2(mlp_model, x, y, ThreatModel("l2", 100.0), steps=200, binary_search_steps=5)
    per_run = res.info["search_distances"]  # (N, binary_search_steps)
    assert per_run.shape == (8, 5)
    best_run = per_run.min(dim=1).values
    assert int(res.success.sum()) >= 6
    assert torch.equal(res.success, torch.isfinite(best_run))  # success iff some run succeeded
    ok = res.success
    torch.testing.assert_close(res.distance[ok], best_run[ok], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.distance[~ok], torch.zeros(int((~ok).sum())))  # never fooled: x returned


def test_l2_const_search_multiplies_by_ten_until_success(linear_points):
    """From a c too small to succeed, c grows tenfold per run; with too few runs nothing is found and x returns."""
    model, _w, x, y, _margin = linear_points
    threat = ThreatModel("l2", 100.0, BOX)
    few = carlini_wagner_l2(model, x, y, threat, initial_const=1e-7, binary_search_steps=2, steps=100)
    assert not bool(few.success.any())
    torch.testing.assert_close(few.x_adv, x)
    assert bool(torch.isinf(few.info["search_distances"]).all())
    many = carlini_wagner_l2(model, x, y, threat, initial_const=1e-7, binary_search_steps=9, steps=100)
    assert bool(many.success.all())
    first_success = torch.isfinite(many.info["search_distances"]).float().argmax(1)
    # c on the first successful run is 1e-7 * 10^k; the best result's c is at least that large
    assert bool((first_success >= 2).all())
    assert bool((many.info["const"] >= 1e-7 * 10.0 ** first_success.double() * (1 - 1e-9)).all())


def test_l2_confidence_margin(mlp_model, digits_batch):
    """With confidence kappa every success has a logit margin of at least kappa toward the target."""
    x, y = digits_batch
    x, y = x[:6], y[:6]
    target = (y + 1) % 10
    res = carlini_wagner_l2(
        mlp_model,
        x,
        y,
        ThreatModel("l2", 100.0),
        goal=Targeted(target),
        confidence=5.0,
        steps=200,
        binary_search_steps=6,
        initial_const=1e-2,
    )
    z = res.logits
    z_t = z.gather(1, target[:, None]).squeeze(1)
    other = z.scatter(1, target[:, None], float("-inf")).amax(1)
    ok = res.success
    assert int(ok.sum()) >= 4
    assert bool((z_t - other >= 5.0 - 1e-3)[ok].all())
    plain = carlini_wagner_l2(
        mlp_model,
        x,
        y,
        ThreatModel("l2", 100.0),
        goal=Targeted(target),
        steps=200,
        binary_search_steps=6,
        initial_const=1e-2,
    )
    assert bool(plain.success[ok].all())
    assert bool((res.distance[ok] > plain.distance[ok]).all())  # the confidence margin costs distance


def test_l2_inside_non_unit_box(mlp_model, digits_batch):
    x, y = digits_batch
    x, y = x[:6], y[:6]
    model = Classifier(
        mlp_model.module, mean=[-1.0], std=[3.0], bounds=(-1.0, 2.0), num_classes=10, input_shape=(1, 8, 8)
    ).eval()
    res = carlini_wagner_l2(
        model, 3 * x - 1, y, ThreatModel("l2", 100.0, (-1.0, 2.0)), steps=200, binary_search_steps=5
    )
    assert float(res.x_adv.min()) >= -1.0 and float(res.x_adv.max()) <= 2.0
    assert bool(res.success.all())
    assert float((res.x_adv < 0).float().mean()) > 0.3  # background pixels stay near -1: no clamp to [0, 1]


# ---------------------------------------------------------------------- L∞
def test_linf_linear_within_one_tau_step_of_closed_form(linear_points):
    """The minimal L∞ perturbation is |margin| / |w|_1. Tau shrinks by 0.9 per success, so the result is
    within a factor 1 / 0.9 of it; with a factor of 0.98 within 1 / 0.98."""
    model, w, x, y, margin = linear_points
    minimal = margin / w.abs().sum()
    threat = ThreatModel("linf", 100.0, BOX)
    for factor in (0.9, 0.98):
        res = carlini_wagner_linf(model, x, y, threat, steps=50, initial_const=1e-2, decrease_factor=factor)
        assert bool(res.success.all())
        assert bool((res.distance >= minimal * (1 - 1e-4)).all())
        assert bool((res.distance <= minimal / factor * 1.01).all()), (res.distance / minimal).tolist()
        # when the search ended, tau had dropped below the minimum: the next round could not succeed
        assert bool((res.info["tau"] <= minimal * 1.01).all())


def test_linf_tau_bookkeeping_on_mlp(mlp_model, digits_batch):
    x, y = digits_batch
    x, y = x[:6], y[:6]
    target = (y + 1) % 10
    res = carlini_wagner_linf(
        mlp_model, x, y, ThreatModel("linf", 1.0), goal=Targeted(target), steps=30, initial_const=1e-2
    )
    ok = res.success
    assert int(ok.sum()) >= 4
    assert torch.equal(ok, res.info["rounds"] >= 1)  # an example succeeds iff some tau round was accepted
    # tau is set to 0.9 x min(tau, the accepted iterate's L∞ size), so the final tau is below 0.9 x distance
    assert bool((res.info["tau"][ok] <= 0.9 * res.distance[ok] * (1 + 1e-5)).all())
    assert float(res.distance[ok].max()) < 0.5
    torch.testing.assert_close(res.x_adv[~ok], x[~ok])


def test_linf_never_fooled_returns_x(linear_points):
    model, _w, x, y, _margin = linear_points
    # Adam moves w by about lr per step whatever c is: two steps cannot reach the boundary
    res = carlini_wagner_linf(
        model, x, y, ThreatModel("linf", 100.0, BOX), steps=2, initial_const=1e-5, largest_const=1.5e-5
    )
    assert not bool(res.success.any())
    torch.testing.assert_close(res.x_adv, x)


def test_bad_settings_raise(mlp_model, digits_batch):
    x, y = digits_batch
    l2, linf = ThreatModel("l2", 1.0), ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match="confidence"):
        carlini_wagner_l2(mlp_model, x, y, l2, confidence=-1.0)
    with pytest.raises(ValueError, match="binary_search_steps"):
        carlini_wagner_l2(mlp_model, x, y, l2, binary_search_steps=0)
    with pytest.raises(ValueError, match="lr"):
        carlini_wagner_l2(mlp_model, x, y, l2, lr=0.0)
    with pytest.raises(ValueError, match="initial_const"):
        carlini_wagner_l2(mlp_model, x, y, l2, initial_const=-1e-3)
    with pytest.raises(ValueError, match="does not support norm 'linf'"):
        carlini_wagner_l2(mlp_model, x, y, linf)
    with pytest.raises(ValueError, match="decrease_factor"):
        carlini_wagner_linf(mlp_model, x, y, linf, decrease_factor=1.0)
    with pytest.raises(ValueError, match="const_factor"):
        carlini_wagner_linf(mlp_model, x, y, linf, const_factor=1.0)
    with pytest.raises(ValueError, match="tau_min"):
        carlini_wagner_linf(mlp_model, x, y, linf, tau_min=0.0)
    with pytest.raises(ValueError, match="does not support norm 'l2'"):
        carlini_wagner_linf(mlp_model, x, y, l2)
