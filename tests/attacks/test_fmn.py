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
    model, _w, _b, x, y = _linear_points(make_linear_binary)
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
    assert FMN.minimum_norm and FMN.norms == ("linf", "l2", "l1", "l0")
    assert FMN().settings()["steps"] == 100
    x, y = digits_batch
    threat = ThreatModel("l2", 1.0)
    with pytest.raises(ValueError, match="steps"):
        fmn(mlp_model, x, y, threat, steps=0)
    with pytest.raises(ValueError, match="gamma_init"):
        fmn(mlp_model, x, y, threat, gamma_init=1.0)
    with pytest.raises(ValueError, match="alpha_init"):
        fmn(mlp_model, x, y, threat, alpha_init=0.0)


def test_l0_min_distance_is_the_greedy_optimum_on_a_linear_model():
    """With a [0, 1] box, coordinate i can move the margin by at most |w_i| * room_i; the fewest features
    that flip the sign are the largest such contributions taken greedily (an exact closed form)."""
    from torch import nn

    from advlab import Classifier

    d = 20
    g = torch.Generator().manual_seed(3)
    w = torch.randn(d, generator=g).sign() * (0.5 + 0.5 * torch.rand(d, generator=g))
    lin = nn.utils.skip_init(nn.Linear, d, 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.fill_(float(-w.sum() / 2 + 3))  # margins of a few features' reach

    class Binary(nn.Module):
        def forward(self, x):
            s = lin(x)
            return torch.cat([torch.zeros_like(s), s], 1)

    model = Classifier(Binary(), num_classes=2, input_shape=(d,)).eval()
    x = torch.rand(400, d, generator=torch.Generator().manual_seed(11))
    m = lin(x).squeeze(1).detach()
    y = (m > 0).long()
    toward_other = w[None] * torch.where(y == 1, -1.0, 1.0)[:, None] > 0  # raising x_i pushes the margin over
    room = torch.where(toward_other, 1 - x, x)
    reach = (w.abs()[None] * room).sort(dim=1, descending=True).values.cumsum(1)
    k = (reach < m.abs()[:, None]).sum(1) + 1
    keep = torch.cat([(k == v).nonzero().flatten()[:2] for v in range(1, 10)])  # minima from 1 to 9 features
    res = fmn(model, x[keep], y[keep], ThreatModel("l0", d), steps=100)
    got, want = res.info["min_distance"], k[keep].to(torch.float32)
    assert bool(res.success.all())
    assert bool((got >= want).all()), "fewer features than the closed form: impossible"
    # FMN-l0 is a heuristic for an NP-hard problem in general: measured 8/17 exact, the rest one or two above
    assert bool((got <= want + 2).all())
    assert float((got - want).mean()) <= 1.0
