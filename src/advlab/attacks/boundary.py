"""Boundary Attack (Brendel et al. 2018): decision-based random walk along the decision boundary toward the input."""

from __future__ import annotations

from typing import Annotated, Any

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
from advlab.settings import NonNegativeInt, NotASetting, PositiveFloat, PositiveInt, Range
from advlab.threat import ThreatModel, flatten, per_example

UPDATE_EVERY = 10
"""Steps between two step-size adaptations."""
SPHERICAL_WINDOW = 100
SOURCE_WINDOW = 30
"""Lengths of the success statistics of orthogonal steps and of full steps."""
HIGH_RATE, LOW_RATE = 0.5, 0.2
"""Success rates above/below which step sizes grow/shrink."""
CONVERGED_STEP = 1e-7
"""An example whose step toward the input falls below this has converged."""


class _RingStats:
    """Per-example success statistics over the last ``window`` trials."""

    def __init__(self, n: int, window: int, device: torch.device) -> None:
        self.hits = torch.zeros(n, window, dtype=torch.bool, device=device)
        self.count = torch.zeros(n, dtype=torch.int64, device=device)
        self.window = window

    def add(self, idx: torch.Tensor, hit: torch.Tensor) -> None:
        pos = self.count[idx] % self.window
        self.hits[idx, pos] = hit
        self.count[idx] += 1

    def full(self) -> torch.Tensor:
        return self.count >= self.window

    def rate(self) -> torch.Tensor:
        return self.hits.float().mean(1)

    def clear(self, mask: torch.Tensor) -> None:
        self.hits[mask] = False
        self.count[mask] = 0


