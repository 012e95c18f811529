"""ThreatModel geometry against independent oracles: projections (bisection / KKT for L1, closed forms for
L2 and Linf), uniform random starts (distribution tests), steepest-ascent directions, contains, describe."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy import stats

from advlab import ThreatModel
from advlab.rng import ExampleRNG
from advlab.threat import norm_of, project_l1_ball


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- L1 projection
def _l1_projection_by_bisection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Independent oracle: the projection is sign(v) max(|v| - theta, 0) with theta >= 0 solving
    sum max(|v| - theta, 0) = eps (KKT conditions); theta found by bisection in float64."""
    v = v.double()
    a = v.abs()
    if float(a.sum()) <= eps:
        return v
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float((a - mid).clamp_min(0).sum()) > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (a - 0.5 * (lo + hi)).clamp_min(0)


@pytest.mark.parametrize("d,eps,scale", [(5, 1.0, 1.0), (64, 2.0, 0.5), (300, 0.3, 3.0), (10, 4.0, 0.1)])
def test_l1_projection_matches_bisection_oracle(d, eps, scale):
    v = torch.randn(12, d, generator=_gen(d), dtype=torch.float64) * scale
    got = project_l1_ball(v, eps)
    for i in range(v.shape[0]):
        torch.testing.assert_close(got[i], _l1_projection_by_bisection(v[i], eps), rtol=1e-9, atol=1e-9)
    norms = got.abs().sum(1)
    outside = v.abs().sum(1) > eps
    torch.testing.assert_close(norms[outside], torch.full_like(norms[outside], eps))  # on the sphere
    torch.testing.assert_close(got[~outside], v[~outside])  # inside points unchanged


def test_l1_projection_is_the_closest_point():
    """Variational inequality of a Euclidean projection onto a convex set: <v - p, z - p> <= 0 for all
    feasible z; checked against many random points z of the ball (including vertices)."""
    g = _gen(3)
    d, eps = 8, 1.5
    v = torch.randn(d, generator=g, dtype=torch.float64) * 2
    p = project_l1_ball(v[None], eps)[0]
    z = torch.randn(5000, d, generator=g, dtype=torch.float64)
    z = z / z.abs().sum(1, keepdim=True) * eps * torch.rand(5000, 1, generator=g, dtype=torch.float64)
    vertices = torch.cat([torch.eye(d), -torch.eye(d)]).double() * eps
    z = torch.cat([z, vertices])
    assert float(((z - p) @ (v - p)).max()) <= 1e-10
    assert float((z - v).norm(dim=1).min()) >= float((p - v).norm()) - 1e-10


def test_l1_projection_per_example_eps_and_ties():
    v = torch.tensor([[3.0, 3.0, -3.0, 0.0], [1.0, -2.0, 0.5, 0.0]])
    eps = torch.tensor([3.0, 10.0])
    got = project_l1_ball(v, eps)
    torch.testing.assert_close(got[0], torch.tensor([1.0, 1.0, -1.0, 0.0]))  # ties share the budget
    torch.testing.assert_close(got[1], v[1])  # inside its (larger) ball
    assert project_l1_ball(v.reshape(2, 2, 2), 1.0).shape == (2, 2, 2)  # keeps the shape


# ---------------------------------------------------------------------- L2 / Linf projections
def test_l2_and_linf_project_delta_closed_forms():
    delta = torch.randn(20, 3, 4, 4, generator=_gen(1))
    l2 = ThreatModel("l2", 1.5).project_delta(delta)
    n = delta.reshape(20, -1).norm(dim=1).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(l2, delta * torch.clamp(1.5 / n, max=1.0))
    linf = ThreatModel("linf", 0.3).project_delta(delta)
    torch.testing.assert_close(linf, delta.clamp(-0.3, 0.3))
    # per-example eps
    eps = torch.linspace(0.1, 2.0, 20)
    per = ThreatModel("l2", 1.0).project_delta(delta, eps)
    torch.testing.assert_close(per.reshape(20, -1).norm(dim=1), torch.minimum(eps, n.flatten()))
    per_inf = ThreatModel("linf", 1.0).project_delta(delta, eps)
    torch.testing.assert_close(
        per_inf, torch.maximum(torch.minimum(delta, eps.view(-1, 1, 1, 1)), -eps.view(-1, 1, 1, 1))
    )


