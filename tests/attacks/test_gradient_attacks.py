"""Algorithm-specific oracles for the gradient attacks FGSM/FGM, R+FGSM, BIM/ILLC, PGD and MI-FGSM.

Each test compares advlab against something computed independently: closed forms on a linear model,
the papers' published settings, or a plain-PyTorch re-implementation of the loop written here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advlab import LeastLikely, Targeted, ThreatModel
from advlab.attacks import bim, fgsm, illc, mifgsm, pgd, rfgsm
from advlab.attacks.bim import paper_defaults

WIDE = (-100.0, 100.0)  # a box that never binds on the linear model


def _linear_points(make_linear_binary, n=8, d=20, min_margin=5.0, seed=3):
    """Linear binary model and points labelled by its prediction, with |margin| > min_margin."""
    model, w, b = make_linear_binary(d=d, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(400, d, generator=g) * 2.0
    margin = x @ w + b
    keep = (margin.abs() > min_margin).nonzero().flatten()[:n]
    x = x[keep]
    y = (margin[keep] > 0).long()
    s = torch.where(y == 1, 1.0, -1.0)[:, None]  # the attack pushes the margin toward -s
    return model, w, b, x, y, s


# ---------------------------------------------------------------------- reference loop (independent)
def reference_iterate(model, x, x0, labels, targeted, eps, bounds, steps, step_size, *, norm="linf", momentum=None):
    """A plain PyTorch projected-gradient loop, written from the papers, with advlab's documented output rule:
    each example keeps its final iterate, or the last iterate that reached the goal if the final one did not."""
    lo, hi = bounds
    x_adv = x0.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool)
    x_found = x_adv.clone()
    g = torch.zeros_like(x)
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        z = x_adv.clone().requires_grad_(True)
        logits = model(z)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        loss = -loss if targeted else loss
        (grad,) = torch.autograd.grad(loss, z)
        pred = logits.detach().argmax(1)
        succ = pred == labels if targeted else pred != labels
        x_found[succ] = x_adv[succ]
        found |= succ
        if momentum is not None:
            g = momentum * g + grad / grad.abs().reshape(x.shape[0], -1).sum(1).clamp_min(1e-12).view(view)
            grad = g
        if norm == "linf":
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(lo, hi)
        else:  # l2
            n = grad.reshape(x.shape[0], -1).norm(dim=1).view(view)
            x_adv = x_adv + step_size * grad / (n + 1e-12)
            delta = x_adv - x
            dn = delta.reshape(x.shape[0], -1).norm(dim=1).view(view)
            x_adv = (x + delta * torch.clamp(eps / (dn + 1e-12), max=1.0)).clamp(lo, hi)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    succ = pred == labels if targeted else pred != labels
    keep_found = found & ~succ
    x_adv[keep_found] = x_found[keep_found]
    return x_adv


# ---------------------------------------------------------------------- FGSM / FGM
def test_fgsm_linf_linear_closed_form(make_linear_binary):
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 0.05
    res = fgsm(model, x, y, ThreatModel("linf", eps, WIDE))
    torch.testing.assert_close(res.x_adv, x - eps * s * w.sign(), rtol=0, atol=1e-5)
    change = s[:, 0] * ((x - res.x_adv) @ w)
    torch.testing.assert_close(change, (eps * w.abs().sum()).expand(len(y)), rtol=1e-4, atol=1e-4)


def test_fgm_l2_linear_closed_form(make_linear_binary):
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 0.5
    res = fgsm(model, x, y, ThreatModel("l2", eps, WIDE))
    torch.testing.assert_close(res.x_adv, x - eps * s * w / w.norm(), rtol=0, atol=1e-5)
    torch.testing.assert_close(res.distance, torch.full((len(y),), eps), rtol=1e-5, atol=1e-6)


def test_fgsm_l1_moves_the_largest_weight(make_linear_binary):
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 1.0
    res = fgsm(model, x, y, ThreatModel("l1", eps, WIDE))
    k = int(w.abs().argmax())
    expected = x.clone()
    expected[:, k] -= eps * s[:, 0] * w[k].sign()
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_manual_step_on_mlp(targeted, mlp_model, digits_batch):
    """x_adv = clip(x + eps sign(grad CE)) (untargeted) or clip(x - eps sign(grad CE(target))) (targeted)."""
    x, y = digits_batch
    eps = 0.1
    labels = (y + 3) % 10 if targeted else y
    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(mlp_model(z), labels, reduction="sum"), z)
    sign = -1.0 if targeted else 1.0
    expected = (x + sign * eps * grad.sign()).clamp(0, 1)
    res = fgsm(mlp_model, x, y, ThreatModel("linf", eps), goal=Targeted(labels) if targeted else None)
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-6)


def test_fgsm_least_likely_is_step_ll(mlp_model, digits_batch):
    """Kurakin's "step l.l.": one step descending CE toward the least-likely class."""
    x, y = digits_batch
    with torch.no_grad():
        ll = mlp_model(x).argmin(1)
    a = fgsm(mlp_model, x, y, ThreatModel("linf", 0.1), goal=LeastLikely())
    b = fgsm(mlp_model, x, y, ThreatModel("linf", 0.1), goal=Targeted(ll))
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.labels, ll)


