"""Square Attack against independent oracles: the paper's p schedule written out, an exact query count by a
counting wrapper, the analytic linf optimum of a linear model, and the hand-computed l2 pattern."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import Square, square
from advlab.attacks.square import (
    FocusPoint,
    _BatchDraws,
    _propose_linf,
    focus_selection,
    p_schedule,
    pseudo_gaussian_pattern,
    window_size,
)
from advlab.losses import margin
from advlab.rng import GeneratorRNG


class CountingModel(nn.Module):
    """Counts every example the model evaluates and checks that no gradient is ever taken."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "a score-based attack must not build graphs"
        self.rows += x.shape[0]
        return self.module(x)


def _reference_p(it: int, n_iters: int, p_init: float) -> float:
    """The schedule as printed in the paper's code: an if/elif ladder on the rescaled iteration."""
    it = int(it / n_iters * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if it > 8000:
        return p_init / 512
    return p_init


@pytest.mark.parametrize("n_queries", [10_000, 5000, 1000, 37])
def test_p_schedule_matches_the_paper(n_queries):
    for i in range(n_queries):
        assert p_schedule(i, n_queries, 0.3) == _reference_p(i, n_queries, 0.3)


def test_window_sizes():
    assert window_size(0.8, 32, 32) == (29, 29)  # round(sqrt(0.8 * 1024)) = 29
    assert window_size(1e-4, 32, 32) == (1, 1)
    assert window_size(0.05, 8, 8, minimum=3, odd=True) == (3, 3)
    assert window_size(0.25, 1, 20) == (1, 5)
    assert window_size(0.25, 20, 1) == (5, 1)


def _reference_linf_proposal(x, x_best, p, eps, generator):
    """The linf proposal written out per example: the same draws (corner, then one sign per channel, redrawn
    where the window would not change), the window set to ``clip(x + eps * sign)``, the rest of ``x_best`` kept."""
    n, c, h, w = x.shape
    sh, sw = window_size(p, h, w)
    top = torch.randint(0, h - sh + 1, (n,), generator=generator)
    left = torch.randint(0, w - sw + 1, (n,), generator=generator)

    def draw_signs():
        return 2.0 * torch.randint(0, 2, (n, c, 1, 1), generator=generator) - 1

    signs = draw_signs()
    window = [(slice(None), slice(int(t), int(t) + sh), slice(int(l_), int(l_) + sw)) for t, l_ in zip(top, left)]

    def new_window(i):
        return (x[i][window[i]] + eps * signs[i]).clamp(0, 1)

    for attempt in range(10):
        same = torch.tensor([torch.equal(new_window(i), x_best[i][window[i]]) for i in range(n)])
        if not same.any():
            break
        redraw = -signs if (c == 1 and attempt == 0) else draw_signs()
        signs = torch.where(same[:, None, None, None], redraw, signs)
        if c == 1:
            break
    out = x_best.clone()
    for i in range(n):
        out[i][window[i]] = new_window(i)
    return out


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("p", [0.8, 0.05, 0.002])
def test_linf_proposal_changes_one_window_as_written_per_example(channels, p):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, channels, 12, 12, generator=g)
    stripes = 2.0 * torch.randint(0, 2, (40, channels, 1, 12), generator=g) - 1
    x_best = (x + 0.3 * stripes).clamp(0, 1)  # Square's start: many small windows already hold the drawn signs
    got = _propose_linf(x, x_best, p, 0.3, (0.0, 1.0), _BatchDraws(GeneratorRNG(torch.Generator().manual_seed(7))))
    want = _reference_linf_proposal(x, x_best, p, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    if channels == 1:  # with one channel every proposal differs from the current point: no query is wasted
        assert bool((got != x_best).flatten(1).any(dim=1).all())


def test_l2_pattern_is_the_papers_eta():
    """eta on a 3x3 window: centre 1 + 1/4, ring 1/4; the pattern stacks +eta(1, 3) over -eta(2, 3)."""
    p = pseudo_gaussian_pattern(3, 3)
    top = torch.tensor([[0.25, 1.25, 0.25]], dtype=torch.float64)
    top = top / top.norm()
    bottom = torch.tensor([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]], dtype=torch.float64)  # centre row a // 2 = 1
    bottom = bottom / bottom.norm()
    want = torch.cat([top, -bottom])
    want = want / want.norm()
    torch.testing.assert_close(p, want)
    assert float(pseudo_gaussian_pattern(6, 6).norm()) == pytest.approx(1.0)
    torch.testing.assert_close(pseudo_gaussian_pattern(1, 6), pseudo_gaussian_pattern(6, 1).T)