def test_linf_project_is_the_exact_projection_onto_ball_and_box():
    g = _gen(2)
    x = torch.rand(50, 16, generator=g)
    x_adv = x + torch.randn(50, 16, generator=g)
    threat = ThreatModel("linf", 0.2)
    expected = torch.minimum(torch.maximum(x_adv, (x - 0.2).clamp_min(0)), (x + 0.2).clamp_max(1))
    torch.testing.assert_close(threat.project(x_adv, x), expected)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.7), ("l1", 3.0), ("l0", 5)])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_project_lands_in_box_exactly_and_in_ball(norm, eps, bounds):
    g = _gen(4)
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand(40, 1, 6, 6, generator=g)
    x[:, :, 0, :] = lo  # points on the box boundary
    x_adv = x + 3 * torch.randn(x.shape, generator=g)
    threat = ThreatModel(norm, eps, bounds)
    p = threat.project(x_adv, x)
    assert float(p.min()) >= lo and float(p.max()) <= hi
    assert float(threat.distance(p, x).max()) <= eps * (1 + 1e-6) + 1e-6
    assert bool(threat.contains(p, x).all())
    # idempotent on feasible points
    torch.testing.assert_close(threat.project(p, x), p)


# ---------------------------------------------------------------------- random starts
@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.0), ("l1", 2.0), ("l0", 4)])
def test_random_start_inside_ball_and_box(norm, eps):
    x = torch.rand(200, 1, 5, 5, generator=_gen(5))
    threat = ThreatModel(norm, eps)
    x0 = threat.random_start(x, _gen(6))
    assert x0.shape == x.shape and x0.dtype == x.dtype
    assert bool(threat.contains(x0, x).all())
    assert not torch.equal(x0, x)
    # reproducible from the generator, and independent of the global RNG
    state = torch.get_rng_state()
    torch.testing.assert_close(threat.random_start(x, _gen(6)), x0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.0), ("l1", 2.0), ("l0", 4)])
def test_random_start_from_per_example_streams_does_not_depend_on_the_batch(norm, eps):
    x = torch.rand(50, 1, 5, 5, generator=_gen(5))
    threat = ThreatModel(norm, eps)
    ids = torch.arange(50) + 900
    x0 = threat.random_start(x, ExampleRNG(1, "start", ids))
    assert bool(threat.contains(x0, x).all()) and not torch.equal(x0, x)
    rows = torch.tensor([31, 4, 17])
    assert torch.equal(threat.random_start(x[rows], ExampleRNG(1, "start", ids[rows])), x0[rows])
    # a view of some rows draws from those rows' streams, continuing them
    rng = ExampleRNG(1, "start", ids)
    threat.random_start(x, rng)
    again = threat.random_start(x[rows], rng.rows(rows))
    fresh = ExampleRNG(1, "start", ids[rows])
    threat.random_start(x[rows], fresh)
    assert torch.equal(again, threat.random_start(x[rows], fresh))


def test_random_start_without_a_generator_draws_from_the_global_rng():
    x = torch.rand(4, 6, generator=_gen(1))
    threat = ThreatModel("linf", 0.2)
    state = torch.get_rng_state()
    x0 = threat.random_start(x)
    torch.set_rng_state(state)
    want = (x + (torch.rand(x.shape) * 2 - 1) * 0.2).clamp(0, 1)
    assert torch.equal(x0, want)


def _ks_pvalue(sample: torch.Tensor, cdf) -> float:
    return float(stats.kstest(sample.double().numpy(), cdf).pvalue)


def test_random_start_linf_is_uniform_in_the_cube():
    n, d, eps = 4000, 10, 0.5
    x = torch.zeros(n, d)
    delta = ThreatModel("linf", eps, (-10.0, 10.0)).random_start(x, _gen(7)) - x
    assert _ks_pvalue(delta[:, 0], stats.uniform(loc=-eps, scale=2 * eps).cdf) > 1e-3
    assert _ks_pvalue(delta[:, 7], stats.uniform(loc=-eps, scale=2 * eps).cdf) > 1e-3
    assert abs(float(torch.corrcoef(delta[:, :2].T)[0, 1])) < 0.06