# ---------------------------------------------------------------------- R+FGSM
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_rfgsm_equals_hand_computed_two_steps(norm, make_linear_binary):
    """x' = x + alpha * dir(N(0, I)) drawn from the same generator; x_adv = x' + (eps - alpha) * dir(grad)."""
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 0.05 if norm == "linf" else 0.5
    alpha = 0.3 * eps
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    if norm == "linf":
        x1 = x + alpha * noise.sign()
        x2 = x1 - (eps - alpha) * s * w.sign()
        expected = x + (x2 - x).clamp(-eps, eps)
    else:
        x1 = x + alpha * noise / noise.norm(dim=1, keepdim=True)
        x2 = x1 - (eps - alpha) * s * w / w.norm()
        delta = x2 - x
        expected = x + delta * torch.clamp(eps / delta.norm(dim=1, keepdim=True), max=1.0)
    res = rfgsm(model, x, y, ThreatModel(norm, eps, WIDE), alpha=alpha, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-5)
    # Same seed as an int: same draws.
    res_int = rfgsm(model, x, y, ThreatModel(norm, eps, WIDE), alpha=alpha, generator=5)
    assert torch.equal(res.x_adv, res_int.x_adv)


def test_rfgsm_default_alpha_is_half_eps_and_rejects_alpha_ge_eps(make_linear_binary):
    model, _w, b, x, y, _s = _linear_points(make_linear_binary)
    threat = ThreatModel("linf", 0.04, WIDE)
    a = rfgsm(model, x, y, threat, generator=1)
    b = rfgsm(model, x, y, threat, alpha=0.02, generator=1)
    assert torch.equal(a.x_adv, b.x_adv)
    with pytest.raises(ValueError, match="alpha"):
        rfgsm(model, x, y, threat, alpha=0.04)


# ---------------------------------------------------------------------- BIM / ILLC
@pytest.mark.parametrize(
    "eps,steps",
    [(8 / 255, 10), (0.3, 81), (16 / 255, 20), (4 / 255, 5), (1 / 255, 2), (0.1, 30)],
)
def test_bim_default_steps_follow_kurakin(eps, steps):
    """min(eps + 4, 1.25 eps) iterations with eps in pixel levels, step one level (arXiv:1607.02533, sec. 2.1)."""
    levels = eps * 255
    assert steps == math.ceil(min(levels + 4, 1.25 * levels) - 1e-9)  # the rule itself, as a sanity check
    n, size = paper_defaults(ThreatModel("linf", eps))
    assert n == steps
    assert size == pytest.approx(1 / 255)


def test_bim_default_settings_are_used(mlp_model, digits_batch):
    """The loss trace has one entry per step, and the run equals the reference loop from the clean input."""
    x, y = digits_batch
    threat = ThreatModel("linf", 8 / 255)
    res = bim(mlp_model, x, y, threat)
    assert res.loss_trace.shape == (10,)
    expected = reference_iterate(mlp_model, x, x, y, False, 8 / 255, (0.0, 1.0), 10, 1 / 255)
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-6)
    # Step size scales with the box width: bounds (-1, 1) -> 2/255 per step, same number of levels.
    n, size = paper_defaults(ThreatModel("linf", 16 / 255, (-1.0, 1.0)))
    assert (n, size) == (10, pytest.approx(2 / 255))


def test_illc_targets_the_least_likely_class(mlp_model, digits_batch):
    x, y = digits_batch
    with torch.no_grad():
        least = mlp_model(x).argmin(1)
    res = illc(mlp_model, x, y, ThreatModel("linf", 0.2))
    assert torch.equal(res.labels, least)
    with torch.no_grad():
        pred = mlp_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == least)
    assert res.success_rate >= 0.5
    # ILLC is BIM with the least-likely class as target.
    ref = bim(mlp_model, x, y, ThreatModel("linf", 0.2), goal=Targeted(least))
    assert torch.equal(res.x_adv, ref.x_adv)


