"""Query attacks (SPSA, NES, Boundary, HopSkipJump) on oracles: estimates, closed forms, query accounting, stops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import boundary, hopskipjump, nes, spsa
from advlab.attacks.nes import nes_gradient
from advlab.attacks.spsa import spsa_gradient
from advlab.blackbox import CallableOracle, OracleUnavailable, SklearnOracle, TorchOracle, as_module
from advlab.losses import margin


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine run far faster single-threaded; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _linear_multiclass(d: int = 20, c: int = 3, seed: int = 0) -> Classifier:
    lin = nn.utils.skip_init(nn.Linear, d, c)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(c, d, generator=g))
        lin.bias.zero_()
    return Classifier(lin, num_classes=c, input_shape=(d,), bounds=(-10.0, 10.0)).eval()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.reshape(len(a), -1), b.reshape(len(b), -1), dim=1)


# ---------------------------------------------------------------------- gradient estimates
@pytest.mark.parametrize("estimator", ["spsa", "nes"])
def test_gradient_estimate_aligns_with_true_gradient_through_oracle(estimator):
    """On a linear model the logit margin is linear, so its gradient is w_other - w_y; the estimate from scores
    queries must point the same way (cosine ~ sqrt(n / (n + d)) for n samples in d dimensions)."""
    model = _linear_multiclass()
    oracle = TorchOracle(model, mode="scores")
    x = torch.rand(4, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = model(x).argmax(1).detach()

    def f(points, owner):
        return margin(torch.log(oracle.scores(points)), y[owner], False)

    g = torch.Generator().manual_seed(0)
    if estimator == "spsa":
        est = spsa_gradient(f, x, delta=0.01, n_samples=2000, generator=g)
    else:
        est = nes_gradient(f, x, sigma=0.001, n_samples=2000, generator=g)
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(margin(model(xg), y, False).sum(), xg)
    cos = _cosine(est, true)
    assert bool((cos > 0.9).all()), cos
    assert oracle.queries == 4 * 2000
    # the estimates are unbiased: the component along the true gradient matches its norm (within noise)
    along = (est * true).sum(1) / true.norm(dim=1)
    torch.testing.assert_close(along, true.norm(dim=1), rtol=0.15, atol=0.0)


def test_spsa_estimate_exact_on_linear_function_with_all_directions():
    """With every Rademacher direction of a 3-d space (+-v pairs), mean (v.w) v = w exactly."""
    w = torch.tensor([0.5, -2.0, 1.0])
    x = torch.zeros(1, 3)
    est = spsa_gradient(lambda p, o: p @ w, x, delta=0.1, n_samples=4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est[0], w, rtol=0.1, atol=0.05)


# ---------------------------------------------------------------------- closed-form minimal distances
@pytest.mark.parametrize(
    "attack,kwargs,norm,tol",
    [
        (boundary, {"steps": 1000}, "l2", 0.02),
        (hopskipjump, {"steps": 20}, "l2", 0.02),
        (hopskipjump, {"steps": 30}, "linf", 0.05),
    ],
)
def test_decision_attacks_reach_minimal_distance_on_linear_model(attack, kwargs, norm, tol, make_linear_binary):
    """The smallest perturbation flipping sign(w.x + b) has norm |w.x + b| / ||w||_dual (box far away)."""
    (
        model,
        w,
        b,
    ) = make_linear_binary(d=20, seed=3)[:3]
    x = torch.randn(200, 20, generator=torch.Generator().manual_seed(11)) * 2.0
    m = x @ w + b
    keep = (m.abs() > 5.0).nonzero().flatten()[:6]
    x, y = x[keep], (m[keep] > 0).long()
    dual = w.norm() if norm == "l2" else w.abs().sum()
    minimal = m[keep].abs() / dual
    oracle = TorchOracle(model, mode="labels")
    result = attack(oracle, x, y, ThreatModel(norm, float(minimal.max()) * 3, (-100.0, 100.0)), **kwargs)
    assert bool(result.success.all())
    ratio = result.distance / minimal
    assert bool((ratio >= 1 - 1e-4).all()), f"below the analytic minimum: {ratio}"
    assert bool((ratio <= 1 + tol).all()), f"not within {tol:.0%} of the minimum: {ratio}"
    assert int(result.queries.sum()) == oracle.queries


def test_hopskipjump_on_sklearn_linear_model_finds_the_closed_form_minimum(digits_flat):
    """Linear multi-class model, box inactive: the class-y region is a convex polytope and the boundary with
    class j is the hyperplane z_y = z_j at distance (z_y - z_j) / ||w_y - w_j||. HopSkipJump walks along the
    boundary to the foot of the facet it reached (a local minimum), so its distance equals that facet's closed
    form, and is never below the global minimum over j."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = digits_flat["x_train"][:600].numpy(), digits_flat["y_train"][:600].numpy()
    est = LogisticRegression(max_iter=200).fit(xtr, ytr)
    x, y = digits_flat["x_test"][:6], digits_flat["y_test"][:6]
    keep = torch.from_numpy(est.predict(x.numpy()) == y.numpy())
    x, y = x[keep], y[keep]
    oracle = SklearnOracle(est, mode="labels", bounds=(-10.0, 10.0))  # a wide box that never binds
    result = hopskipjump(oracle, x, y, ThreatModel("l2", 10.0, (-10.0, 10.0)), steps=20)
    assert bool(result.success.all())
    z = torch.from_numpy(est.decision_function(x.numpy()))
    wt = torch.from_numpy(est.coef_)
    pairwise = torch.stack(
        [
            torch.stack(
                [
                    (z[i, y[i]] - z[i, j]) / (wt[y[i]] - wt[j]).norm()
                    if j != y[i]
                    else torch.tensor(np.inf, dtype=z.dtype)
                    for j in range(10)
                ]
            )
            for i in range(len(y))
        ]
    ).float()
    reached = torch.from_numpy(est.predict(result.x_adv.numpy()))
    facet = pairwise[torch.arange(len(y)), reached]
    assert bool((result.distance >= pairwise.min(1).values * (1 - 1e-3)).all())
    torch.testing.assert_close(result.distance, facet, rtol=0.02, atol=0.0)
    assert int(result.queries.sum()) == oracle.queries


