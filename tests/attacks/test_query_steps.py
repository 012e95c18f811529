"""The named steps of the score-based query attacks: the shared best-point state, SPSA's Adam, NES's plateau schedule."""

from __future__ import annotations

import math

import torch

from advlab.attacks._query import QueryCounter, ScoreSearch
from advlab.attacks.nes import _PlateauSchedule
from advlab.attacks.spsa import ADAM_BETAS, ADAM_EPS, _Adam
from advlab.losses import margin


# ---------------------------------------------------------------------- ScoreSearch
def test_score_search_keeps_the_first_success_or_else_the_highest_loss(make_linear_binary):
    """On logits [0, w.x] the untargeted margin of class 1 is -w.x exactly: each visit's bookkeeping can be
    predicted by hand (which points are kept, success, queries charged to each example, the trace)."""
    model, w, _ = make_linear_binary(d=5)
    unit = w / w.norm()

    def at(m: list[float]) -> torch.Tensor:  # points with margin w.x = m
        return torch.tensor(m)[:, None] * unit / w.norm()

    x = at([1.0, 2.0, 3.0])
    y = torch.ones(3, dtype=torch.int64)
    counter = QueryCounter(model, x, None, need_scores=True, name="test", labels=y, targeted=False)
    search = ScoreSearch(counter, x, y, False, margin)
    torch.testing.assert_close(search.best_loss, torch.tensor([-1.0, -2.0, -3.0]))
    assert not bool(search.success.any())

    all3 = torch.arange(3)
    first = at([0.5, 1.5, 2.5])  # closer to the boundary: every loss rises
    torch.testing.assert_close(search.visit(first, all3), torch.tensor([-0.5, -1.5, -2.5]))
    torch.testing.assert_close(search.x_best, first)

    search.visit(at([0.9, 1.9]), torch.tensor([0, 1]))  # lower losses: nothing kept
    torch.testing.assert_close(search.x_best, first)

    fooled = at([-0.25])
    search.visit(fooled, torch.tensor([0]))  # example 0 crosses the boundary
    assert search.success.tolist() == [True, False, False]
    assert int(counter.first_success[0]) == 1 + 3 + 1  # clean pass, three visits, the final check

    later = at([-4.0, 2.0])
    search.visit(later, torch.tensor([0, 2]))  # example 0 keeps its first success; example 2 improves
    torch.testing.assert_close(search.x_best[0], fooled[0])
    torch.testing.assert_close(search.x_best[2], later[1])
    torch.testing.assert_close(search.x_best[1], first[1])

    out = search.output()
    assert out.queries.tolist() == [1 + 4 + 1, 1 + 2 + 1, 1 + 2 + 1]
    torch.testing.assert_close(out.loss_trace, torch.tensor([-1.5, -1.4, 0.25, 1.0]))


# ---------------------------------------------------------------------- SPSA's Adam
def test_spsa_adam_update_is_torch_adam_step():
    """With every example active, the update equals the step ``torch.optim.Adam`` (lr = 1) takes: p_{t-1} - p_t."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(4)]
    p = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS)
    adam = _Adam(torch.zeros(3, 4, dtype=torch.float64))
    idx = torch.arange(3)
    for t, grad in enumerate(grads, start=1):
        before = p.detach().clone()
        p.grad = grad.clone()
        opt.step()
        torch.testing.assert_close(adam.update(idx, grad, t), before - p.detach(), rtol=1e-10, atol=1e-12)


def test_spsa_adam_leaves_inactive_examples_alone():
    adam = _Adam(torch.zeros(3, 2))
    adam.update(torch.tensor([0, 2]), torch.ones(2, 2), 1)
    assert bool((adam.m[1] == 0).all()) and bool((adam.v[1] == 0).all())
    assert bool((adam.m[[0, 2]] > 0).all())


# ---------------------------------------------------------------------- NES's plateau schedule
def test_nes_plateau_schedule_drops_after_a_window_without_improvement_and_restarts_the_window():
    """length 3: a step whose loss is no better than two steps before halves the step size, and that example's
    window starts afresh (no second drop for two steps); steps an example did not take do not count."""
    x = torch.zeros(2, 1, dtype=torch.float64)
    schedule = _PlateauSchedule(x, step_size=1.0, min_step_size=0.2, length=3, drop=2.0)
    both, first = torch.tensor([0, 1]), torch.tensor([0])
    lrs = []
    losses = [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    for step, loss in enumerate(losses):
        if step % 3 == 1:  # example 1 steps every third time, always without improvement
            schedule.observe(both, torch.tensor([loss, 0.0], dtype=torch.float64))
        else:
            schedule.observe(first, torch.tensor([loss], dtype=torch.float64))
        lrs.append(schedule.lr.tolist())
    # example 0: improving until step 3; no better than two steps before at steps 4, 7 and 10 (then clamped)
    assert [lr[0] for lr in lrs] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2]
    # example 1: the step two steps before is always one it missed (NaN), so it never drops
    assert all(lr[1] == 1.0 for lr in lrs)
    assert not any(math.isnan(v) for lr in lrs for v in lr)