# ---------------------------------------------------------------------- PGD
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_linf_matches_reference_loop(targeted, mlp_model, digits_batch):
    """advlab's PGD-linf equals a plain PyTorch loop from the same random start (same generator draws)."""
    x, y = digits_batch
    eps, steps, size = 0.1, 20, 0.01
    labels = (y + 1) % 10 if targeted else y
    start = (torch.rand(x.shape, generator=torch.Generator().manual_seed(42)) * 2 - 1) * eps
    x0 = (x + start).clamp(0, 1)
    expected = reference_iterate(mlp_model, x, x0, labels, targeted, eps, (0.0, 1.0), steps, size)
    res = pgd(
        mlp_model,
        x,
        y,
        ThreatModel("linf", eps),
        goal=Targeted(labels) if targeted else None,
        steps=steps,
        step_size=size,
        generator=torch.Generator().manual_seed(42),
    )
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-5)


def test_pgd_l2_matches_reference_loop_without_random_start(mlp_model, digits_batch):
    x, y = digits_batch
    eps, steps, size = 1.0, 15, 0.2
    expected = reference_iterate(mlp_model, x, x, y, False, eps, (0.0, 1.0), steps, size, norm="l2")
    res = pgd(mlp_model, x, y, ThreatModel("l2", eps), steps=steps, step_size=size, random_start=False)
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-5)


def test_pgd_l2_linear_reaches_eps_times_w_norm(make_linear_binary):
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 0.5
    optimum = x - eps * s * w / w.norm()
    # From x, the first step already points along w and the budget 2.5 eps reaches the sphere: exact.
    res = pgd(model, x, y, ThreatModel("l2", eps, WIDE), steps=20, random_start=False)
    change = s[:, 0] * ((x - res.x_adv) @ w)
    torch.testing.assert_close(change, (eps * w.norm()).expand(len(y)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.x_adv, optimum, rtol=0, atol=1e-4)
    # From a random start on the sphere, the angle to w shrinks by about 1 / (1 + step / eps) per projected
    # step once small (and slowly from ~90 degrees): with step eps / 4, 100 steps converge to float precision.
    res = pgd(model, x, y, ThreatModel("l2", eps, WIDE), steps=100, step_size=eps / 4, generator=0)
    change = s[:, 0] * ((x - res.x_adv) @ w)
    assert float(change.max()) <= float(eps * w.norm()) * (1 + 1e-5)
    torch.testing.assert_close(change, (eps * w.norm()).expand(len(y)), rtol=1e-4, atol=0)


def test_pgd_linf_linear_reaches_the_corner(make_linear_binary):
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 0.05
    res = pgd(model, x, y, ThreatModel("linf", eps, WIDE), steps=10)
    torch.testing.assert_close(res.x_adv, x - eps * s * w.sign(), rtol=0, atol=1e-5)


def test_pgd_restarts_keep_the_best_per_example(make_linear_binary):
    """No example can succeed (large margins) and one tiny step leaves the loss set by the random start, so
    restarts differ; restarts=R must keep, per example, the restart with the largest loss. Restart k draws
    from the generator exactly as the k-th of R single-restart runs sharing one generator."""
    model, _w, _b, x, y, _s = _linear_points(make_linear_binary)
    threat = ThreatModel("linf", 0.5, WIDE)
    settings = dict(steps=1, step_size=1e-3)
    shared = torch.Generator().manual_seed(9)
    singles = [pgd(model, x, y, threat, restarts=1, generator=shared, **settings) for _ in range(5)]
    losses = torch.stack([F.cross_entropy(model(r.x_adv), y, reduction="none") for r in singles]).detach()
    best = losses.argmax(0)
    assert len(set(best.tolist())) > 1, "the construction needs different winning restarts"
    expected = torch.stack([singles[int(k)].x_adv[i] for i, k in enumerate(best)])
    res = pgd(model, x, y, threat, restarts=5, generator=torch.Generator().manual_seed(9), **settings)
    assert not bool(res.success.any())
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=0)
    got = F.cross_entropy(model(res.x_adv), y, reduction="none").detach()
    torch.testing.assert_close(got, losses.max(0).values)


def test_pgd_restarts_never_lose_a_success(mlp_model, digits_batch):
    """The first restart is the single-restart run; later restarts only add successes."""
    x, y = digits_batch
    threat = ThreatModel("linf", 0.05)
    one = pgd(mlp_model, x, y, threat, steps=5, restarts=1, generator=3)
    many = pgd(mlp_model, x, y, threat, steps=5, restarts=4, generator=3)
    assert bool((many.success >= one.success).all())
    assert torch.equal(many.x_adv[one.success], one.x_adv[one.success])