# ---------------------------------------------------------------------- query accounting and budgets
ALL = [
    (spsa, {"steps": 5, "n_samples": 16}, "linf", 0.1),
    (nes, {"steps": 5, "n_samples": 16}, "linf", 0.1),
    (boundary, {"steps": 50}, "l2", 2.0),
    (hopskipjump, {"steps": 3, "init_num_evals": 20}, "l2", 2.0),
]


@pytest.mark.parametrize("attack,kwargs,norm,eps", ALL, ids=[a[0].__name__ for a in ALL])
def test_reported_queries_equal_the_oracle_count(attack, kwargs, norm, eps, mlp_model, digits_batch):
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    oracle = TorchOracle(mlp_model, mode="scores", budget=100_000)
    result = attack(oracle, x, y, ThreatModel(norm, eps), **kwargs)
    assert result.queries.shape == (6,) and result.queries.dtype == torch.int64
    assert int(result.queries.sum()) == oracle.queries <= 100_000
    assert bool((result.queries >= 2).all())  # at least the framework's clean pass and final check
    assert result.info["stopped"] is None and result.info["verified"] is True
    # queries_to_success: when each example first reached the goal inside eps (-1: never)
    first = result.info["queries_to_success"]
    assert torch.equal(first >= 0, result.success)
    assert bool((first[result.success] <= result.queries[result.success]).all())
    if attack in (spsa, nes):  # early stop: the attack ends at the query that succeeded
        assert torch.equal(first[result.success], result.queries[result.success])


@pytest.mark.parametrize("attack,kwargs,norm,eps", ALL, ids=[a[0].__name__ for a in ALL])
def test_per_example_query_cap(attack, kwargs, norm, eps, mlp_model, digits_batch):
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    kwargs = {**kwargs, "steps": 500}
    result = attack(mlp_model, x, y, ThreatModel(norm, eps), max_queries=120, **kwargs)
    assert int(result.queries.max()) <= 120
    with torch.no_grad():
        assert torch.equal(result.success, mlp_model(result.x_adv).argmax(1) != y)


@pytest.mark.parametrize("attack,kwargs,norm,eps", ALL, ids=[a[0].__name__ for a in ALL])
def test_budget_exhaustion_returns_partial_results(attack, kwargs, norm, eps, mlp_model, digits_batch):
    """The global budget runs out mid-attack: the attack stops cleanly, keeps what it found, spends no more."""
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    budget = 400
    oracle = TorchOracle(mlp_model, mode="scores", budget=budget)
    result = attack(oracle, x, y, ThreatModel(norm, eps), **{**kwargs, "steps": 1000})
    assert result.info["stopped"] == "budget" and "budget" in result.info["stopped_message"]
    assert int(result.queries.sum()) == oracle.queries <= budget
    with torch.no_grad():  # what is returned is verified: success matches the model on x_adv
        assert torch.equal(result.success, mlp_model(result.x_adv).argmax(1) != y)


def test_budget_stop_keeps_progress(mlp_model, digits_batch):
    """HopSkipJump stopped by the budget returns its best boundary points: all adversarial, closer than noise."""
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    oracle = TorchOracle(mlp_model, mode="labels", budget=1500)
    result = hopskipjump(oracle, x, y, ThreatModel("l2", 100.0), steps=100)
    assert result.info["stopped"] == "budget"
    assert bool(result.success.all())
    assert float(result.distance.max()) < 3.0  # uniform noise is ~4.6 away in L2 on 8x8 digits