def test_random_start_l2_is_uniform_in_the_ball():
    """Uniform in the d-ball: (|delta| / eps)^d ~ U(0, 1), and the direction is uniform on the sphere."""
    n, d, eps = 4000, 10, 2.0
    x = torch.zeros(n, d)
    delta = ThreatModel("l2", eps, (-10.0, 10.0)).random_start(x, _gen(8)) - x
    r = delta.norm(dim=1) / eps
    assert _ks_pvalue(r**d, stats.uniform().cdf) > 1e-3
    # first coordinate of the unit direction: (u1 + 1) / 2 ~ Beta((d-1)/2, (d-1)/2)
    u1 = delta[:, 0] / delta.norm(dim=1)
    assert _ks_pvalue((u1 + 1) / 2, stats.beta((d - 1) / 2, (d - 1) / 2).cdf) > 1e-3


def test_random_start_l1_is_uniform_in_the_ball():
    """Uniform in the L1 ball: (|delta|_1 / eps)^d ~ U(0, 1), and |delta_i| / eps ~ Beta(1, d) (Dirichlet)."""
    n, d, eps = 4000, 10, 2.0
    x = torch.zeros(n, d)
    delta = ThreatModel("l1", eps, (-10.0, 10.0)).random_start(x, _gen(9)) - x
    r = delta.abs().sum(1) / eps
    assert _ks_pvalue(r**d, stats.uniform().cdf) > 1e-3
    assert _ks_pvalue(delta[:, 3].abs() / eps, stats.beta(1, d).cdf) > 1e-3
    assert 0.45 < float((delta[:, 0] > 0).float().mean()) < 0.55  # symmetric signs


# ---------------------------------------------------------------------- ascent directions
def test_ascent_direction_linf_and_l2():
    grad = torch.randn(8, 3, 4, 4, generator=_gen(10))
    torch.testing.assert_close(ThreatModel("linf", 0.1).ascent_direction(grad), grad.sign())
    d2 = ThreatModel("l2", 1.0).ascent_direction(grad)
    torch.testing.assert_close(d2.reshape(8, -1).norm(dim=1), torch.ones(8))
    # the steepest-ascent direction of unit L2 norm is grad / |grad|: it attains <grad, d> = |grad|_2
    torch.testing.assert_close((d2 * grad).reshape(8, -1).sum(1), grad.reshape(8, -1).norm(dim=1))
    zero = ThreatModel("l2", 1.0).ascent_direction(torch.zeros(2, 5))
    assert bool(torch.isfinite(zero).all()) and float(zero.abs().max()) == 0.0


def test_ascent_direction_l1_is_sparse_unit_norm():
    grad = torch.randn(6, 200, generator=_gen(11))
    threat = ThreatModel("l1", 1.0)
    d = threat.ascent_direction(grad, l1_sparsity=0.95)
    torch.testing.assert_close(d.abs().sum(1), torch.ones(6))
    k = round(0.05 * 200)
    assert bool(((d != 0).sum(1) == k).all())
    top = grad.abs().topk(k, dim=1).values.mean(1)
    torch.testing.assert_close((d * grad).sum(1), top)  # mean of the k largest |grad|
    # sparsity 1.0 -> the single largest coordinate: the exact L1 steepest ascent, <grad, d> = |grad|_inf
    d1 = threat.ascent_direction(grad, l1_sparsity=1.0)
    torch.testing.assert_close((d1 * grad).sum(1), grad.abs().amax(1))


def test_ascent_direction_l1_skips_coordinates_blocked_by_the_box():
    threat = ThreatModel("l1", 1.0)
    grad = torch.tensor([[5.0, -4.0, 3.0, 0.1]])
    x_adv = torch.tensor([[1.0, 0.0, 0.5, 0.5]])  # coordinate 0 at the top pushing up, 1 at the bottom pushing down
    d = threat.ascent_direction(grad, x_adv, l1_sparsity=0.75)  # k = 1
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