def test_pgd_l1_stays_in_ball_and_box(mlp_model, digits_batch):
    x, y = digits_batch
    for eps in (2.0, 8.0):
        threat = ThreatModel("l1", eps)
        res = pgd(mlp_model, x, y, threat, steps=30, generator=0)
        assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
        l1 = (res.x_adv - x).abs().reshape(len(x), -1).sum(1)
        assert float(l1.max()) <= eps * (1 + 1e-5) + 1e-6
        assert res.success_rate > 0.0


def test_pgd_l1_linear_puts_the_budget_on_the_largest_weight(make_linear_binary):
    """The L1 optimum of a linear margin is eps on the coordinate with the largest |w| (a vertex of the ball)."""
    model, w, _b, x, y, s = _linear_points(make_linear_binary)
    eps = 1.0
    res = pgd(model, x, y, ThreatModel("l1", eps, WIDE), generator=0)
    k = int(w.abs().argmax())
    expected = x.clone()
    expected[:, k] -= eps * s[:, 0] * w[k].sign()
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-4)


def test_pgd_default_step_size_is_madry(mlp_model, digits_batch):
    """Default step 2.5 eps / steps (Madry et al., appendix)."""
    x, y = digits_batch
    threat = ThreatModel("linf", 0.1)
    a = pgd(mlp_model, x, y, threat, steps=8, generator=1)
    b = pgd(mlp_model, x, y, threat, steps=8, step_size=2.5 * 0.1 / 8, generator=1)
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.loss_trace.shape == (8,)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 3.0)])
def test_targeted_pgd_reaches_the_target(norm, eps, mlp_model, digits_batch):
    x, y = digits_batch
    target = (y + 5) % 10
    res = pgd(mlp_model, x, y, ThreatModel(norm, eps), goal=Targeted(target), steps=40, generator=0)
    with torch.no_grad():
        pred = mlp_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success_rate >= 0.9


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 3.0)])
def test_targeted_bim_and_mifgsm_reach_the_target(norm, eps, mlp_model, digits_batch):
    x, y = digits_batch
    target = (y + 5) % 10
    for attack in (bim, mifgsm):
        res = attack(mlp_model, x, y, ThreatModel(norm, eps), goal=Targeted(target), steps=20, step_size=eps / 8)
        with torch.no_grad():
            pred = mlp_model(res.x_adv).argmax(1)
        assert torch.equal(res.success, pred == target)
        assert res.success_rate >= 0.9, attack.__name__


# ---------------------------------------------------------------------- MI-FGSM
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_mifgsm_without_momentum_is_bim(norm, eps, mlp_model, digits_batch):
    """momentum = 0: the direction of grad / |grad|_1 equals that of grad, so MI-FGSM reduces to BIM."""
    x, y = digits_batch
    threat = ThreatModel(norm, eps)
    a = mifgsm(mlp_model, x, y, threat, steps=10, step_size=eps / 10, momentum=0.0)
    b = bim(mlp_model, x, y, threat, steps=10, step_size=eps / 10)
    torch.testing.assert_close(a.x_adv, b.x_adv, rtol=0, atol=1e-5)  # l2: grad/|grad|_1 then /|.|_2 rounds differently


def test_mifgsm_matches_reference_momentum_loop(mlp_model, digits_batch):
    """g_{t+1} = mu g_t + grad / |grad|_1, x_{t+1} = clip(x_t + alpha sign(g_{t+1})) (Dong et al., Alg. 1)."""
    x, y = digits_batch
    eps, steps = 0.1, 10
    expected = reference_iterate(mlp_model, x, x, y, False, eps, (0.0, 1.0), steps, eps / steps, momentum=1.0)
    res = mifgsm(mlp_model, x, y, ThreatModel("linf", eps))  # paper defaults: T = 10, alpha = eps / T, mu = 1
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-6)
    # Momentum changes the path: it differs from BIM with the same step.
    plain = bim(mlp_model, x, y, ThreatModel("linf", eps), steps=steps, step_size=eps / steps)
    assert not torch.equal(res.x_adv, plain.x_adv)


def test_bim_defaults_outside_linf_keep_the_papers_path_length():
    from advlab.attacks.bim import paper_defaults
    from advlab.threat import ThreatModel

    steps, size = paper_defaults(ThreatModel("l1", 12.0))
    assert steps == 10 and steps * size == pytest.approx(1.25 * 12.0)
    assert paper_defaults(ThreatModel("linf", 8 / 255)) == (10, pytest.approx(1 / 255))
