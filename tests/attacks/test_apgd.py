"""APGD / APGD-T against independent oracles: the paper's checkpoint formula, an exact l1-box projection by
bisection, the analytic optimum on a linear model, and PGD with the same budget as a comparative baseline."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from advlab import Targeted, ThreatModel
from advlab.attacks import APGD, APGDT, apgd, apgd_t, pgd
from advlab.attacks.apgd import checkpoints, project_l1_box


# ---------------------------------------------------------------------- schedule
def _paper_checkpoints(n_iter: int) -> list[int]:
    """Croce & Hein 2020, Sec. 3.2, with exact rationals: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    w = sorted({math.ceil(pj * n_iter) for pj in p})
    return [v for v in w if v <= n_iter]


def _reference_checkpoints(n_iter: int) -> list[int]:
    """The reference code's integer form: first gap int(0.22 N), shrinking by int(0.03 N) down to int(0.06 N)."""
    gap, dec, low = int(0.22 * n_iter), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out, at = [0], 0
    while at + gap <= n_iter:
        at += gap
        out.append(at)
        gap = max(gap - dec, low)
    return out


@pytest.mark.parametrize("n_iter", [1, 7, 10, 50, 100, 137, 1000])
def test_checkpoints_follow_the_paper_formula(n_iter):
    assert checkpoints(n_iter) == _paper_checkpoints(n_iter)


@pytest.mark.parametrize("n_iter", [100, 200, 1000])
def test_checkpoints_match_the_reference_schedule_for_multiples_of_100(n_iter):
    assert checkpoints(n_iter) == _reference_checkpoints(n_iter)
    if n_iter == 100:
        assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


# ---------------------------------------------------------------------- l1 x box projection
def _bisection_projection(delta, x, eps, lo, hi):
    """Oracle: the same problem solved by 80 bisection steps on the threshold, in float64, one example at a time."""
    out = []
    for dv, xv in zip(delta.double(), x.double()):
        cap = torch.where(dv >= 0, hi - xv, xv - lo).clamp_min(0)

        def proj(lam):
            return dv.sign() * torch.minimum((dv.abs() - lam).clamp_min(0), cap)  # noqa: B023 - called within this iteration

        if proj(0.0).abs().sum() <= eps:
            out.append(proj(0.0))
            continue
        a, b = 0.0, float(dv.abs().max())
        for _ in range(80):
            m = (a + b) / 2
            a, b = (m, b) if proj(m).abs().sum() > eps else (a, m)
        out.append(proj(b))
    return torch.stack(out)


