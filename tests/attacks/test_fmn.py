"""FMN against closed forms: on a linear binary model the minimal lp perturbation is |f(x)| / ||w||_dual."""

from __future__ import annotations

import pytest
import torch

from advlab import Targeted, ThreatModel
from advlab.attacks import FMN, fmn

DUAL = {"linf": lambda w: w.abs().sum(), "l2": lambda w: w.norm(), "l1": lambda w: w.abs().max()}


def _linear_points(make_linear_binary, d=20, n=8):
    model, w, b = make_linear_binary(d=d, seed=3, bias=0.5)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(100, d, generator=g) * 2
    m = x @ w + b
    keep = (m.abs() > 1).nonzero().flatten()[:n]
    return model, w, b, x[keep], (m[keep] > 0).long()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_min_distance_is_the_closed_form_on_a_linear_model(norm, make_linear_binary):
    model, w, b, x, y = _linear_points(make_linear_binary)
    minimal = (x @ w + b).abs() / DUAL[norm](w)
    res = fmn(model, x, y, ThreatModel(norm, float(minimal.max()) * 2, (-100.0, 100.0)), steps=100)
    got = res.info["min_distance"]
    assert bool(res.success.all())
    assert bool((got >= minimal * (1 - 1e-4)).all()), "below the analytic minimum: impossible"
    assert bool((got <= minimal * 1.03).all()), f"more than 3% above the minimum: {(got / minimal).tolist()}"
    # with an eps above every minimum the framework's projection is a no-op: distance is the minimal distance
    torch.testing.assert_close(res.distance, got, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_success_at_eps_is_min_distance_below_eps(norm, make_linear_binary):
    """The framework projects the minimal perturbation onto eps: success iff the minimum fits in the ball."""
    model, w, b, x, y = _linear_points(make_linear_binary)
    minimal = (x @ w + b).abs() / DUAL[norm](w)
    eps = float(minimal.median())
    res = fmn(model, x, y, ThreatModel(norm, eps, (-100.0, 100.0)), steps=100)
    md = res.info["min_distance"]
    clear = (md - eps).abs() > 1e-3 * eps  # leave out ties at the boundary
    assert torch.equal(res.success[clear], (md <= eps)[clear])
    assert bool((res.distance <= eps * (1 + 1e-5)).all())


def test_min_distance_points_are_adversarial_on_the_trained_mlp(digits_batch, mlp_model):
    x, y = digits_batch
    res = fmn(mlp_model, x, y, ThreatModel("l2", 100.0), steps=60)
    md = res.info["min_distance"]
    assert bool(torch.isfinite(md).all()) and bool(res.success.all())
    torch.testing.assert_close(res.distance, md, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert bool((mlp_model(res.x_adv).argmax(1) != y).all())
    # robust accuracy from min_distance at a radius equals the framework's answer at that radius
    r = float(md.median())
    res_r = fmn(mlp_model, x, y, ThreatModel("l2", r), steps=60)
    clear = (md - r).abs() > 1e-4
    assert torch.equal(res_r.success[clear], (md <= r)[clear])


def test_not_found_is_inf_and_already_adversarial_is_zero(make_linear_binary, digits, mlp_model):
    model, w, b, x, y = _linear_points(make_linear_binary)
    res = fmn(model, x, y, ThreatModel("l2", 1.0, (-100.0, 100.0)), steps=1, alpha_init=1e-6)
    assert bool(torch.isinf(res.info["min_distance"]).all())  # one tiny step cannot cross a margin > 1
    xt, yt = digits["x_test"], digits["y_test"]
    with torch.no_grad():
        wrong = mlp_model(xt).argmax(1) != yt
    res = fmn(mlp_model, xt[wrong], yt[wrong], ThreatModel("linf", 0.1), steps=5)
    assert res.info["min_distance"].tolist() == [0.0] * int(wrong.sum())


def test_targeted_success_means_the_target(digits_batch, mlp_model):
    x, y = digits_batch
    target = (y + 5) % 10
    res = fmn(mlp_model, x, y, ThreatModel("l2", 100.0), goal=Targeted(target), steps=60)
    with torch.no_grad():
        assert torch.equal(mlp_model(res.x_adv).argmax(1) == target, res.success)
    assert res.success_rate >= 0.9


def test_config_and_bad_settings(digits_batch, mlp_model):
    assert FMN.minimum_norm and FMN.norms == ("linf", "l2", "l1")
    assert FMN().settings()["steps"] == 100
    x, y = digits_batch
    threat = ThreatModel("l2", 1.0)
    with pytest.raises(ValueError, match="steps"):
        fmn(mlp_model, x, y, threat, steps=0)
    with pytest.raises(ValueError, match="gamma_init"):
        fmn(mlp_model, x, y, threat, gamma_init=1.0)
    with pytest.raises(ValueError, match="alpha_init"):
        fmn(mlp_model, x, y, threat, alpha_init=0.0)