# ---------------------------------------------------------------------- queries
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_queries_equal_forward_evaluations_and_respect_the_budget(norm, eps, digits_batch, mlp_model):
    x, y = digits_batch
    counter = CountingModel(mlp_model.module)
    model = Classifier(counter, num_classes=10, input_shape=(1, 8, 8)).eval()
    n_queries = 60
    res = square(model, x, y, ThreatModel(norm, eps), max_queries=n_queries)
    # run_attack itself evaluates the clean batch once and the returned batch once: 2 N rows
    assert counter.rows - 2 * x.shape[0] == int(res.queries.sum())
    assert int(res.queries.max()) <= n_queries and int(res.queries.min()) >= 1
    # examples never fooled spent the whole budget; fooled ones stopped at their success
    assert bool((res.queries[~res.success] == n_queries).all())


def test_budget_is_exact_when_nothing_can_be_fooled(make_linear_binary):
    model, _w, x, y = _linear_points(make_linear_binary)
    counter = CountingModel(model.module)
    clf = Classifier(counter, num_classes=2, input_shape=(20,), bounds=(-100.0, 100.0)).eval()
    res = square(clf, x, y, ThreatModel("linf", 0.05, (-100.0, 100.0)), max_queries=37)
    assert res.queries.tolist() == [37] * x.shape[0]
    assert counter.rows == 37 * x.shape[0] + 2 * x.shape[0]


def test_already_misclassified_examples_cost_one_query(digits, mlp_model):
    x, y = digits["x_test"], digits["y_test"]
    with torch.no_grad():
        wrong = mlp_model(x).argmax(1) != y
    assert bool(wrong.any())
    res = square(mlp_model, x[wrong], y[wrong], ThreatModel("linf", 0.05), max_queries=50)
    assert res.queries.tolist() == [1] * int(wrong.sum())
    assert bool(res.success.all())
    torch.testing.assert_close(res.x_adv, x[wrong])


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_restarts_extend_the_first_run_and_count_every_query(norm, eps, digits_batch, mlp_model):
    x, y = digits_batch
    counter = CountingModel(mlp_model.module)
    model = Classifier(counter, num_classes=10, input_shape=(1, 8, 8)).eval()
    n_queries, restarts = 40, 3
    one = square(mlp_model, x, y, ThreatModel(norm, eps), max_queries=n_queries, generator=5)
    many = square(model, x, y, ThreatModel(norm, eps), max_queries=n_queries, restarts=restarts, generator=5)
    # the first run is the single run, bit for bit: what it fooled stays fooled, at the same point and cost
    assert bool(many.success[one.success].all())
    assert torch.equal(many.x_adv[one.success], one.x_adv[one.success])
    assert torch.equal(many.queries[one.success], one.queries[one.success])
    # every query is a forward evaluation; a never-fooled example made the clean query plus all its runs
    assert counter.rows - 2 * x.shape[0] == int(many.queries.sum())
    assert int(many.queries.max()) <= 1 + restarts * (n_queries - 1)
    assert bool((many.queries[~many.success] == 1 + restarts * (n_queries - 1)).all())
    # and the restarts find more (a weak budget leaves room for it on this model)
    assert int(many.success.sum()) > int(one.success.sum())


# ---------------------------------------------------------------------- linear model
def _linear_points(make_linear_binary, d=20, n=6):
    model, w, b = make_linear_binary(d=d, seed=7)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, d, generator=g) * 2
    m = x @ w + b
    keep = (m.abs() > 5).nonzero().flatten()[:n]
    return model, w, x[keep], (m[keep] > 0).long()


def test_linf_reaches_the_analytic_optimum_on_a_linear_model(make_linear_binary):
    """The margin loss of w.x is maximised at delta = -eps * sign(w) * sign(margin): every coordinate must get there."""
    model, w, x, y = _linear_points(make_linear_binary)
    eps = 0.05
    res = square(model, x, y, ThreatModel("linf", eps, (-100.0, 100.0)), max_queries=800)
    assert not bool(res.success.any())
    sign_y = torch.where(y == 1, 1.0, -1.0)[:, None]
    torch.testing.assert_close(res.x_adv - x, -eps * w.sign()[None] * sign_y, rtol=0, atol=1e-6)