# ---------------------------------------------------------------------- distances, contains, describe
def test_norm_of_matches_torch_linalg():
    delta = torch.randn(7, 2, 3, 3, generator=_gen(12))
    flat = delta.reshape(7, -1)
    torch.testing.assert_close(norm_of(delta, "linf"), torch.linalg.vector_norm(flat, float("inf"), dim=1))
    torch.testing.assert_close(norm_of(delta, "l2"), torch.linalg.vector_norm(flat, 2, dim=1))
    torch.testing.assert_close(norm_of(delta, "l1"), torch.linalg.vector_norm(flat, 1, dim=1))
    sparse = delta * (delta > 1.0)
    torch.testing.assert_close(norm_of(sparse, "l0"), (flat > 1.0).sum(1).float())
    with pytest.raises(ValueError, match="norm"):
        norm_of(delta, "l3")


def test_contains():
    threat = ThreatModel("l2", 1.0)
    x = torch.full((3, 4), 0.5)
    step = torch.tensor([0.5, 0.0, 0.0, 0.0])
    x_adv = torch.stack([x[0] + step, x[1] + step * 1.01, x[2]])
    assert threat.contains(x_adv, x).tolist() == [True, False, True]
    outside_box = x.clone()
    outside_box[0, 0] = 1.0 + 1e-6
    assert threat.contains(outside_box, x).tolist() == [False, True, True]
    on_sphere = x + torch.tensor([0.5, 0.5, 0.5, 0.5]) * (1 + 1e-7)  # L2 norm 1 up to rounding
    assert bool(threat.contains(on_sphere.clamp(0, 1), x).all())


def test_describe():
    assert ThreatModel("linf", 8 / 255).describe() == "L∞ ≤ 8/255"
    assert ThreatModel("linf", 0.3).describe() == "L∞ ≤ 0.3"
    assert ThreatModel("l2", 0.5).describe() == "L2 ≤ 0.5"
    assert ThreatModel("l1", 12).describe() == "L1 ≤ 12"
    assert ThreatModel("l0", 10).describe() == "L0 ≤ 10"
    assert ThreatModel("linf", 8 / 255, (-1.0, 1.0)).describe().startswith("L∞ ≤ 0.0313")


def test_threat_model_fields_and_with_eps():
    t = ThreatModel("l2", 1, [0, 2])
    assert isinstance(t.eps, float) and t.bounds == (0.0, 2.0)
    t2 = t.with_eps(0.25)
    assert (t2.norm, t2.eps, t2.bounds) == ("l2", 0.25, (0.0, 2.0)) and t.eps == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.eps = 3.0  # frozen
    assert math.isclose(ThreatModel("linf", 0).eps, 0.0)


@pytest.mark.parametrize(
    "args,match",
    [
        (("linf", -0.1), "eps: expected a radius >= 0"),
        (("Linf", 0.1), "norm: expected one of"),
        (("l3", 0.1), "norm: expected one of"),
        (("linf", float("nan")), "eps: expected a finite number"),
        (("l0", 2.5), "eps: for norm 'l0'"),
        (("linf", 0.1, (1.0, 0.0)), "bounds: expected low < high"),
        (("linf", 0.1, (0.0,)), r"bounds: expected a pair"),
    ],
)
def test_threat_model_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        ThreatModel(*args)


def test_threat_model_rejects_non_numeric_eps():
    with pytest.raises(TypeError, match="eps: expected a number"):
        ThreatModel("linf", "0.1")


# ---------------------------------------------------------------------- bounds: the model's, infinite (issue 14)
INF = math.inf