def _proposals(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    spherical: torch.Tensor,
    source: torch.Tensor,
    threat: ThreatModel,
    rng: RNG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthogonal (spherical) step around ``x`` and the full step that also moves toward ``x``."""
    towards = flatten(x - x_adv)
    dist = towards.norm(dim=1).clamp_min(1e-12)
    unit = towards / dist[:, None]
    if isinstance(rng, ExampleRNG):
        eta = draw_per_row(rng, tuple(towards.shape), "randn", dtype=x.dtype, device=x.device)
    else:
        eta = rng.randn(towards.shape).to(x.device, x.dtype)
    eta = eta - (eta * unit).sum(1, keepdim=True) * unit  # orthogonal to the direction of the input
    eta = eta * (spherical * dist / eta.norm(dim=1).clamp_min(1e-12))[:, None]
    # move on the sphere of radius dist around x: rescale (x_adv + eta - x) back to length dist
    direction = eta - towards
    spherical_pt = flatten(x) + direction / torch.sqrt(1 + spherical**2)[:, None]
    spherical_pt = threat.clip_box(spherical_pt.reshape(x.shape))
    new_towards = flatten(x - spherical_pt)
    new_dist = new_towards.norm(dim=1).clamp_min(1e-12)
    # step toward x by source * dist, measured from the original radius (clipping may have shortened it)
    length = (source * dist + (new_dist - dist)).clamp_min(0) / new_dist
    candidate = threat.clip_box(spherical_pt + per_example(length, spherical_pt) * new_towards.reshape(x.shape))
    return spherical_pt, candidate


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    spherical_step: float,
    source_step: float,
    step_adaptation: float,
    init_attempts: int,
    starting_points_: torch.Tensor | None,
    generator: RNG,
    counter: QueryCounter,
) -> AttackOutput:
    n = x.shape[0]
    clean_pred = counter.clean_log_probs(x).argmax(1)
    best = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    done_steps = 0
    try:
        given = None if starting_points_ is None else starting_points_.to(x.device, x.dtype)
        start, found = starting_points(
            counter, x, clean_pred, threat, given=given, init_attempts=init_attempts, generator=generator
        )
        best = torch.where(per_example(found, x), start, x)
        already = found & (threat.distance(start, x) == 0)
        best = blend_search(counter, x, best, found & ~already)

        def within() -> torch.Tensor:
            return found & (threat.distance(best, x) <= threat.eps)

        counter.note_success(torch.arange(n, device=x.device), within())
        spherical = torch.full((n,), spherical_step, device=x.device, dtype=x.dtype)
        source = torch.full((n,), source_step, device=x.device, dtype=x.dtype)
        sph_stats = _RingStats(n, SPHERICAL_WINDOW, x.device)
        step_stats = _RingStats(n, SOURCE_WINDOW, x.device)
        for step in range(1, steps + 1):
            active = found & ~already & (source >= CONVERGED_STEP) & counter.can_afford(2)
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            sph_pt, cand = _proposals(x[idx], best[idx], spherical[idx], source[idx], threat, generator.rows(idx))
            sph_adv = counter.is_adversarial(sph_pt, idx)
            cand_adv = counter.is_adversarial(cand, idx)
            closer = threat.distance(cand, x[idx]) < threat.distance(best[idx], x[idx])
            accept = cand_adv & closer
            best[idx[accept]] = cand[accept]
            counter.note_success(idx, within()[idx])
            sph_stats.add(idx, sph_adv)
            step_stats.add(idx, cand_adv)
            done_steps = step
            if step % UPDATE_EVERY == 0:
                _adapt(spherical, source, sph_stats, step_stats, step_adaptation, active)
    except STOP_ERRORS as exc:
        counter.stop(exc)
    min_distance = torch.where(found, threat.distance(best, x), torch.full_like(found, float("inf"), dtype=x.dtype))
    return counter.output(best, found, steps=done_steps, found_start=found.detach(), min_distance=min_distance)


def _adapt(
    spherical: torch.Tensor,
    source: torch.Tensor,
    sph: _RingStats,
    step: _RingStats,
    factor: float,
    active: torch.Tensor,
) -> None:
    """Step-size adaptation of Brendel et al.: keep ~50% of orthogonal steps and ~20-50% of full steps adversarial."""
    full = sph.full() & active
    rate = sph.rate()
    up = full & (rate > HIGH_RATE)
    down = full & (rate < LOW_RATE)
    spherical[up] *= factor
    source[up] *= factor
    spherical[down] /= factor
    source[down] /= factor
    sph.clear(up | down)
    full = step.full() & active
    rate = step.rate()
    up = full & (rate > HIGH_RATE)
    down = full & (rate < LOW_RATE)
    source[up] *= factor
    source[down] /= factor
    step.clear(up | down)


@register_attack(
    "Boundary",
    norms=("l2",),
    needs_gradients=False,
    needs_scores=False,
    stochastic=True,
    query_based=True,
    minimum_norm=True,
    paper="Brendel et al. 2018, arXiv:1712.04248",
)
def boundary(
    model: nn.Module | Oracle,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 5000,
    spherical_step: PositiveFloat = 1e-2,
    source_step: Annotated[float, Range(0, 1, strict_min=True)] = 1e-2,
    step_adaptation: Annotated[float, Range(1)] = 1.5,
    max_queries: MaxQueries = None,
    init_attempts: NonNegativeInt = 100,
    starting_points: Annotated[Any, NotASetting()] = None,
    generator: Randomness = None,
) -> AttackResult:
    """Boundary Attack: start from an adversarial point and walk along the boundary toward ``x`` (labels only).

    Starting points are ``starting_points`` when given, otherwise (targeted) the closest example of the batch
    already classified as the target, otherwise uniform noise in the box that is adversarial; a binary search
    on the segment to ``x`` then moves the start onto the boundary (as in Foolbox's reference implementation).
    Each step draws a Gaussian perturbation orthogonal to the direction of ``x``, scaled to
    ``spherical_step`` times the current distance and projected back onto the sphere around ``x`` (the
    orthogonal step), then moves ``source_step`` times the distance toward ``x`` (the source step); the
    candidate is kept when it is adversarial. Every ``UPDATE_EVERY`` steps both step sizes grow by
    ``step_adaptation`` when more than 50% of recent orthogonal steps stayed adversarial and shrink when fewer
    than 20% did; the source step alone is adapted on the success rate of full steps. Each step costs two
    queries (orthogonal point and candidate). A minimum-norm attack: it returns the smallest adversarial
    perturbation found, which the framework then projects onto the threat model's eps.

    Args:
        model: a module, a ``Classifier``, or an :class:`~advlab.blackbox.Oracle` (labels or scores mode).
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels ``(N,)``.
        threat: an ``l2`` threat model.
        goal: ``None`` (untargeted) or ``Targeted(target)``.
        steps: steps of the random walk (5000).
        spherical_step: initial orthogonal step, relative to the current distance to the input (0.01).
        source_step: initial step toward ``x``, relative to the current distance (0.01).
        step_adaptation: factor by which step sizes grow or shrink (1.5).
        max_queries: per-example cap on queries, framework's clean and final checks included.
        init_attempts: uniform-noise draws per example when looking for an adversarial start (100).
        starting_points: optional adversarial starting points, shape of ``x``.
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
        Brendel et al., "Decision-Based Adversarial Attacks: Reliable Attacks Against Black-Box Machine
        Learning Models", arXiv:1712.04248.

    Examples:
        >>> result = boundary(TorchOracle(model, mode="labels"), x, y, ThreatModel("l2", 100.0), steps=5000)
        >>> result.distance.median()  # minimal L2 perturbations found
    """
    return run_query_attack(
        _core, model, x, y, threat, goal=goal, name="boundary", max_queries=max_queries, need_scores=False,
        steps=steps, spherical_step=spherical_step, source_step=source_step, step_adaptation=step_adaptation,
        init_attempts=init_attempts, starting_points_=check_starting_points(starting_points, x, threat),
        generator=as_rng(generator),
    )  # fmt: skip


Boundary = boundary.config