def test_l2_stays_on_the_sphere_and_approaches_the_optimum(make_linear_binary):
    model, w, x, y = _linear_points(make_linear_binary)
    eps = 0.5
    res = square(model, x, y, ThreatModel("l2", eps, (-100.0, 100.0)), max_queries=1000)
    torch.testing.assert_close(res.distance, torch.full_like(res.distance, eps), rtol=1e-5, atol=1e-5)
    moved = torch.where(y == 1, 1.0, -1.0) * ((x - res.x_adv) @ w)
    optimum = eps * w.norm()
    assert bool((moved <= optimum * (1 + 1e-5)).all())
    # a random direction gains ~ optimum / sqrt(20) ~ 0.22 optimum; the search must get most of the way
    assert bool((moved >= 0.75 * optimum).all())


# ---------------------------------------------------------------------- trained model
def test_fools_the_trained_mlp_and_targeted_means_target(digits_batch, mlp_model):
    x, y = digits_batch
    res = square(mlp_model, x, y, ThreatModel("linf", 0.3), max_queries=300)
    assert res.success_rate >= 0.9
    target = (y + 1) % 10
    res_t = square(mlp_model, x, y, ThreatModel("linf", 0.3), goal=Targeted(target), max_queries=300)
    with torch.no_grad():
        assert torch.equal(res_t.success, mlp_model(res_t.x_adv).argmax(1) == target)
    assert res_t.success_rate >= 0.5


