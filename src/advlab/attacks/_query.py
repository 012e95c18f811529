"""Query accounting shared by the query attacks (SPSA, NES, Boundary, HopSkipJump): per-example counts, budgets, stops.

A query attack sees its target through a :class:`QueryCounter`: every example it sends to the model costs one
query, charged to the example it belongs to. The counter enforces the attack's per-example ``max_queries`` and
the oracle's global budget (keeping back one query per example for the framework's final check of ``x_adv``),
and turns an exhausted budget or an unreachable target into a clean stop: the attack returns the best points
found so far with ``info["stopped"]`` set. :func:`run_query_attack` is :func:`~advlab.attacks.base.run_attack`
for these attacks: it accepts an :class:`~advlab.blackbox.Oracle` as the model and keeps partial results even
when the target dies before the final check.

Query accounting: ``AttackResult.queries[i]`` counts every evaluation of example ``i``'s points, including the
framework's clean pass (1) and its final check of ``x_adv`` (1). With a fresh oracle,
``oracle.queries == result.queries.sum()``. ``info["queries_to_success"][i]`` is the number of queries after which
example ``i`` first reached its goal inside the eps-ball (-1 if never): for minimum-norm attacks, which keep
shrinking the perturbation after that, it is the figure to compare with other attacks at a given budget.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Annotated, Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.base import AttackOutput, PreparedAttack, attack_boundary, check_randomness_rows, to_container
from advlab.goals import Goal, is_success
from advlab.losses import LossFn
from advlab.oracles import BudgetExceeded, Oracle, OracleUnavailable, TorchOracle, as_module, find_oracle
from advlab.result import AttackResult
from advlab.rng import RNG
from advlab.settings import Range
from advlab.threat import ThreatModel, per_example

log = logging.getLogger(__name__)

STOP_ERRORS = (BudgetExceeded, OracleUnavailable)
"""Errors after which a query attack stops and returns what it has."""

FRAMEWORK_QUERIES = 2
"""Queries per example made by the framework itself: the clean pass and the final check of ``x_adv``."""

LOCAL_BATCH = 4096
"""Examples per forward pass when a query attack runs on a local model."""

UNLIMITED = 2**62

UNBOUNDED_NOISE_SPREAD = 4.0
"""Where the box has an infinite side, the starting noise of decision-based attacks is drawn within this distance
of the clean point on that side (four standard deviations of standardised features)."""


class QueryCounter:
    """Per-example query accounting for one run of a query attack.

    Args:
        model: the ``Classifier`` the core function receives (from :func:`~advlab.blackbox.as_module` or a
            local model).
        x: the clean batch.
        max_queries: per-example cap on all queries (framework's included), ``None`` for unlimited.
        need_scores: raise ``ValueError`` unless the target reveals scores.
        name: attack name for error messages.
        labels: true labels (untargeted) or targets, for :meth:`is_adversarial`.
        targeted: whether ``labels`` are targets.
        bounds: the threat model's box (for a local model; an oracle keeps its own).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        max_queries: int | None,
        *,
        need_scores: bool,
        name: str,
        labels: torch.Tensor | None = None,
        targeted: bool = False,
        bounds: tuple[float, float] | None = None,
    ):
        self.target_labels = labels
        self.targeted = targeted
        self.module = find_oracle(model)
        self.oracle: Oracle = (
            self.module.oracle
            if self.module is not None
            else TorchOracle(model, mode="scores", batch_size=LOCAL_BATCH, bounds=bounds)
        )
        if need_scores and self.oracle.mode != "scores":
            raise ValueError(
                f"model: attack {name!r} needs class scores but the oracle reveals only labels; use a "
                "decision-based attack (boundary, hopskipjump) or an oracle in 'scores' mode"
            )
        self.name = name
        self.n = x.shape[0]
        self.device = x.device
        self.queries = torch.ones(self.n, dtype=torch.int64)  # the framework's clean pass
        self.max_queries = max_queries
        self.first_success = torch.full((self.n,), -1, dtype=torch.int64)
        self.stopped: str | None = None
        self.message: str | None = None
        self.partial: dict[str, Any] | None = None
        budget_left = self.oracle.remaining()
        if budget_left is not None and budget_left < self.n:
            raise BudgetExceeded(
                self.oracle.queries,
                self.oracle.budget,
                self.n,
                f"{name}: the oracle has {budget_left} queries left, fewer than the {self.n} the framework needs to "
                "check the results (one per example); raise the budget or attack fewer examples",
            )

    # ------------------------------------------------------------------ budgets
    def allowance(self) -> torch.Tensor:
        """Per-example queries the attack may still spend, shape ``(N,)`` (final check kept back)."""
        if self.max_queries is None:
            return torch.full((self.n,), UNLIMITED, dtype=torch.int64)
        return (self.max_queries - 1 - self.queries).clamp_min(0)

    def can_afford(self, cost: int | torch.Tensor) -> torch.Tensor:
        """Bool ``(N,)``: which examples can pay ``cost`` more queries (on the device of ``x``)."""
        return (self.allowance() >= torch.as_tensor(cost).cpu()).to(self.device)

    def _charge(self, owner: torch.Tensor) -> None:
        m = owner.numel()
        left = self.oracle.remaining()
        if left is not None and m > left - self.n:
            raise BudgetExceeded(
                self.oracle.queries,
                self.oracle.budget,
                m,
                f"{self.name}: the oracle's budget is nearly spent ({left} left, {self.n} kept back for the final "
                f"check); a batch of {m} queries was not sent",
            )

    def _account(self, owner: torch.Tensor) -> None:
        self.queries.index_add_(0, owner.cpu(), torch.ones(owner.numel(), dtype=torch.int64))

    # ------------------------------------------------------------------ queries
    def log_probs(self, points: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of ``points`` ``(M, ...)``; query ``j`` is charged to example ``owner[j]``."""
        if points.shape[0] == 0:
            return torch.empty(0, self.oracle.num_classes or 0, device=self.device)
        self._charge(owner)
        scores = self.oracle.scores(points.detach())
        self._account(owner)
        return torch.log(scores.clamp_min(1e-30)).to(self.device)

    def labels(self, points: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Predicted labels of ``points``; query ``j`` is charged to example ``owner[j]``."""
        if points.shape[0] == 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        self._charge(owner)
        labels = self.oracle.predict(points.detach())
        self._account(owner)
        return labels.to(self.device)

    def clean_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities on the clean batch: the framework already paid for them (no new charge)."""
        if self.module is not None:
            cached = self.module.cached(x)
            if cached is not None:
                return cached
            self.queries -= 1  # not in the cache: this call pays again
            return self.log_probs(x, torch.arange(self.n))
        with torch.no_grad():
            # float32, as the oracle's answers to the attack's own queries are
            return torch.log_softmax(self.oracle.model(x), dim=1).float()  # type: ignore[attr-defined]

    def is_adversarial(self, points: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Decision of the target on ``points`` w.r.t. the goal of example ``owner[j]`` (costs one query each)."""
        pred = self.labels(points, owner)
        assert self.target_labels is not None, "QueryCounter needs labels for decisions"
        want = self.target_labels[owner.to(self.target_labels.device)]
        return pred == want if self.targeted else pred != want

    def note_success(self, idx: torch.Tensor, reached: torch.Tensor) -> None:
        """Record, for examples ``idx[reached]`` that had not succeeded before, the queries spent so far (final
        check included): the queries this example needed to reach the goal within eps."""
        sel = idx[reached].cpu()
        new = sel[self.first_success[sel] < 0]
        self.first_success[new] = self.queries[new] + 1

    # ------------------------------------------------------------------ stopping
    def stop(self, exc: BaseException) -> None:
        """Record why the attack stopped early (budget exhausted or target unreachable)."""
        self.stopped = "budget" if isinstance(exc, BudgetExceeded) else "unreachable"
        self.message = str(exc)
        log.warning("%s stopped early (%s): %s", self.name, self.stopped, exc)

    def output(self, x_adv: torch.Tensor, success: torch.Tensor, **info: Any) -> AttackOutput:
        """The core's result: queries include the framework's final check (one per example)."""
        queries = (self.queries + 1).to(self.device)
        info = {
            "stopped": self.stopped,
            **({"stopped_message": self.message} if self.message else {}),
            "queries_to_success": self.first_success.to(self.device),
            **info,
        }
        self.partial = {"x_adv": x_adv.detach(), "success": success.detach(), "queries": queries, "info": info}
        return AttackOutput(x_adv.detach(), queries=queries, info=info)


def run_query_attack(
    core: Callable[..., AttackOutput],
    model: nn.Module | Oracle,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None,
    name: str,
    max_queries: int | None,
    need_scores: bool,
    **settings: Any,
) -> AttackResult:
    """:func:`~advlab.attacks.base.run_attack` for query attacks: the core gets a :class:`QueryCounter`.

    ``model`` may be an :class:`~advlab.oracles.Oracle` (wrapped with :func:`~advlab.oracles.as_module`). The
    core is called as ``core(model, x, labels, targeted, threat, counter=counter, **settings)``. When the target
    becomes unreachable or its budget runs out during the framework's final check, the points the attack found
    are still returned, with success from the attack's own queries and ``info["verified"] = False``.
    """
    if isinstance(model, Oracle):
        model = as_module(model)
    with attack_boundary(model, x, y, threat, goal) as run:
        check_randomness_rows(settings.get("generator"), run.x.shape[0])
        if threat.eps == 0:  # the framework's clean pass and final check only
            q = torch.full((run.x.shape[0],), FRAMEWORK_QUERIES, dtype=torch.int64, device=run.x.device)
            return run.result(AttackOutput(run.x.clone(), queries=q, info={"stopped": None}))
        counter = QueryCounter(
            run.model, run.x, max_queries, need_scores=need_scores, name=name, labels=run.labels,
            targeted=run.targeted, bounds=run.threat.box,
        )  # fmt: skip
        try:
            result = run.result(
                core(run.model, run.x, run.labels, run.targeted, run.threat, counter=counter, **settings)
            )
        except STOP_ERRORS as exc:
            if counter.partial is None:
                raise
            return _unverified_result(counter, run, exc)
    return dataclasses.replace(result, info={**result.info, "verified": True})


def _unverified_result(counter: QueryCounter, run: PreparedAttack, exc: BaseException) -> AttackResult:
    """Build the result from the attack's own knowledge when the final check could not be made."""
    part = counter.partial
    assert part is not None  # checked by the caller
    x_raw = part["x_adv"].to(run.x.dtype)
    x_adv = run.threat.project(x_raw, run.x)
    moved = run.threat.distance(x_adv, x_raw) > 0  # points the projection changed were never queried
    success = part["success"].to(torch.bool) & ~moved.to(part["success"].device)
    queries = part["queries"] - 1  # the final check was not made
    info = {
        **part["info"], "verified": False, "stopped": counter.stopped or "unreachable",
        "stopped_message": f"final check failed: {exc}",
    }  # fmt: skip
    log.warning("%s: the target failed during the final check; returning unverified results", counter.name)
    return AttackResult(
        x_adv=run.returned(x_adv),
        success=to_container(success, run.x_in),
        distance=to_container(run.threat.distance(x_adv, run.x), run.x_in),
        labels=run.labels.detach(),
        targeted=run.targeted,
        queries=to_container(queries, run.x_in),
        info=info,
        correct=to_container(run.correct, run.x_in),
    )


MaxQueries = Annotated[int | None, Range(FRAMEWORK_QUERIES + 1)]
"""The annotation of a query attack's ``max_queries``: ``None`` or an int of at least 3 (clean pass, one attack
query, final check)."""


def check_starting_points(starting_points: Any, x: Any, threat: Any) -> torch.Tensor | None:
    """``None`` or a float batch with the shape of ``x`` inside the threat model's bounds."""
    if starting_points is None:
        return None
    start = validation.as_tensor("starting_points", starting_points)
    if tuple(start.shape) != tuple(getattr(x, "shape", ())):
        raise ValueError(
            f"starting_points: expected the shape of x {tuple(getattr(x, 'shape', ()))}, got {tuple(start.shape)}"
        )
    if not torch.is_floating_point(start):
        raise TypeError(f"starting_points: expected a floating-point tensor, got dtype {start.dtype}")
    if isinstance(threat, ThreatModel):
        validation.check_input(start, threat.box, name="starting_points")
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return start.float().to(device)


# ---------------------------------------------------------------------- score-based search state
class ScoreSearch:
    """The best points of a score-based query attack (SPSA, NES): per example the best loss, success, and point.

    Starts from the clean inputs, whose scores the framework's clean pass already paid for. An example's point
    is replaced when a new one reaches the goal or raises the loss, until the example first succeeds.

    Args:
        counter: the run's query counter.
        x: the clean batch.
        labels: true labels (untargeted) or targets (targeted).
        targeted: whether ``labels`` are targets.
        loss_fn: ``(log_probs, labels, targeted) -> (N,)`` loss to maximise.
    """

    def __init__(
        self, counter: QueryCounter, x: torch.Tensor, labels: torch.Tensor, targeted: bool, loss_fn: LossFn
    ) -> None:
        self.counter, self.labels, self.targeted, self.loss_fn = counter, labels, targeted, loss_fn
        logp = counter.clean_log_probs(x)
        self.best_loss = loss_fn(logp, labels, targeted)
        self.success = is_success(logp, labels, targeted)
        counter.note_success(torch.arange(x.shape[0], device=x.device), self.success)
        self.x_best = x.clone()
        self.trace: list[torch.Tensor] = []

    def loss(self, points: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """The loss at ``points`` ``(M, ...)``; query ``j`` is charged to (and scored for) example ``owner[j]``."""
        return self.loss_fn(self.counter.log_probs(points, owner), self.labels[owner], self.targeted)

    def visit(self, x_new: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Query the new points of examples ``idx`` (one each), keep the better ones; their loss."""
        lp = self.counter.log_probs(x_new, idx)
        loss = self.loss_fn(lp, self.labels[idx], self.targeted)
        succ = is_success(lp, self.labels[idx], self.targeted)
        better = (succ | (loss > self.best_loss[idx])) & ~self.success[idx]
        # masked arithmetic over the rows idx (unique), not boolean indexing: no host sync
        self.x_best[idx] = torch.where(per_example(better, x_new), x_new, self.x_best[idx])
        self.best_loss[idx] = torch.where(better, loss, self.best_loss[idx])
        self.counter.note_success(idx, succ)
        self.success[idx] |= succ
        self.trace.append(loss.mean())  # read once, at the end
        return loss

    def output(self) -> AttackOutput:
        """The core's result: the best points, their success, the mean loss per step as the loss trace."""
        out = self.counter.output(self.x_best, self.success)
        out.loss_trace = torch.stack(self.trace).to(torch.get_default_dtype()).cpu() if self.trace else None
        return out


# ---------------------------------------------------------------------- decision-based starting points
def starting_points(
    counter: QueryCounter,
    x: torch.Tensor,
    clean_pred: torch.Tensor,
    threat: ThreatModel,
    *,
    given: torch.Tensor | None,
    init_attempts: int,
    generator: RNG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial starting points for decision-based attacks, and which examples have one.

    In order: ``given`` points (checked, one query each); for targeted goals, other examples of the batch the
    model already assigns to the target class (free: their clean labels are known); then uniform noise in the
    box (within :data:`UNBOUNDED_NOISE_SPREAD` of ``x`` on an infinite side), redrawn up to ``init_attempts`` times
    for examples still without a start (one query per draw).
    Examples the model already gets wrong (untargeted) start at ``x`` itself.
    """
    labels = counter.target_labels
    assert labels is not None
    start = x.clone()
    found = (clean_pred == labels) if counter.targeted else (clean_pred != labels)
    if given is not None:
        todo = (~found).nonzero().flatten()
        if todo.numel():
            ok = counter.is_adversarial(given[todo], todo)
            start[todo[ok]] = given[todo[ok]]
            found[todo[ok]] = True
    if counter.targeted:
        for i in (~found).nonzero().flatten().tolist():
            same = (clean_pred == labels[i]).nonzero().flatten()
            if same.numel():  # the closest example of the batch already in the target class
                j = same[threat.distance(x[same], x[i : i + 1].expand_as(x[same])).argmin()]
                start[i] = x[j]
                found[i] = True
    for _ in range(init_attempts):
        todo = (~found & counter.can_afford(1)).nonzero().flatten()
        if todo.numel() == 0:
            break
        lo, hi = threat.box_around(x[todo], UNBOUNDED_NOISE_SPREAD)
        noise = lo + (hi - lo) * generator.rows(todo).rand((todo.numel(), *x.shape[1:]), dtype=x.dtype).to(x.device)
        ok = counter.is_adversarial(noise, todo)
        start[todo[ok]] = noise[ok]
        found[todo[ok]] = True
    return start, found


def blend_search(
    counter: QueryCounter,
    x: torch.Tensor,
    start: torch.Tensor,
    active: torch.Tensor,
    *,
    tol: float = 1e-3,
) -> torch.Tensor:
    """Binary search on the segment from ``x`` to the adversarial ``start`` for the point closest to ``x``.

    Returns ``x + high * (start - x)`` where ``high`` is the smallest blend factor found adversarial (to
    ``tol``); examples not ``active`` or out of queries keep ``start``.
    """
    n = x.shape[0]
    low = torch.zeros(n, device=x.device, dtype=x.dtype)
    high = torch.ones(n, device=x.device, dtype=x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    while True:
        todo = (active & (high - low > tol) & counter.can_afford(1)).nonzero().flatten()
        if todo.numel() == 0:
            break
        mid = (low[todo] + high[todo]) / 2
        pts = x[todo] + mid.view(shape) * (start[todo] - x[todo])
        adv = counter.is_adversarial(pts, todo)
        high[todo] = torch.where(adv, mid, high[todo])
        low[todo] = torch.where(adv, low[todo], mid)
    return x + high.view(shape) * (start - x)
