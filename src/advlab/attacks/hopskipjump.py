"""HopSkipJump (Chen et al. 2020): decision-based attack with boundary gradient estimates, l2 and linf."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from torch import nn

from advlab.attacks._query import (
    STOP_ERRORS,
    MaxQueries,
    QueryCounter,
    blend_search,
    check_starting_points,
    run_query_attack,
    starting_points,
)
from advlab.attacks.base import AttackOutput, Randomness, draw_per_row
from advlab.attacks.registry import register_attack
from advlab.goals import Goal
from advlab.oracles import Oracle
from advlab.result import AttackResult
from advlab.rng import RNG, ExampleRNG, as_rng
from advlab.settings import NonNegativeInt, NotASetting, PositiveFloat, PositiveInt
from advlab.threat import ThreatModel, flatten, per_example

FIRST_DELTA = 0.1
"""Probe radius at the first iteration, as a fraction of the box width."""
MAX_HALVINGS = 30
"""Geometric step-size search gives up after this many halvings (the step is then ~1e-9 of the distance)."""
CHUNK_POINTS = 1 << 15
"""Largest number of probe points built at once."""


def _project(x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """Point between ``x`` (alpha = 0) and ``x_adv``: blend for l2, clip to an linf box of radius alpha for linf."""
    a = per_example(alpha, x)
    if norm == "l2":
        return (1 - a) * x + a * x_adv
    return torch.minimum(torch.maximum(x_adv, x - a), x + a)


def _binary_search(
    counter: QueryCounter,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    idx: torch.Tensor,
    norm: str,
    theta: float,
) -> torch.Tensor:
    """Move the adversarial ``x_adv[idx]`` onto the boundary between it and ``x[idx]`` (batched over examples)."""
    xs, xa = x[idx], x_adv[idx]
    if norm == "l2":
        high = torch.ones(idx.numel(), device=x.device, dtype=x.dtype)
        thresh = torch.full_like(high, theta)
    else:
        high = flatten(xa - xs).abs().amax(1)
        thresh = (high * theta).clamp(max=theta)
    low = torch.zeros_like(high)
    while True:
        todo = ((high - low) > thresh) & counter.can_afford(1)[idx]
        sel = todo.nonzero().flatten()
        if sel.numel() == 0:
            break
        mid = (high[sel] + low[sel]) / 2
        adv = counter.is_adversarial(_project(xs[sel], xa[sel], mid, norm), idx[sel])
        high[sel] = torch.where(adv, mid, high[sel])
        low[sel] = torch.where(adv, low[sel], mid)
    return _project(xs, xa, high, norm)


def _estimate_gradient(
    counter: QueryCounter,
    x_b: torch.Tensor,
    idx: torch.Tensor,
    num_evals: int,
    delta: torch.Tensor,
    threat: ThreatModel,
    rng: RNG,
) -> torch.Tensor:
    """Monte-Carlo estimate of the boundary normal at ``x_b`` (Chen et al., Eq. 9, with the baseline of Eq. 16).

    At most :data:`CHUNK_POINTS` probes are built at once: all rows and some of the probes from one stream for the
    batch, or all the probes of some rows from per-example streams (each row's from its own stream).
    """
    n, d = x_b.shape[0], x_b[0].numel()
    sums = _ProbeSums(n, d, x_b)
    if isinstance(rng, ExampleRNG):
        per_group = max(1, CHUNK_POINTS // num_evals)
        for start in range(0, n, per_group):
            rows = torch.arange(start, min(start + per_group, n), device=x_b.device)
            kind: Literal["rand", "randn"] = "randn" if threat.norm == "l2" else "rand"
            rv = draw_per_row(rng.rows(rows), (rows.numel(), num_evals, d), kind, dtype=x_b.dtype, device=x_b.device)
            sums.add(counter, x_b, idx, rows, rv if threat.norm == "l2" else rv * 2 - 1, delta, threat)
    else:
        per_chunk = max(1, CHUNK_POINTS // max(1, n))
        rows = torch.arange(n, device=x_b.device)
        for start in range(0, num_evals, per_chunk):
            k = min(per_chunk, num_evals - start)
            rv = rng.randn((n, k, d)) if threat.norm == "l2" else rng.rand((n, k, d)) * 2 - 1
            sums.add(counter, x_b, idx, rows, rv.to(x_b.device, x_b.dtype), delta, threat)
    mean_phi = sums.phi / num_evals
    # baseline (Eq. 16): sum (phi - mean phi) u, unless all probes agree (then sum phi u, the signed mean)
    unanimous = (mean_phi.abs() == 1)[:, None]
    total = torch.where(unanimous, sums.phi_rv, sums.phi_rv - mean_phi[:, None] * sums.rv)
    grad = total / total.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return grad.reshape(x_b.shape)


class _ProbeSums:
    """Per-row sums of the probes of one gradient estimate: ``sum phi u``, ``sum u`` and ``sum phi``."""

    def __init__(self, n: int, d: int, like: torch.Tensor) -> None:
        self.phi_rv = torch.zeros(n, d, device=like.device, dtype=like.dtype)
        self.rv = torch.zeros(n, d, device=like.device, dtype=like.dtype)
        self.phi = torch.zeros(n, device=like.device, dtype=like.dtype)

    def add(
        self,
        counter: QueryCounter,
        x_b: torch.Tensor,
        idx: torch.Tensor,
        rows: torch.Tensor,
        rv: torch.Tensor,
        delta: torch.Tensor,
        threat: ThreatModel,
    ) -> None:
        """Probe ``x_b[rows]`` along the directions ``rv`` ``(R, k, d)`` (one query each) and add them up."""
        n, k = rv.shape[0], rv.shape[1]
        rv = rv / rv.norm(dim=2, keepdim=True).clamp_min(1e-12)
        base = flatten(x_b[rows]).unsqueeze(1)
        radius = delta[rows].view(n, 1, 1)
        pts = threat.clip_box(base + radius * rv)
        rv = (pts - base) / radius
        adv = counter.is_adversarial(pts.reshape(n * k, *x_b.shape[1:]), idx[rows].repeat_interleave(k))
        phi = adv.reshape(n, k).to(x_b.dtype) * 2 - 1
        self.phi_rv[rows] += (phi.unsqueeze(2) * rv).sum(1)
        self.rv[rows] += rv.sum(1)
        self.phi[rows] += phi.sum(1)


class _Walk:
    """Per-example state of HopSkipJump: the current boundary point, its distance, the closest adversarial point.

    Args:
        counter: the run's query counter.
        x: the clean batch.
        threat: the threat model (its norm is the attack's).
        gamma: sets the binary-search threshold ``theta = gamma / d^(3/2)`` (l2) or ``gamma / d^2`` (linf).
    """

    def __init__(self, counter: QueryCounter, x: torch.Tensor, threat: ThreatModel, gamma: float) -> None:
        n, d = x.shape[0], x[0].numel()
        self.counter, self.x, self.threat, self.d = counter, x, threat, d
        self.theta = gamma / (d * math.sqrt(d)) if threat.norm == "l2" else gamma / d**2
        self.best = x.clone()
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.best_dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        self.iterations = 0
        # set by start(): the points on the boundary, their distances, the examples that start at x itself
        self.current = x.clone()
        self.dist = torch.zeros_like(self.best_dist)
        self.already = torch.zeros_like(self.found)

    def start(self, clean_pred: torch.Tensor, given: torch.Tensor | None, init_attempts: int, generator: RNG) -> None:
        """Find adversarial starts, then move them onto the boundary (blend search, binary search)."""
        counter, x, threat = self.counter, self.x, self.threat
        start, self.found = starting_points(
            counter, x, clean_pred, threat, given=given, init_attempts=init_attempts, generator=generator
        )
        self.already = self.found & (threat.distance(start, x) == 0)
        self.best = torch.where(per_example(self.found, x), start, x)
        self.best_dist = torch.where(self.found, threat.distance(self.best, x), self.best_dist)
        moving = self.found & ~self.already
        current = blend_search(counter, x, self.best, moving)
        idx = moving.nonzero().flatten()
        if idx.numel():
            current[idx] = _binary_search(counter, x, current, idx, threat.norm, self.theta)
        self.current = current
        # distance after the last binary search, in the threat norm (drives the probe radius)
        self.dist = threat.distance(current, x)
        improved = self.found & (self.dist < self.best_dist)
        self.best[improved], self.best_dist[improved] = current[improved], self.dist[improved]
        counter.note_success(torch.arange(x.shape[0], device=x.device), self.found & (self.best_dist <= threat.eps))

    def iterate(self, t: int, num_evals: int, generator: RNG) -> bool:
        """Iteration ``t`` on the examples that can pay for it: estimate the boundary normal from ``num_evals``
        probes, step along it, binary-search back to the boundary. False when no example can."""
        counter, x, threat = self.counter, self.x, self.threat
        # an iteration needs the estimate plus at least a step search and a binary search query
        active = self.found & ~self.already & counter.can_afford(num_evals + 2)
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            return False
        delta = self._probe_radius(t, idx)
        grad = _estimate_gradient(counter, self.current[idx], idx, num_evals, delta, threat, generator.rows(idx))
        update = grad if threat.norm == "l2" else grad.sign()
        moved = self._geometric_step(t, idx, update)
        # binary search back to the boundary between x and the moved point
        stepped = self.current.clone()
        stepped[idx] = moved
        self.current[idx] = _binary_search(counter, x, stepped, idx, threat.norm, self.theta)
        self.dist[idx] = threat.distance(self.current[idx], x[idx])
        improved = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        improved[idx] = self.dist[idx] < self.best_dist[idx]
        self.best[improved], self.best_dist[improved] = self.current[improved], self.dist[improved]
        counter.note_success(idx, self.best_dist[idx] <= threat.eps)
        self.iterations = t
        return True

    def _probe_radius(self, t: int, idx: torch.Tensor) -> torch.Tensor:
        """``delta_t``: a tenth of the box (its :attr:`~advlab.threat.ThreatModel.scale`) at first, then ``sqrt(d) theta dist`` (l2) or ``d theta dist`` (linf)."""
        x = self.x
        if t == 1:
            return torch.full((idx.numel(),), FIRST_DELTA * self.threat.scale, device=x.device, dtype=x.dtype)
        d = self.d
        scale = math.sqrt(d) * self.theta if self.threat.norm == "l2" else d * self.theta
        return (scale * self.dist[idx]).clamp_min(1e-12)

    def _geometric_step(self, t: int, idx: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """Geometric step-size search: start at ``dist / sqrt(t)``, halve until the step stays adversarial."""
        counter, current = self.counter, self.current
        eps = self.dist[idx] / math.sqrt(t)
        moved = current[idx].clone()
        pending = torch.ones(idx.numel(), dtype=torch.bool, device=self.x.device)
        for _ in range(MAX_HALVINGS):
            sel = (pending & counter.can_afford(1)[idx]).nonzero().flatten()
            if sel.numel() == 0:
                break
            cand = self.threat.clip_box(current[idx[sel]] + per_example(eps[sel], update[sel]) * update[sel])
            adv = counter.is_adversarial(cand, idx[sel])
            moved[sel[adv]] = cand[adv]
            pending[sel[adv]] = False
            eps[sel[~adv]] /= 2
        return moved

    def output(self) -> AttackOutput:
        """The closest adversarial points found, with the attack's ``info``."""
        found, x = self.found, self.x
        inf = torch.full_like(found, float("inf"), dtype=x.dtype)
        min_distance = torch.where(found, self.threat.distance(self.best, x), inf)
        return self.counter.output(
            self.best, found, iterations=self.iterations, found_start=found.detach(), min_distance=min_distance
        )


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    init_num_evals: int,
    max_num_evals: int,
    gamma: float,
    init_attempts: int,
    starting_points_: torch.Tensor | None,
    generator: RNG,
    counter: QueryCounter,
) -> AttackOutput:
    clean_pred = counter.clean_log_probs(x).argmax(1)
    walk = _Walk(counter, x, threat, gamma)
    try:
        given = None if starting_points_ is None else starting_points_.to(x.device, x.dtype)
        walk.start(clean_pred, given, init_attempts, generator)
        for t in range(1, steps + 1):
            if not walk.iterate(t, int(min(init_num_evals * math.sqrt(t), max_num_evals)), generator):
                break
    except STOP_ERRORS as exc:
        counter.stop(exc)
    return walk.output()


@register_attack(
    "HopSkipJump",
    norms=("l2", "linf"),
    needs_gradients=False,
    needs_scores=False,
    stochastic=True,
    query_based=True,
    minimum_norm=True,
    paper="Chen et al. 2020, arXiv:1904.02144",
)
def hopskipjump(
    model: nn.Module | Oracle,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 64,
    init_num_evals: PositiveInt = 100,
    max_num_evals: PositiveInt = 10_000,
    gamma: PositiveFloat = 1.0,
    max_queries: MaxQueries = None,
    init_attempts: NonNegativeInt = 100,
    starting_points: Annotated[Any, NotASetting()] = None,
    generator: Randomness = None,
) -> AttackResult:
    """HopSkipJump: binary search to the boundary, estimate its normal from decisions, step, repeat.

    From an adversarial start (given ``starting_points``; for targeted goals the closest example of the batch
    in the target class; else uniform noise), each iteration ``t`` (1) estimates the gradient direction of the
    decision function at the boundary point from ``min(init_num_evals * sqrt(t), max_num_evals)`` probes of
    radius ``delta_t = sqrt(d) theta dist`` (l2) or ``d theta dist`` (linf), with the paper's baseline
    correction; (2) takes a step along it (its sign for linf) of size ``dist / sqrt(t)``, halved until the
    point stays adversarial (geometric progression); (3) binary-searches back to the boundary between ``x``
    and that point to precision ``theta = gamma / d^(3/2)`` (l2) or ``gamma / d^2`` (linf). A minimum-norm
    attack: it returns the closest adversarial point found; the framework projects it onto eps.

    Args:
        model: a module, a ``Classifier``, or an :class:`~advlab.blackbox.Oracle` (labels or scores mode).
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels ``(N,)``.
        threat: ``l2`` or ``linf`` threat model.
        goal: ``None`` (untargeted) or ``Targeted(target)``.
        steps: iterations (64 in the paper's experiments).
        init_num_evals: probes of the first gradient estimate (100); iteration t uses
            ``min(init_num_evals * sqrt(t), max_num_evals)`` (the paper's schedule).
        max_num_evals: cap on probes per estimate (10,000).
        gamma: sets the binary-search threshold ``theta = gamma / d^(3/2)`` (l2) or ``gamma / d^2`` (linf) (1.0).
        max_queries: per-example cap on queries, framework's clean and final checks included.
        init_attempts: uniform-noise draws per example when looking for an adversarial start (100).
        starting_points: optional adversarial starting points (e.g. images of the target class).
        generator: seed or ``torch.Generator``, or an :class:`~advlab.rng.ExampleRNG` (each example's draws from its
            own stream; with a targeted goal an example may still start from another example of the batch).

    Returns:
        AttackResult with ``queries`` per example; ``info``: ``"stopped"`` (``None``, ``"budget"`` or
        ``"unreachable"``), ``"found_start"`` (examples that had an adversarial start), ``"min_distance"`` (the
        smallest adversarial perturbation found, before the projection onto eps; inf without a start) and
        ``"queries_to_success"`` (queries until the perturbation first fitted in eps, -1 if never).

    Raises:
        ValueError: on bad settings, an unsupported norm, or starting points of the wrong shape.

    References:
        Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
        arXiv:1904.02144.

    Examples:
        >>> oracle = TorchOracle(model, mode="labels", budget=100 * 5000)
        >>> result = hopskipjump(oracle, x, y, ThreatModel("l2", 2.0), max_queries=5000)
        >>> result.success.float().mean()
    """
    if max_num_evals < init_num_evals:
        raise ValueError(f"max_num_evals: expected an int >= init_num_evals = {init_num_evals}, got {max_num_evals}")
    return run_query_attack(
        _core, model, x, y, threat, goal=goal, name="hopskipjump", max_queries=max_queries, need_scores=False,
        steps=steps, init_num_evals=init_num_evals, max_num_evals=max_num_evals, gamma=gamma,
        init_attempts=init_attempts, starting_points_=check_starting_points(starting_points, x, threat),
        generator=as_rng(generator),
    )  # fmt: skip


HopSkipJump = hopskipjump.config