def test_dead_target_mid_attack_keeps_points(mlp_model, digits_batch):
    """The target dies mid-attack (and stays dead for the final check): points found so far come back, marked
    unverified, and they are adversarial according to the real model."""
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    calls = {"n": 0}

    def fn(a):
        calls["n"] += 1
        if calls["n"] > 60:
            raise OracleUnavailable("target http://example unreachable after 4 attempt(s)")
        with torch.no_grad():
            return mlp_model(torch.from_numpy(a)).argmax(1).numpy()

    oracle = CallableOracle(fn, "labels", 10, input_shape=(1, 8, 8))
    result = hopskipjump(oracle, x, y, ThreatModel("l2", 100.0), steps=50)
    assert result.info["stopped"] == "unreachable" and result.info["verified"] is False
    assert bool(result.success.any())
    with torch.no_grad():
        pred = mlp_model(result.x_adv).argmax(1)
    assert bool((pred[result.success] != y[result.success]).all())


def test_score_attacks_refuse_label_only_oracles(mlp_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="needs class scores"):
        spsa(TorchOracle(mlp_model, mode="labels"), x, y, ThreatModel("linf", 0.1), steps=2)
    with pytest.raises(ValueError, match="needs class scores"):
        nes(as_module(TorchOracle(mlp_model, mode="labels")), x, y, ThreatModel("linf", 0.1), steps=2)


def test_budget_too_small_for_the_batch_is_a_clear_error(mlp_model, digits_batch):
    x, y = digits_batch
    from advlab.blackbox import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        hopskipjump(TorchOracle(mlp_model, mode="labels", budget=20), x, y, ThreatModel("l2", 1.0))


def test_bad_settings(mlp_model, digits_batch):
    x, y = digits_batch
    threat = ThreatModel("l2", 1.0)
    with pytest.raises(ValueError, match="max_queries"):
        hopskipjump(mlp_model, x, y, threat, max_queries=2)
    with pytest.raises(ValueError, match="starting_points: expected the shape"):
        boundary(mlp_model, x, y, threat, starting_points=x[:2])
    with pytest.raises(ValueError, match="starting_points: values must lie inside bounds"):
        hopskipjump(mlp_model, x, y, threat, starting_points=x + 2)
    with pytest.raises(ValueError, match="n_samples"):
        spsa(mlp_model, x, y, ThreatModel("linf", 0.1), n_samples=1)
    with pytest.raises(ValueError, match="sigma"):
        nes(mlp_model, x, y, ThreatModel("linf", 0.1), sigma=0.0)


# ---------------------------------------------------------------------- goals and starting points
def test_targeted_decision_attacks_use_batch_examples_of_the_target(mlp_model, digits_batch):
    x, y = digits_batch
    target = y.roll(1)  # the target of each example is the class of another example of the batch
    keep = target != y
    x, y, target = x[keep], y[keep], target[keep]
    for attack, kwargs in ((hopskipjump, {"steps": 5}), (boundary, {"steps": 200})):
        result = attack(mlp_model, x, y, ThreatModel("l2", 100.0), goal=Targeted(target), init_attempts=0, **kwargs)
        assert bool(result.info["found_start"].all())
        assert bool(result.success.all())
        with torch.no_grad():
            assert torch.equal(mlp_model(result.x_adv).argmax(1), target)
        # closer than the batch example it started from
        start_dist = torch.stack(
            [(x[(y == t).nonzero().flatten()] - x[i]).flatten(1).norm(dim=1).min() for i, t in enumerate(target)]
        )
        assert bool((result.distance <= start_dist + 1e-5).all())


def test_given_starting_points_are_used(mlp_model, digits_batch):
    x, y = digits_batch
    other = x.flip(0)
    with torch.no_grad():
        ok = mlp_model(other).argmax(1) != y
    result = hopskipjump(
        mlp_model, x[ok], y[ok], ThreatModel("l2", 100.0), steps=2, starting_points=other[ok], init_attempts=0
    )
    assert bool(result.success.all())
    assert bool((result.distance <= (other[ok] - x[ok]).flatten(1).norm(dim=1) + 1e-5).all())


def test_numpy_inputs_and_targeted_scores_attacks(mlp_model, digits_batch):
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    target = (y + 3) % 10
    for attack in (spsa, nes):
        result = attack(
            mlp_model, x.numpy(), y.numpy(), ThreatModel("linf", 0.3), goal=Targeted(target.numpy()), steps=40
        )
        assert isinstance(result.queries, np.ndarray)
        assert result.success.mean() >= 0.5
        with torch.no_grad():
            pred = mlp_model(torch.from_numpy(result.x_adv)).argmax(1).numpy()
        np.testing.assert_array_equal(result.success, pred == target.numpy())