def test_config_flags_and_bad_settings(digits_batch, mlp_model):
    assert Square.needs_gradients is False and Square.query_based and Square.stochastic
    assert Square().max_queries == 5000 and Square.norms == ("linf", "l2")
    x, y = digits_batch
    with pytest.raises(ValueError, match="does not support norm 'l1'"):
        square(mlp_model, x, y, ThreatModel("l1", 1.0))
    with pytest.raises(ValueError, match="max_queries"):
        square(mlp_model, x, y, ThreatModel("linf", 0.1), max_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        square(mlp_model, x, y, ThreatModel("linf", 0.1), p_init=1.5)
    with pytest.raises(ValueError, match="restarts"):
        square(mlp_model, x, y, ThreatModel("linf", 0.1), restarts=0)
    with pytest.raises(ValueError, match="focus"):
        square(mlp_model, x, y, ThreatModel("linf", 0.1), focus=0.0)
    with pytest.raises(ValueError, match="focus_after"):
        square(mlp_model, x, y, ThreatModel("linf", 0.1), focus=0.5, focus_after=0)


# ---------------------------------------------------------------------- focus
def _margin(model, x, y):
    """Square's untargeted loss (the margin it ranks examples by) at ``x``."""
    with torch.no_grad():
        return margin(model(x), y, False)


def test_focus_stops_all_but_the_highest_loss_examples_and_counts_their_queries(digits, mlp_model):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    counter = CountingModel(mlp_model.module)
    model = Classifier(counter, num_classes=10, input_shape=(1, 8, 8)).eval()
    threat = ThreatModel("linf", 0.03)
    n_queries, focus, after, restarts = 200, 0.25, 30, 2
    res = square(
        model, x, y, threat, max_queries=n_queries, focus=focus, focus_after=after, restarts=restarts, generator=3
    )
    clean_ok = _margin(mlp_model, x, y) < 0
    started = int(clean_ok.sum())
    stopped = clean_ok & (res.queries == 1 + after)
    went_on = clean_ok & (res.queries > 1 + after)
    # the focus lets exactly ceil(focus * started) examples go on (the few fooled before it stop earlier)
    assert int(went_on.sum()) == math.ceil(focus * started)
    assert not bool(res.success[stopped].any())
    # the examples that went on and were never fooled made the clean query and every run in full
    never = went_on & ~res.success
    assert bool((res.queries[never] == 1 + restarts * (n_queries - 1)).all())
    # the ones that went on had the highest loss at the focus: a loss that can only rise since, so no stopped
    # example may end above the lowest final loss of those that went on without being fooled
    m = _margin(mlp_model, res.x_adv, y)
    assert float(m[stopped].max()) <= float(m[never].min())
    # every query is a forward evaluation (plus run_attack's clean and final batches)
    assert counter.rows - 2 * x.shape[0] == int(res.queries.sum())


def test_focus_with_restarts_fools_as_many_for_fewer_queries(digits, mlp_model):
    x, y = digits["x_test"][:150], digits["y_test"][:150]
    threat = ThreatModel("linf", 0.03)
    full = square(mlp_model, x, y, threat, max_queries=300, generator=1)
    assert 0 < int(full.success.sum()) < 0.3 * x.shape[0]  # few fooled: the focus is not skipped
    focused = square(mlp_model, x, y, threat, max_queries=300, focus=0.2, focus_after=60, restarts=3, generator=1)
    assert int(focused.queries.sum()) < 0.75 * int(full.queries.sum())
    assert int(focused.success.sum()) >= int(full.success.sum())


def test_focus_is_skipped_when_square_already_fools_broadly(digits, mlp_model):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    threat = ThreatModel("linf", 0.2)  # a large eps: most examples fall in the first queries
    n_queries = 100
    res = square(mlp_model, x, y, threat, max_queries=n_queries, focus=0.05, focus_after=20, generator=0)
    assert res.success_rate > 0.5
    assert bool((res.queries[~res.success] == n_queries).all())
    # focus=1 is the paper's attack, bit for bit
    plain = square(mlp_model, x, y, threat, max_queries=n_queries, generator=0)
    one = square(mlp_model, x, y, threat, max_queries=n_queries, focus=1.0, focus_after=20, generator=0)
    assert torch.equal(plain.x_adv, one.x_adv) and torch.equal(plain.queries, one.queries)


def test_focus_min_fooled_stops_every_example_when_nothing_broke_by_the_focus_point(digits, mlp_model):
    x, y = digits["x_test"][:80], digits["y_test"][:80]
    threat = ThreatModel("linf", 0.002)  # too small to fool anything in 200 queries
    settings = {"max_queries": 200, "focus": 0.25, "focus_after": 30, "generator": 3}
    counter = CountingModel(mlp_model.module)
    model = Classifier(counter, num_classes=10, input_shape=(1, 8, 8)).eval()
    gave_up = square(model, x, y, threat, focus_min_fooled=1, **settings)
    clean_ok = _margin(mlp_model, x, y) < 0
    assert not bool(gave_up.success[clean_ok].any())
    # every example that entered the run stopped at the focus point: no query after it
    assert bool((gave_up.queries[clean_ok] == 1 + 30).all())
    assert counter.rows - 2 * x.shape[0] == int(gave_up.queries.sum())
    # the rule of 0 lets the quarter with the highest loss go on; the examples it stops end where gave_up's do
    usual = square(mlp_model, x, y, threat, **settings)
    stopped = clean_ok & (usual.queries == 1 + 30)
    assert int((clean_ok & (usual.queries > 1 + 30)).sum()) == math.ceil(0.25 * int(clean_ok.sum()))
    assert torch.equal(gave_up.x_adv[stopped], usual.x_adv[stopped])


def test_focus_min_fooled_changes_nothing_once_the_first_queries_broke_enough(digits, mlp_model):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    threat = ThreatModel("linf", 0.05)
    settings = {"max_queries": 150, "focus": 0.2, "focus_after": 40, "generator": 1}
    usual = square(mlp_model, x, y, threat, **settings)
    clean_ok = _margin(mlp_model, x, y) < 0  # the examples fooled at the clean point never enter the run
    fooled_early = int((clean_ok & usual.success & (usual.queries <= 1 + 40)).sum())
    assert fooled_early >= 1
    same = square(mlp_model, x, y, threat, focus_min_fooled=fooled_early, **settings)
    assert torch.equal(same.x_adv, usual.x_adv) and torch.equal(same.queries, usual.queries)
    # one more than the run fooled: every example it had not fooled stops at the focus point
    more = square(mlp_model, x, y, threat, focus_min_fooled=fooled_early + 1, **settings)
    assert bool((more.queries[clean_ok & ~more.success] == 1 + 40).all())
    assert torch.equal(more.success, clean_ok.logical_not() | (usual.success & (usual.queries <= 1 + 40)))


def test_focus_selection_keeps_nothing_below_min_fooled():
    point = FocusPoint(
        x_best=torch.zeros(6, 1),
        best_loss=torch.tensor([-3.0, -0.5, -2.0, -0.1, -1.0, -4.0]),
        fooled=torch.zeros(6, dtype=torch.bool),
        entered=torch.ones(6, dtype=torch.bool),
        queries=torch.full((6,), 31),
    )
    assert focus_selection(point, 0.5, min_fooled=0).tolist() == [False, True, False, True, True, False]
    assert not focus_selection(point, 0.5, min_fooled=1).any()
    one = dataclasses.replace(point, fooled=torch.tensor([False] * 5 + [True]))
    assert torch.equal(focus_selection(one, 0.5, min_fooled=1), focus_selection(one, 0.5, min_fooled=0))
