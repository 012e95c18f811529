"""Auto-PGD (Croce & Hein 2020) for linf, l2 and l1, with CE/DLR losses, and its targeted top-k variant APGD-T.

APGD is PGD without a step-size parameter: the step size starts at ``2 * eps`` and is halved at checkpoints
when progress stalls, after which the attack restarts from the best point found so far; a momentum term
(``alpha = 0.75``) smooths the steps. The l1 version follows Croce & Hein 2021 ("Mind the box"): an exact
projection onto the intersection of the l1 ball and the input box, a sparse step on the top-k gradient
coordinates, and an adaptive sparsity level and step size.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.base import (
    AttackOutput,
    Randomness,
    is_keyed,
    loss_and_grad,
    run_attack,
    stop_check_every,
    warn_once_zero_grad,
)
from advlab.attacks.iterative import best_of_restarts
from advlab.attacks.registry import ALL_NORMS, Alias, register_attack
from advlab.goals import Goal, is_success
from advlab.losses import LossFn, cross_entropy, dlr, dlr_targeted, margin
from advlab.result import AttackResult
from advlab.rng import RNG, as_rng
from advlab.settings import OneOf, PositiveInt, Range
from advlab.threat import ThreatModel, flatten, per_example

log = logging.getLogger(__name__)

DEFAULT_STEPS = 100
"""Iterations per restart in the paper (and in AutoAttack's standard version)."""
RHO = 0.75
"""Condition 1: halve the step when fewer than ``rho`` of the steps since the last checkpoint increased the loss."""
MOMENTUM = 0.75
"""Weight ``alpha`` of the new step; ``1 - alpha`` is the weight of the previous update (momentum)."""
STEP_FACTOR = {"linf": 2.0, "l2": 2.0, "l1": 1.0}
"""Initial step size in units of eps: ``2 * eps`` (APGD, linf/l2), ``eps`` (APGD-L1)."""
CHECKPOINT_FIRST = 22
"""First checkpoint at ``p_1 = 0.22`` of the iterations (in hundredths, to keep the schedule exact)."""
CHECKPOINT_DECAY = 3
"""The gap between checkpoints shrinks by 0.03 each time ..."""
CHECKPOINT_MIN_GAP = 6
"""... down to a minimum of 0.06."""
L1_CHECK_FRACTION = 0.04
"""APGD-L1 revisits sparsity and step size every 4% of the iterations (Croce & Hein 2021)."""
L1_INIT_TOPK = 0.2
"""APGD-L1 initially steps along the top 20% gradient coordinates."""
L1_TOPK_DIVISOR = 1.5
"""At each L1 checkpoint the step's sparsity becomes the best point's sparsity / 1.5."""
L1_STEP_DECAY = 1.5
"""APGD-L1 divides its step size by 1.5 at a checkpoint where the sparsity did not drop ..."""
L1_MIN_STEP_DIVISOR = 10.0
"""... but never below ``eps / 10``."""
L1_SPARSITY_DROP = 0.95
"""A sparsity ratio below 0.95 since the last checkpoint resets the step size and restarts from the best point."""
N_TARGET_CLASSES = 9
"""APGD-T attacks the 9 most likely classes other than the true one (AutoAttack's setting for 10 classes)."""

_TINY = 1e-12


# ---------------------------------------------------------------------------------------------- schedule
def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` at which APGD checks its progress.

    ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (Croce & Hein 2020,
    Sec. 3.2), computed exactly in hundredths; only checkpoints ``<= steps`` are returned, without repeats.

    Args:
        steps: number of iterations.

    Returns:
        Sorted list starting at 0, e.g. ``[0, 22, 41, 57, 70, 80, 87, 93, 99]`` for ``steps = 100``.

    Examples:
        >>> checkpoints(100)[:4]
        [0, 22, 41, 57]
    """
    p = [0, CHECKPOINT_FIRST]
    while p[-1] < 100:
        p.append(p[-1] + max(p[-1] - p[-2] - CHECKPOINT_DECAY, CHECKPOINT_MIN_GAP))
    out: list[int] = []
    for pj in p:
        w = -(-pj * steps // 100)  # exact ceil(pj / 100 * steps)
        if w <= steps and (not out or w > out[-1]):
            out.append(w)
    return out


# ---------------------------------------------------------------------------------------------- geometry
def project_l1_box(
    delta: torch.Tensor, x: torch.Tensor, eps: torch.Tensor | float, bounds: tuple[float, float]
) -> torch.Tensor:
    """Exact Euclidean projection of ``x + delta`` onto ``{x + d : |d|_1 <= eps, low <= x + d <= high}``.

    Returns the projected perturbation ``d``. Each coordinate of the solution is the soft-thresholded
    ``delta`` clipped to the box, ``d_i = sign(delta_i) * min(max(|delta_i| - lam, 0), u_i)`` with ``u_i`` the
    room to the box in the direction of ``delta_i``; the threshold ``lam >= 0`` makes ``|d|_1 = eps`` (or is 0
    when the clipped ``delta`` is already inside the ball). ``|d|_1`` is piecewise linear in ``lam``, so ``lam``
    is found exactly by sorting its ``2 d`` breakpoints (``O(d log d)`` per example, batched).

    Args:
        delta: perturbations, shape ``(N, ...)``.
        x: centres of the balls, inside ``bounds``, same shape.
        eps: radius, a float or a ``(N,)`` tensor.
        bounds: ``(low, high)`` of the input box.

    Returns:
        The projected perturbation, same shape as ``delta``.

    References:
        Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers",
        arXiv:2103.01208 (Sec. 3.1).

    Examples:
        >>> d = project_l1_box(torch.randn(4, 10), torch.rand(4, 10), 1.0, (0.0, 1.0))
        >>> d.abs().sum(1)  # <= 1
    """
    y = flatten(delta)
    xf = flatten(x).to(y.dtype)
    n, d = y.shape
    lo, hi = bounds
    cap = torch.where(y >= 0, hi - xf, xf - lo).clamp_min(0.0)
    a = y.abs()
    eps_t = torch.as_tensor(eps, dtype=y.dtype, device=y.device).expand(n)
    clipped = torch.minimum(a, cap)
    total = clipped.sum(dim=1)
    need = total > eps_t  # elsewhere lam = 0 (no shortcut when nothing needs it: its test would be a host sync)
    # g(lam) = sum_i min(max(a_i - lam, 0), cap_i): a coordinate decreases with slope -1 between its breakpoints
    # max(a_i - cap_i, 0) (it leaves the box face) and a_i (it reaches zero).
    starts = (a - cap).clamp_min(0.0)
    points = torch.cat([starts, a], dim=1)
    events = torch.cat([torch.ones_like(a), -torch.ones_like(a)], dim=1)
    points, order = points.sort(dim=1)
    active = events.gather(1, order).cumsum(dim=1)  # coordinates decreasing on [points_k, points_{k+1})
    drops = active[:, :-1] * (points[:, 1:] - points[:, :-1])
    g_at = total[:, None] - torch.cat([torch.zeros_like(total)[:, None], drops.cumsum(dim=1)], dim=1)
    k = ((g_at >= eps_t[:, None]).sum(dim=1) - 1).clamp(0, 2 * d - 1)
    p_k = points.gather(1, k[:, None]).squeeze(1)
    g_k = g_at.gather(1, k[:, None]).squeeze(1)
    slope = active.gather(1, k[:, None]).squeeze(1).clamp_min(1.0)
    lam = torch.where(need, p_k + (g_k - eps_t) / slope, torch.zeros_like(p_k))
    out = y.sign() * torch.minimum((a - lam[:, None]).clamp_min(0.0), cap)
    return out.reshape(delta.shape)


def _l1_sparse_direction(grad: torch.Tensor, topk: torch.Tensor) -> torch.Tensor:
    """Sign of the top ``topk`` fraction of gradient coordinates (per example), scaled to unit l1 norm.

    The number of coordinates is ``round(topk * d)``, at least 1 (see :func:`apgd` for why it is rounded).
    """
    g = flatten(grad)
    d = g.shape[1]
    count = (topk * d).round().clamp(1, d)
    index = (d - count).long()
    thresh = g.abs().sort(dim=1).values.gather(1, index[:, None])
    sparse = g.sign() * (g.abs() >= thresh)
    return (sparse / (sparse.abs().sum(dim=1, keepdim=True) + 1e-10)).reshape(grad.shape)


def _step(
    threat: ThreatModel,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    eta: torch.Tensor,
    topk: torch.Tensor | None,
) -> torch.Tensor:
    """``P(x_adv + eta * direction)`` for the threat norm; for l1 the sparse step and the exact l1-box projection."""
    eta_b = per_example(eta, x)
    if threat.norm == "l1":
        assert topk is not None, "the l1 rule always sets the sparsity"
        moved = x_adv + eta_b * _l1_sparse_direction(grad, topk)
        return x + project_l1_box(moved - x, x, threat.eps, threat.box)
    return threat.project(x_adv + eta_b * threat.ascent_direction(grad, x_adv), x)


def _project(threat: ThreatModel, x_new: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if threat.norm == "l1":
        return x + project_l1_box(x_new - x, x, threat.eps, threat.box)
    return threat.project(x_new, x)


# ---------------------------------------------------------------------------------------------- one run
class _RunState:
    """Per-example state of one APGD run: iterate, previous iterate, step size, highest-loss point, successes.

    Created from the start point, which costs the run's first forward and backward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_init: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        threat: ThreatModel,
        loss_fn: LossFn,
        name: str,
        independent: bool = False,
    ) -> None:
        self.model, self.x, self.labels, self.targeted = model, x, labels, targeted
        self.threat, self.loss_fn = threat, loss_fn
        self.independent = independent
        self.x_adv = x_init.detach()
        self.loss, self.grad, logits = loss_and_grad(model, self.x_adv, labels, targeted, loss_fn)
        warn_once_zero_grad(self.grad, name)
        self.found = is_success(logits, labels, targeted)
        # every example has reached the goal at a step: the outputs no longer change (the first step always counts)
        self.finished = torch.zeros((), dtype=torch.bool, device=x.device)
        self.x_found = self.x_adv.clone()
        self.best_loss = self.loss.clone()
        self.x_max, self.grad_max = self.x_adv.clone(), self.grad.clone()
        self.x_prev = self.x_adv
        self.eta_max = STEP_FACTOR[threat.norm] * threat.eps
        self.eta = torch.full((x.shape[0],), self.eta_max, dtype=x.dtype, device=x.device)
        self.steps_done = 0

    def step(self, a: float, topk: torch.Tensor | None) -> torch.Tensor:
        """Move (with weight ``a`` on the new step, ``1 - a`` on the previous update), evaluate; the new loss."""
        threat, x, x_adv = self.threat, self.x, self.x_adv
        z = _step(threat, x, x_adv, self.grad, self.eta, topk)
        if a < 1.0:
            x_new = _project(threat, x_adv + a * (z - x_adv) + (1.0 - a) * (x_adv - self.x_prev), x)
        else:
            x_new = z
        self.x_prev, self.x_adv = x_adv, x_new.detach()
        self.loss, self.grad, logits = loss_and_grad(self.model, self.x_adv, self.labels, self.targeted, self.loss_fn)
        succ = is_success(logits, self.labels, self.targeted)
        if self.independent and self.steps_done > 0:
            succ = succ & ~self.found  # an example stops at its first successful step, as it would alone
        self.x_found = torch.where(per_example(succ & ~self.finished, x), self.x_adv, self.x_found)
        self.found |= succ
        self.finished = self.found.all()
        self.steps_done += 1
        return self.loss

    def rows(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (bool per row) of every per-example tensor: the others leave the run."""
        for name in ("x", "labels", "x_adv", "loss", "grad", "found", "x_found", "best_loss", "x_max", "grad_max",
                     "x_prev", "eta"):  # fmt: skip
            setattr(self, name, getattr(self, name)[keep])
        rows = getattr(self.loss_fn, "rows", None)
        if rows is not None:
            self.loss_fn = rows(keep)

    def track_best(self) -> None:
        """Keep the highest-loss point and its gradient per example (until the run is finished)."""
        # Ties go to the newer point: where the loss saturates in float32 (a confidently classified point's
        # cross-entropy rounds to a constant) the best point still follows the iterates.
        improved = (self.loss >= self.best_loss) & ~self.finished
        self.best_loss = torch.where(improved, self.loss, self.best_loss)
        self.x_max = torch.where(per_example(improved, self.x), self.x_adv, self.x_max)
        self.grad_max = torch.where(per_example(improved, self.x), self.grad, self.grad_max)

    def restart_from_best(self, restart: torch.Tensor) -> None:
        """Examples in ``restart`` go on from their highest-loss point."""
        r = per_example(restart, self.x)
        self.x_adv = torch.where(r, self.x_max, self.x_adv)
        self.grad = torch.where(r, self.grad_max, self.grad)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, best_loss)``: the last successful iterate, else the highest-loss point."""
        x_out = torch.where(per_example(self.found, self.x), self.x_found, self.x_max)
        return x_out, self.found, self.best_loss


class _Retired:
    """The examples that left an independent APGD run once they reached the goal, and where the others are.

    In an independent run (:func:`apgd_run`) an example keeps the iterate of its first success, so once it has
    reached the goal nothing the run returns for it can change: it leaves the batch, with its result, and the later
    forward and backward passes go to the examples still running (A3, Liu et al. 2022: iterations spent on examples
    already broken are wasted). The outputs of the others are those of the whole batch.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.pos: torch.Tensor | None = None  # the run's rows still in the batch (None: all of them)
        self.x_out = self.found_out = self.best_out = torch.empty(0)
        self.frozen = torch.zeros(())  # the sum of the last losses of the rows that left (for the trace's mean)

    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean loss over every row of the run, those that left counted at their last loss."""
        return loss.mean() if self.pos is None else (loss.sum() + self.frozen) / self.n

    def drop(self, state: _RunState, rule: _HalvingRule | _SparsityRule) -> None:
        """Take the rows that reached the goal out of ``state`` and ``rule``, keeping their results."""
        leave = state.found
        n_leave = int(leave.sum())
        if n_leave == 0 or n_leave == leave.shape[0]:
            return
        if self.pos is None:
            self.pos = torch.arange(self.n, device=state.x.device)
            self.x_out = torch.empty_like(state.x)
            self.found_out = torch.zeros(self.n, dtype=torch.bool, device=state.x.device)
            self.best_out = torch.empty_like(state.best_loss)
            self.frozen = self.frozen.to(state.loss)
        rows = self.pos[leave]
        self.x_out[rows] = state.x_found[leave]
        self.found_out[rows] = True
        self.best_out[rows] = state.best_loss[leave]
        self.frozen = self.frozen + state.loss[leave].sum()
        keep = ~leave
        self.pos = self.pos[keep]
        state.rows(keep)
        rule.rows(keep)

    def result(self, state: _RunState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_RunState.result` of every row of the run."""
        x_adv, found, best = state.result()
        if self.pos is None:
            return x_adv, found, best
        self.x_out[self.pos], self.found_out[self.pos], self.best_out[self.pos] = x_adv, found, best
        return self.x_out, self.found_out, self.best_out


class _HalvingRule:
    """APGD's step-size rule (linf, l2): conditions 1 and 2 at the checkpoints of :func:`checkpoints`."""

    alpha = MOMENTUM
    topk = None

    def __init__(self, steps: int, state: _RunState, rho: float) -> None:
        x = state.x
        self.check_at = set(checkpoints(steps)[1:])
        self.rho = rho
        self.last_check = 0
        self.increases = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        self.loss_prev = state.loss
        self.best_at_check = state.best_loss.clone()
        self.reduced_at_check = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def observe(self, loss: torch.Tensor) -> None:
        """Count the steps that increased the loss (condition 1)."""
        self.increases += (loss > self.loss_prev).to(self.increases.dtype)
        self.loss_prev = loss

    def rows(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` of the per-example statistics (see :meth:`_RunState.rows`)."""
        self.increases, self.loss_prev = self.increases[keep], self.loss_prev[keep]
        self.best_at_check, self.reduced_at_check = self.best_at_check[keep], self.reduced_at_check[keep]

    def checkpoint(self, k: int, state: _RunState) -> torch.Tensor:
        """At checkpoint ``k``: halve the step of the examples meeting condition 1 or 2; those restart."""
        span = k - self.last_check
        cond1 = self.increases < self.rho * span
        cond2 = ~self.reduced_at_check & (state.best_loss <= self.best_at_check)
        restart = cond1 | cond2
        state.eta = torch.where(restart, state.eta / 2.0, state.eta)
        self.reduced_at_check = restart
        self.best_at_check = state.best_loss.clone()
        # the next increase is measured from the restart point
        self.loss_prev = torch.where(restart, state.best_loss, self.loss_prev)
        self.increases.zero_()
        self.last_check = k
        return restart


class _SparsityRule:
    """APGD-L1's rule (Croce & Hein 2021): adapt the step's sparsity and size every 4% of the iterations."""

    alpha = 1.0  # as in the reference code, APGD-L1 uses no momentum

    def __init__(self, steps: int, state: _RunState) -> None:
        x = state.x
        check_every = max(int(L1_CHECK_FRACTION * steps), 1)
        self.check_at = set(range(check_every, steps + 1, check_every))
        self.n_features = x[0].numel()
        self.topk = torch.full((x.shape[0],), L1_INIT_TOPK, dtype=x.dtype, device=x.device)
        self.sparsity_old = torch.full((x.shape[0],), float(self.n_features), dtype=x.dtype, device=x.device)

    def observe(self, loss: torch.Tensor) -> None:
        """Nothing to count between checkpoints."""

    def rows(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` of the per-example sparsity (see :meth:`_RunState.rows`)."""
        self.topk, self.sparsity_old = self.topk[keep], self.sparsity_old[keep]

    def checkpoint(self, k: int, state: _RunState) -> torch.Tensor:
        """Set the sparsity from the best point's; restart (full step) where it dropped, else shrink the step."""
        sparsity = (flatten(state.x_max - state.x) != 0).sum(dim=1).to(state.x.dtype)
        restart = sparsity / self.sparsity_old < L1_SPARSITY_DROP
        self.topk = sparsity / self.n_features / L1_TOPK_DIVISOR
        eta_max = state.eta_max
        eta = torch.where(restart, torch.full_like(state.eta, eta_max), state.eta / L1_STEP_DECAY)
        state.eta = eta.clamp(eta_max / L1_MIN_STEP_DIVISOR, eta_max)
        self.sparsity_old = sparsity
        return restart


def apgd_run(
    model: nn.Module,
    x: torch.Tensor,
    x_init: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    loss_fn: LossFn,
    rho: float = RHO,
    name: str = "apgd",
    independent: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One run of APGD (Algorithm 1 of Croce & Hein 2020) from ``x_init``, batched with per-example state.

    Each example has its own step size ``eta``, best point ``x_max`` (highest loss) and checkpoint
    statistics; the checkpoints themselves are shared. At checkpoint ``w_j`` (linf/l2) an example halves its
    step size and restarts from ``x_max`` when (1) fewer than ``rho * (w_j - w_{j-1})`` of its steps since
    ``w_{j-1}`` increased the loss, or (2) its step size was not reduced at ``w_{j-1}`` and its best loss did
    not improve since. For l1 the sparsity/step-size rule of Croce & Hein 2021 replaces (1) and (2).

    Args:
        model: classifier in attack mode.
        x: clean inputs ``(N, ...)``.
        x_init: starting points inside the threat model.
        labels: true labels (untargeted) or targets (targeted); passed to ``loss_fn`` and the success test.
        targeted: whether success means ``argmax == labels``.
        threat: the threat model.
        steps: number of iterations (one forward and backward each, plus one for the start).
        loss_fn: ``(logits, labels, targeted) -> (N,)`` loss to maximise.
        rho: the fraction of condition 1.
        name: attack name for warnings.
        independent: make each example's result independent of the other rows: an example keeps the iterate of
            its first successful step, where the batch would stop if it were alone, instead of the last successful
            iterate before every example of the batch has succeeded.

    Returns:
        ``(x_adv, success, best_loss, trace)``: per example the last iterate that reached the goal (the first one,
        with ``independent``), otherwise the highest-loss point; whether the goal was reached; the highest loss; the
        mean loss per iteration. The run is finished once every example has reached the goal (the trace then ends
        at that iteration).

    On an accelerator the loop asks whether the run is finished only every :data:`~advlab.attacks.base.SYNC_EVERY`
    iterations (each look is a host synchronisation, :func:`~advlab.attacks.base.stop_check_every`); the iterations
    between the finish and the look leave the outputs as they were at the finish.
    """
    state = _RunState(model, x, x_init, labels, targeted, threat, loss_fn, name, independent)
    rule = _SparsityRule(steps, state) if threat.norm == "l1" else _HalvingRule(steps, state, rho)
    retired = _Retired(x.shape[0])
    trace = torch.empty(steps, device=x.device)
    after_finish = torch.zeros((), dtype=torch.int64, device=x.device)  # iterations begun after the finish
    done, every = 0, stop_check_every(x.device)
    for k in range(steps):
        after_finish += state.finished
        loss = state.step(1.0 if k == 0 else rule.alpha, rule.topk)  # first step: no previous update
        trace[k] = retired.mean(loss)
        done = k + 1
        if done % every == 0 and bool(state.finished):
            break
        rule.observe(loss)
        state.track_best()
        if k + 1 in rule.check_at:
            state.restart_from_best(rule.checkpoint(k + 1, state))
        if independent and done % every == 0:
            retired.drop(state, rule)
    return (*retired.result(state), trace[: done - int(after_finish)])


# ---------------------------------------------------------------------------------------------- APGD
_MIN_CLASSES = {"ce": 2, "dlr": 3}
Rho = Annotated[float, Range(0, 1, strict_min=True)]


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    restarts: int,
    loss: str,
    rho: float,
    generator: RNG,
) -> AttackOutput:
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    minimum = _MIN_CLASSES[loss] + (1 if targeted and loss == "dlr" else 0)
    validation.check_num_classes(
        "loss", num_classes, minimum, f"the {loss!r} loss needs at least {minimum} classes; use loss='ce'"
    )
    loss_fn = cross_entropy if loss == "ce" else dlr

    independent = is_keyed(generator)

    def run_once(idx: torch.Tensor):
        xs = x[idx]
        x0 = threat.random_start(xs, generator.rows(idx))
        return apgd_run(
            model, xs, x0, labels[idx], targeted, threat, steps=steps, loss_fn=loss_fn, rho=rho, independent=independent
        )

    x_adv, trace = best_of_restarts(run_once, x, restarts)
    return AttackOutput(x_adv, loss_trace=trace)


@register_attack(
    "APGD",
    norms=ALL_NORMS,
    stochastic=True,
    paper="Croce & Hein 2020, arXiv:2003.01690",
    renamed={"n_iter": "steps"},
    aliases={
        "apgd-ce": Alias("apgd", {"loss": "ce"}, doc="APGD on the cross-entropy (AutoAttack's first attack)"),
        "apgd-dlr": Alias("apgd", {"loss": "dlr"}, doc="APGD on the difference of logits ratio"),
    },
)
def apgd(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = DEFAULT_STEPS,
    restarts: PositiveInt = 1,
    loss: Annotated[str, OneOf(("ce", "dlr"), "APGD-CE uses 'ce', APGD-DLR uses 'dlr'.")] = "ce",
    rho: Rho = RHO,
    generator: Randomness = None,
) -> AttackResult:
    """Auto-PGD: step-size-free PGD with momentum, checkpoints and restarts from the best point.

    From a random point of the eps-ball, APGD takes ``steps`` steps of size ``eta`` (initially ``2 * eps``;
    ``eps`` for l1) with momentum 0.75. At the checkpoints ``w_j`` of :func:`checkpoints` each example halves
    its step size and jumps back to its highest-loss point when the loss increased in fewer than ``rho`` of
    the steps since the last checkpoint, or when neither its step size nor its best loss changed since then.
    For l1 it uses the sparse step and the exact projection onto the l1 ball intersected with the box of
    Croce & Hein 2021 (:func:`project_l1_box`) and their adaptive sparsity/step-size rule. Restarts run only
    on examples not yet fooled, keeping per example the first success or else the highest loss.

    With a targeted goal (``Targeted(t)`` or ``LeastLikely()``) the targeted form of the loss is ascended:
    ``-CE(logits, t)`` for ``"ce"``, and for ``"dlr"`` :func:`advlab.losses.dlr` with ``targeted=True``
    (``-(max_{j != t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``: the best non-target logit stands in for
    the true-label logit, since the attack only sees the targets). For the paper's APGD-T, which searches
    the top-k classes itself, use :func:`apgd_t`.

    Details that differ from the reference code (arXiv:2003.01690 is followed where the two disagree):
    condition 1 is the paper's strict ``<`` (the code uses ``<=``); condition 2 may already hold at the first
    checkpoint (the code starts as if the step had just been reduced); checkpoints are the paper's
    ``ceil(p_j * steps)`` (the code's integer gaps agree for multiples of 100). The best point takes ties
    (``>=``), so where float32 cross-entropy saturates to a constant the attack still returns its latest
    iterate. For l1 the random start is uniform in the ball, the step uses ``round(k)`` rather than
    ``ceil(k)`` coordinates (with ``ceil`` a step never gets below 2 coordinates and misses 1-sparse optima),
    and, as in the code, there is no momentum; the code's optional larger-eps warm-up is not implemented.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (``"linf"``, ``"l2"`` or ``"l1"``), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations per restart (100 in the paper). Called ``n_iter`` before advlab 0.2.
        restarts: random restarts (1 in AutoAttack's standard version, 5 in its "plus" version).
        loss: ``"ce"`` (cross-entropy, APGD-CE) or ``"dlr"`` (difference of logits ratio, APGD-DLR; needs at
            least 3 classes, 4 when targeted).
        rho: the fraction of condition 1 (0.75 in the paper).
        generator: ``torch.Generator`` or int seed for the random starts (default seed 0), or an
            :class:`~advlab.rng.ExampleRNG` (each example's starts from its own stream, and its result independent of
            the other rows: see ``independent`` in :func:`apgd_run`).

    Returns:
        AttackResult with the first restart's ``loss_trace`` (mean loss per iteration).

    Raises:
        ValueError: on an unknown loss, too few classes for DLR, bad settings or bad input.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``; loss_trace: ``(steps,)``.

    References:
        Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", arXiv:2003.01690. Croce & Hein, "Mind the box: l1-APGD for sparse
        adversarial attacks on image classifiers", arXiv:2103.01208 (the l1 version).

    Examples:
        >>> threat = ThreatModel("linf", 8 / 255)
        >>> result = apgd(model, x, y, threat, loss="dlr")
        >>> robust_accuracy = 1 - result.success.float().mean()
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, steps=steps, restarts=restarts, loss=loss, rho=rho,
        generator=as_rng(generator),
    )  # fmt: skip


APGD = apgd.config


# ---------------------------------------------------------------------------------------------- APGD-T
class _TargetLoss:
    """APGD-T's loss for fixed targets, one per example: the targeted DLR, or the targeted cross-entropy.

    Its rows follow the run's (:meth:`_RunState.rows`) when examples that reached the goal leave it.
    """

    def __init__(self, target: torch.Tensor, dlr_loss: bool) -> None:
        self.target, self.dlr_loss = target, dlr_loss

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
        if self.dlr_loss:
            return dlr_targeted(logits, y, self.target)
        return cross_entropy(logits, self.target, True)

    def rows(self, keep: torch.Tensor) -> _TargetLoss:
        """The loss of the rows ``keep`` only."""
        return _TargetLoss(self.target[keep], self.dlr_loss)


def _core_t(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    restarts: int,
    n_target_classes: int,
    rho: float,
    generator: RNG,
) -> AttackOutput:
    with torch.no_grad():
        clean_logits = model(x)
    num_classes = clean_logits.shape[1]
    validation.check_num_classes("model", num_classes, 2, "APGD-T needs a classifier with at least 2 classes")
    dlr_loss = num_classes >= 4
    if not dlr_loss:
        # The targeted DLR needs the 4th largest logit; with 2 or 3 classes fall back to the targeted CE.
        log.info("apgd-t: %d classes < 4, using the targeted cross-entropy instead of the targeted DLR", num_classes)
    n_targets = min(n_target_classes, num_classes - 1)
    ranking = clean_logits.argsort(dim=1, descending=True)
    # Rank 0 is the most likely class; skip the true label so the targets are the top-k other classes.
    others = ranking.masked_select(ranking != labels[:, None]).reshape(x.shape[0], num_classes - 1)

    n = x.shape[0]
    x_best = x.clone()
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_margin = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    first_trace: torch.Tensor | None = None
    for t in range(n_targets):
        idx = (~done).nonzero().flatten()
        if idx.numel() == 0:
            break
        target = others[idx, t]
        ys = labels[idx]

        def run_once(sub: torch.Tensor, xs=x[idx], ys=ys, target=target, idx=idx):
            loss_sub = _TargetLoss(target[sub], dlr_loss)
            xi = xs[sub]
            x0 = threat.random_start(xi, generator.rows(idx[sub]))
            return apgd_run(
                model, xi, x0, ys[sub], False, threat, steps=steps, loss_fn=loss_sub, rho=rho, name="apgd-t",
                independent=is_keyed(generator),
            )  # fmt: skip

        x_adv, trace = best_of_restarts(run_once, x[idx], restarts)
        if first_trace is None:
            first_trace = trace
        with torch.no_grad():
            logits = model(x_adv)
        succ = is_success(logits, ys, False)
        m = margin(logits, ys, False)
        better = succ | (m > best_margin[idx])
        sel = idx[better]
        x_best[sel] = x_adv[better]
        best_margin[sel] = m[better]
        done[idx[succ]] = True
    return AttackOutput(x_best, loss_trace=first_trace)


@register_attack(
    "APGDT",
    norms=ALL_NORMS,
    targeted=False,
    stochastic=True,
    paper="Croce & Hein 2020, arXiv:2003.01690",
    renamed={"n_iter": "steps"},
)
def apgd_t(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = DEFAULT_STEPS,
    restarts: PositiveInt = 1,
    n_target_classes: PositiveInt = N_TARGET_CLASSES,
    rho: Rho = RHO,
    generator: Randomness = None,
) -> AttackResult:
    """APGD-T: targeted APGD with the targeted DLR loss against each of the top-k other classes in turn.

    For ``t = 1..n_target_classes`` the ``t``-th most likely class (on the clean input) other than the true
    one becomes the target, and APGD (same schedule as :func:`apgd`) ascends
    :func:`advlab.losses.dlr_targeted` ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` on the examples not
    yet misclassified; the first success is kept. The goal of the whole attack is untargeted (any wrong
    class counts), so ``goal`` must be ``None``/``Untargeted()``. For examples never fooled the point with
    the largest margin ``max_{j != y} z_j - z_y`` over the targets is returned. With fewer than 4 classes the
    targeted DLR is undefined and the targeted cross-entropy is used instead.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (``"linf"``, ``"l2"`` or ``"l1"``), eps and bounds.
        goal: ``None`` or ``Untargeted()`` (APGD-T chooses its own targets).
        steps: iterations per target and restart (100). Called ``n_iter`` before advlab 0.2.
        restarts: random restarts per target class (1).
        n_target_classes: how many of the most likely other classes to try (9; capped at ``classes - 1``).
        rho: the fraction of condition 1 (0.75).
        generator: ``torch.Generator`` or int seed for the random starts (default seed 0), or an
            :class:`~advlab.rng.ExampleRNG` (each example's starts from its own stream, and its result independent of
            the other rows: see ``independent`` in :func:`apgd_run`).

    Returns:
        AttackResult with the first target's ``loss_trace``.

    Raises:
        ValueError: on a targeted goal, bad settings or bad input.

    References:
        Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", arXiv:2003.01690.

    Examples:
        >>> result = apgd_t(model, x, y, ThreatModel("linf", 8 / 255))
        >>> robust_accuracy = 1 - result.success.float().mean()
    """
    return run_attack(
        _core_t, model, x, y, threat, goal=goal, steps=steps, restarts=restarts, n_target_classes=n_target_classes,
        rho=rho, generator=as_rng(generator),
    )  # fmt: skip


APGDT = apgd_t.config