def test_l1_box_projection_matches_bisection_and_is_optimal():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 30, generator=g, dtype=torch.float64)
    delta = torch.randn(12, 30, generator=g, dtype=torch.float64) * torch.tensor([0.05, 0.5, 2.0]).repeat(4)[:, None]
    eps = 1.5
    got = project_l1_box(delta, x, eps, (0.0, 1.0))
    want = _bisection_projection(delta, x, eps, 0.0, 1.0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    assert bool((got.abs().sum(1) <= eps + 1e-9).all())
    assert bool(((x + got) >= 0).all() and ((x + got) <= 1).all())
    # optimality: no random feasible point is closer to x + delta
    dist = (got - delta).norm(dim=1)
    for _ in range(20):
        cand = project_l1_box(torch.randn(12, 30, generator=g, dtype=torch.float64), x, eps, (0.0, 1.0))
        assert bool(((cand - delta).norm(dim=1) >= dist - 1e-12).all())


def test_l1_box_projection_without_active_box_is_the_l1_ball_projection():
    """Second implementation: with a box that never binds it must equal Duchi et al.'s projection (ThreatModel)."""
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(6, 40, generator=g)
    x = torch.zeros(6, 40)
    eps = torch.tensor([0.5, 1.0, 2.0, 3.0, 100.0, 0.1])
    got = project_l1_box(delta, x, eps, (-1e3, 1e3))
    want = ThreatModel("l1", 1.0, (-1e3, 1e3)).project_delta(delta, eps)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- linear model
def _linear_points(make_linear_binary, d=20, n=6):
    model, w, b = make_linear_binary(d=d, seed=5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, d, generator=g) * 2
    m = x @ w + b
    # margins large enough never to flip, small enough that float32 cross-entropy keeps a non-zero gradient
    keep = ((m.abs() > 4) & (m.abs() < 10)).nonzero().flatten()[:n]
    return model, w, x[keep], (m[keep] > 0).long()


@pytest.mark.parametrize(
    "norm,eps,dual",
    [("linf", 0.05, lambda w: w.abs().sum()), ("l2", 0.5, lambda w: w.norm()), ("l1", 1.0, lambda w: w.abs().max())],
)
@pytest.mark.parametrize("loss", ["ce"])
def test_linear_model_margin_change_is_the_analytic_optimum(norm, eps, dual, loss, make_linear_binary):
    model, w, x, y = _linear_points(make_linear_binary)
    res = apgd(model, x, y, ThreatModel(norm, eps, (-100.0, 100.0)), steps=30, loss=loss)
    assert not bool(res.success.any())
    moved = torch.where(y == 1, 1.0, -1.0) * ((x - res.x_adv) @ w)
    torch.testing.assert_close(moved, (eps * dual(w)).expand_as(moved), rtol=1e-4, atol=1e-4)


def test_dlr_needs_three_classes(make_linear_binary):
    model, _w, x, y = _linear_points(make_linear_binary)
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd(model, x, y, ThreatModel("linf", 0.1, (-100.0, 100.0)), loss="dlr")


# ---------------------------------------------------------------------- comparative oracle: PGD
def _eval_batch(digits, mlp_model, n=48):
    x, y = digits["x_test"], digits["y_test"]
    with torch.no_grad():
        ok = (mlp_model(x).argmax(1) == y).nonzero().flatten()[:n]
    return x[ok], y[ok]


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.6)])
def test_apgd_ce_at_least_as_strong_as_pgd_with_the_same_budget(norm, eps, digits, mlp_model):
    x, y = _eval_batch(digits, mlp_model)
    threat = ThreatModel(norm, eps)
    robust_apgd, robust_pgd = [], []
    for seed in range(3):
        robust_apgd.append(1 - apgd(mlp_model, x, y, threat, steps=30, generator=seed).success_rate)
        robust_pgd.append(1 - pgd(mlp_model, x, y, threat, steps=30, generator=seed).success_rate)
    mean_apgd, mean_pgd = sum(robust_apgd) / 3, sum(robust_pgd) / 3
    assert 0.0 < mean_pgd < 1.0, "eps should leave the comparison informative"
    assert mean_apgd <= mean_pgd + 1.0 / len(y)


def test_targeted_goal_runs_the_targeted_loss(digits, mlp_model):
    x, y = _eval_batch(digits, mlp_model, n=16)
    target = (y + 3) % 10
    threat = ThreatModel("linf", 0.3)
    for loss in ("ce", "dlr"):
        res = apgd(mlp_model, x, y, threat, goal=Targeted(target), steps=20, loss=loss)
        with torch.no_grad():
            pred = mlp_model(res.x_adv).argmax(1)
        assert torch.equal(res.success, pred == target)
        assert res.success_rate >= 0.9


def test_loss_trace_has_one_entry_per_iteration(digits, mlp_model):
    x, y = _eval_batch(digits, mlp_model, n=8)
    res = apgd(mlp_model, x, y, ThreatModel("l2", 0.3), steps=13)
    assert res.loss_trace.shape == (13,)


# ---------------------------------------------------------------------- APGD-T
def test_apgd_t_keeps_first_success_so_more_targets_never_hurt(digits, mlp_model):
    """The first target's run is identical (same seed), later targets only add successes."""
    x, y = _eval_batch(digits, mlp_model, n=24)
    threat = ThreatModel("linf", 0.05)
    one = apgd_t(mlp_model, x, y, threat, steps=15, n_target_classes=1, generator=4)
    three = apgd_t(mlp_model, x, y, threat, steps=15, n_target_classes=3, generator=4)
    assert bool((three.success | ~one.success).all())
    assert three.success_rate >= one.success_rate
    # success is untargeted: any wrong class
    with torch.no_grad():
        assert torch.equal(three.success, mlp_model(three.x_adv).argmax(1) != y)


def test_apgd_t_rejects_a_targeted_goal(digits, mlp_model):
    x, y = _eval_batch(digits, mlp_model, n=4)
    with pytest.raises(ValueError, match="untargeted only"):
        apgd_t(mlp_model, x, y, ThreatModel("linf", 0.1), goal=Targeted((y + 1) % 10))