def test_threat_model_without_bounds_takes_the_models_at_the_attack_boundary():
    from advlab import Classifier
    from advlab.attacks import pgd
    from advlab.threat import DEFAULT_BOUNDS

    threat = ThreatModel("linf", 0.3)
    assert threat.bounds is None and threat.box == DEFAULT_BOUNDS == (0.0, 1.0)
    assert threat.with_eps(0.1).bounds is None
    assert threat.resolve((-1.0, 2.0)) == ThreatModel("linf", 0.3, (-1.0, 2.0))
    assert ThreatModel("linf", 0.3, (0.0, 1.0)).resolve((-1.0, 2.0)).bounds == (0.0, 1.0)  # its own bounds win
    assert threat.describe() == ThreatModel("linf", 0.3, (0.0, 1.0)).describe()
    # standalone geometry uses the default box
    x = torch.full((2, 3), 0.9)
    assert float(threat.project(x + 0.5, x).max()) == 1.0

    g = _gen(21)
    w = torch.randn(4, 3, generator=g)
    model = Classifier(torch.nn.Linear(4, 3), bounds=(-1.0, 2.0), num_classes=3, input_shape=(4,)).eval()
    with torch.no_grad():
        model.module.weight.copy_(w.T)
        model.module.bias.zero_()
    xs = torch.rand(8, 4, generator=g) * 3 - 1  # inside (-1, 2), far outside (0, 1)
    ys = torch.zeros(8, dtype=torch.int64)
    implicit = pgd(model, xs, ys, ThreatModel("linf", 0.5), steps=5)
    explicit = pgd(model, xs, ys, ThreatModel("linf", 0.5, (-1.0, 2.0)), steps=5)
    assert torch.equal(implicit.x_adv, explicit.x_adv)
    assert float(implicit.x_adv.min()) >= -1.0 and float(implicit.x_adv.max()) <= 2.0
    assert float(implicit.x_adv.min()) < 0.0  # not clamped to the default box
    # a plain module takes the default box
    with pytest.raises(ValueError, match=r"x: values must lie inside bounds \(0.0, 1.0\)"):
        pgd(model.module, xs, ys, ThreatModel("linf", 0.5), steps=5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.5), ("l2", 2.0), ("l1", 4.0), ("l0", 3)])
def test_infinite_bounds_project_onto_the_ball_alone_and_random_starts_stay_finite(norm, eps):
    threat = ThreatModel(norm, eps, (-INF, INF))
    assert not threat.bounded and threat.scale == 1.0
    x = 50 * torch.randn(30, 7, generator=_gen(22))  # far outside any unit box
    x_adv = x + 10 * torch.randn(x.shape, generator=_gen(23))
    p = threat.project(x_adv, x)
    torch.testing.assert_close(p, x + threat.project_delta(x_adv - x))  # no clamp at all
    assert bool(threat.contains(p, x).all())
    x0 = threat.random_start(x, _gen(24))
    assert bool(torch.isfinite(x0).all()) and bool(threat.contains(x0, x).all())
    assert not torch.equal(x0, x)
    if norm == "l0":  # the chosen features move within UNBOUNDED_SCALE of their clean value
        assert float((x0 - x).abs().max()) <= 1.0 + 1e-5


def test_half_infinite_bounds_clamp_the_finite_side_only():
    threat = ThreatModel("linf", 2.0, (0.0, INF))
    assert not threat.bounded and threat.box == (0.0, INF)
    x = torch.tensor([[0.5, 100.0]])
    torch.testing.assert_close(threat.project(x + torch.tensor([[-3.0, 3.0]]), x), torch.tensor([[0.0, 102.0]]))
    x0 = ThreatModel("l0", 2, (0.0, INF)).random_start(x.expand(500, 2).contiguous(), _gen(25))
    assert float(x0.min()) >= 0.0 and float(x0[:, 1].max()) <= 101.0 and bool(torch.isfinite(x0).all())
    low, high = threat.box_around(x, 3.0)
    assert low == 0.0 and torch.equal(high, x + 3.0)


@pytest.mark.parametrize(
    "bounds,error,match",
    [
        ((float("nan"), 1.0), ValueError, r"^bounds\[0\]: expected a number or ±inf, got nan"),
        ((INF, INF), ValueError, r"^bounds: expected low < high"),
        ((-INF, -INF), ValueError, r"^bounds: expected low < high"),
        ((0.0, "1"), TypeError, r"^bounds\[1\]: expected a number \(or float\('inf'\)"),
    ],
)
def test_bounds_errors_name_the_side(bounds, error, match):
    from advlab import Classifier

    with pytest.raises(error, match=match):
        ThreatModel("linf", 0.1, bounds)
    with pytest.raises(error, match=match):
        Classifier(torch.nn.Identity(), bounds=bounds)