def test_configs_and_bad_settings(digits, mlp_model):
    assert APGD().settings() == {"steps": 100, "restarts": 1, "loss": "ce", "rho": 0.75}
    assert APGDT.supports_targeted is False and APGDT().n_target_classes == 9
    x, y = _eval_batch(digits, mlp_model, n=4)
    threat = ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match="loss"):
        apgd(mlp_model, x, y, threat, loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        apgd(mlp_model, x, y, threat, steps=0)
    with pytest.raises(TypeError, match="restarts"):
        apgd(mlp_model, x, y, threat, restarts=1.5)
    with pytest.raises(ValueError, match="rho"):
        apgd_t(mlp_model, x, y, threat, rho=1.5)


def test_the_old_name_n_iter_still_works_with_a_warning(digits, mlp_model):
    """``n_iter`` was renamed ``steps`` (the name every attack uses); for one release it still works, warning."""
    x, y = _eval_batch(digits, mlp_model, n=4)
    threat = ThreatModel("linf", 0.1)
    with pytest.warns(FutureWarning, match="'n_iter' is now called 'steps'"):
        old = apgd(mlp_model, x, y, threat, n_iter=5, generator=1)
    new = apgd(mlp_model, x, y, threat, steps=5, generator=1)
    assert torch.equal(old.x_adv, new.x_adv)
    with pytest.warns(FutureWarning):
        assert APGDT(n_iter=7).steps == 7
    with pytest.raises(TypeError, match="both 'n_iter' and 'steps'"):
        apgd(mlp_model, x, y, threat, n_iter=5, steps=5)


# ---------------------------------------------------------------------- second implementation
def _reference_apgd(model, x, x0, label, eps, norm, n_iter):
    """Algorithm 1 of Croce & Hein 2020 written out for one example, with plain Python bookkeeping."""
    from advlab.losses import cross_entropy

    def f(z):
        z = z.detach().requires_grad_(True)
        loss = cross_entropy(model(z[None]), label[None], False)[0]
        (g,) = torch.autograd.grad(loss, z)
        return float(loss.detach()), g

    def proj(z):
        d = z - x
        d = d.clamp(-eps, eps) if norm == "linf" else d * min(1.0, eps / max(float(d.norm()), 1e-12))
        return (x + d).clamp(0, 1)

    def direction(g):
        return g.sign() if norm == "linf" else g / (g.norm() + 1e-12)

    w = set(_paper_checkpoints(n_iter)[1:])
    eta = 2 * eps
    xk, (fk, gk) = x0, f(x0)
    x_max, f_max, g_max = xk, fk, gk
    losses = [fk]  # f(x^(i)) for i = 0, 1, ...
    x_prev, last_w, reduced_last, f_max_last = xk, 0, False, f_max
    halvings = 0
    for k in range(n_iter):
        z = proj(xk + eta * direction(gk))
        x_new = z if k == 0 else proj(xk + 0.75 * (z - xk) + 0.25 * (xk - x_prev))
        x_prev, xk = xk, x_new
        fk, gk = f(xk)
        losses.append(fk)
        if fk >= f_max:
            x_max, f_max, g_max = xk, fk, gk
        if k + 1 in w:
            span = k + 1 - last_w
            increases = sum(losses[i + 1] > losses[i] for i in range(last_w, k + 1))
            cond1 = increases < 0.75 * span
            cond2 = (not reduced_last) and f_max <= f_max_last
            reduced_last, f_max_last, last_w = cond1 or cond2, f_max, k + 1
            if cond1 or cond2:
                eta /= 2
                halvings += 1
                xk, gk = x_max, g_max
                losses[-1] = f_max  # the next increase is measured from the restart point
    return x_max, halvings


@pytest.mark.parametrize("norm,eps", [("linf", 0.02), ("l2", 0.1)])
def test_batched_run_equals_a_per_example_implementation_of_algorithm_1(norm, eps, mlp_model, digits_batch):
    """Same start, same float64 model: the batched run (per-example step sizes, checkpoints, restarts from
    the best point, momentum) must return exactly the point a one-example-at-a-time loop returns."""
    import copy

    from advlab.attacks.apgd import apgd_run
    from advlab.losses import cross_entropy

    model = copy.deepcopy(mlp_model.module).double().eval()
    x, y = digits_batch
    x, y = x[:6].double(), y[:6]
    threat = ThreatModel(norm, eps)
    x0 = threat.random_start(x, torch.Generator().manual_seed(0))
    x_adv, found, _, _ = apgd_run(model, x, x0, y, False, threat, steps=40, loss_fn=cross_entropy)
    assert not bool(found.any())  # eps small enough that the comparison stays on the loss-maximising branch
    halvings = 0
    for i in range(x.shape[0]):
        want, h = _reference_apgd(model, x[i], x0[i], y[i], eps, norm, 40)
        torch.testing.assert_close(x_adv[i], want, rtol=0, atol=1e-9)
        halvings += h
    assert halvings > 0, "the comparison should exercise step-size halving and restarts"
