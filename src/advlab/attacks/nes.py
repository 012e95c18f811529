"""NES (Ilyas et al. 2018): query-limited attack with antithetic Gaussian gradient estimates and PGD steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks._query import STOP_ERRORS, MaxQueries, QueryCounter, ScoreSearch, run_query_attack
from advlab.attacks.base import AttackOutput, Randomness, draw_per_row
from advlab.attacks.registry import register_attack
from advlab.devices import to_device
from advlab.goals import Goal
from advlab.losses import LossFn, LossSetting, get_loss
from advlab.oracles import Oracle
from advlab.result import AttackResult
from advlab.rng import RNG, ExampleRNG, as_rng
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from advlab.threat import ThreatModel

STEP_SIZE_FRACTION = 0.2
"""Default initial step size ``eps / 5`` (Ilyas et al.: 0.01 at eps 0.05)."""
MIN_STEP_FRACTION = 0.005
"""Default smallest step size after plateau drops: ``eps * MIN_STEP_FRACTION``."""
CHUNK_POINTS = 1 << 15
"""Largest number of sample points built at once (bounds memory for large images)."""


def nes_gradient(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    sigma: float,
    n_samples: int,
    generator: torch.Generator | RNG,
) -> torch.Tensor:
    """NES estimate of the gradient of ``f`` with antithetic Gaussian sampling.

    ``g = 1 / (n sigma) * sum_i [f(x + sigma u_i) - f(x - sigma u_i)] u_i`` over ``n / 2`` draws
    ``u_i ~ N(0, I)``. ``f(points, owner)`` maps ``(M, ...)`` points to ``(M,)`` values. At most
    :data:`CHUNK_POINTS` points are built at once: all rows and some of the draws from one stream for the batch, or
    all the draws of some rows from per-example streams (each row's draws then come from its own stream, one call
    per estimate).

    Args:
        f: batched function to differentiate.
        x: points, shape ``(N, ...)``.
        sigma: search standard deviation.
        n_samples: function evaluations per example (rounded down to an even number, at least 2).
        generator: source of the Gaussian draws: a ``torch.Generator`` or an RNG of :mod:`advlab.rng`.

    Returns:
        The estimate, shape ``(N, ...)``.

    References:
        Ilyas et al., "Black-box Adversarial Attacks with Limited Queries and Information", arXiv:1804.08598;
        Wierstra et al., "Natural Evolution Strategies", arXiv:1106.4487.
    """
    n, half = x.shape[0], max(1, n_samples // 2)
    rng = as_rng(generator)
    g = torch.zeros_like(x)
    if isinstance(rng, ExampleRNG):
        per_group = max(1, CHUNK_POINTS // (2 * half))
        for start in range(0, n, per_group):
            rows = torch.arange(start, min(start + per_group, n), device=x.device)
            u = draw_per_row(
                rng.rows(rows), (rows.numel(), half, *x.shape[1:]), "randn", dtype=x.dtype, device=x.device
            )
            g[rows] += _antithetic_sum(f, x[rows], rows, u, sigma)
        return g / (2 * half * sigma)
    per_chunk = max(1, CHUNK_POINTS // (2 * n))
    rows = torch.arange(n, device=x.device)
    for start in range(0, half, per_chunk):
        k = min(per_chunk, half - start)
        u = to_device(rng.randn((n, k, *x.shape[1:])), x.device, x.dtype)
        g += _antithetic_sum(f, x, rows, u, sigma)
    return g / (2 * half * sigma)


def _antithetic_sum(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    rows: torch.Tensor,
    u: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """``sum_i [f(x + sigma u_i) - f(x - sigma u_i)] u_i`` per row, for the draws ``u`` ``(R, k, ...)`` of ``rows``."""
    n, k = u.shape[0], u.shape[1]
    xe = x.unsqueeze(1)
    pts = torch.cat([xe + sigma * u, xe - sigma * u], dim=1).reshape(n * 2 * k, *x.shape[1:])
    owner = rows.repeat_interleave(2 * k)
    vals = f(pts, owner).reshape(n, 2 * k)
    diff = (vals[:, :k] - vals[:, k:]).reshape((n, k) + (1,) * (x.dim() - 1))
    return (diff * u).sum(1)


class _PlateauSchedule:
    """The authors' step-size schedule: no improvement of an example's loss over the last ``length`` steps
    divides its step size by ``drop`` (down to ``min_step_size``) and restarts its window."""

    def __init__(self, x: torch.Tensor, step_size: float, min_step_size: float, length: int, drop: float) -> None:
        self.lr = torch.full((x.shape[0],), step_size, device=x.device, dtype=x.dtype)
        self.min_step_size, self.length, self.drop = min_step_size, length, drop
        self.history: list[torch.Tensor] = []

    def observe(self, idx: torch.Tensor, loss: torch.Tensor) -> None:
        """Record the losses of the examples ``idx`` that stepped (the others' entry is NaN) and adapt."""
        current = torch.full_like(self.lr, float("nan"))
        current[idx] = loss.to(current.dtype)
        length = self.length
        self.history = self.history[-(length - 1) :] + [current] if length > 1 else [current]
        if len(self.history) >= length:
            old = self.history[-length]
            stalled = (current <= old) & ~torch.isnan(current) & ~torch.isnan(old)
            self.lr = torch.where(stalled, (self.lr / self.drop).clamp_min(self.min_step_size), self.lr)
            for h in self.history[-length:]:  # masked, not `if stalled.any():` (a host sync per step)
                h.masked_fill_(stalled, float("nan"))  # restart the window of the examples that decayed


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    min_step_size: float,
    sigma: float,
    n_samples: int,
    momentum: float,
    plateau_length: int,
    plateau_drop: float,
    loss_fn: LossFn,
    generator: RNG,
    counter: QueryCounter,
) -> AttackOutput:
    search = ScoreSearch(counter, x, labels, targeted, loss_fn)
    x_adv = x.clone()
    g_prev = torch.zeros_like(x)
    schedule = _PlateauSchedule(x, step_size, min_step_size, plateau_length, plateau_drop)
    per_step = 2 * max(1, n_samples // 2) + 1
    shape = (-1,) + (1,) * (x.dim() - 1)

    def f(points: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        # sample points stay in the box (the target refuses others); the estimate is unchanged inside it
        return search.loss(threat.clip_box(points), owner)

    try:
        for _ in range(steps):
            idx = (counter.can_afford(per_step) & ~search.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            grad = nes_gradient(
                lambda p, o: f(p, idx[o]),  # noqa: B023 - called within this iteration
                x_adv[idx],
                sigma=sigma,
                n_samples=n_samples,
                generator=generator.rows(idx),
            )
            g = momentum * g_prev[idx] + (1 - momentum) * grad
            g_prev[idx] = g
            x_new = threat.project(x_adv[idx] + schedule.lr[idx].view(shape) * threat.ascent_direction(g), x[idx])
            x_adv[idx] = x_new
            schedule.observe(idx, search.visit(x_new, idx))
    except STOP_ERRORS as exc:
        counter.stop(exc)
    return search.output()


@register_attack(
    "NES",
    norms=("linf", "l2"),
    needs_gradients=False,
    stochastic=True,
    query_based=True,
    paper="Ilyas et al. 2018, arXiv:1804.08598",
)
def nes(
    model: nn.Module | Oracle,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 100,
    step_size: NonNegativeFloat | None = None,
    min_step_size: NonNegativeFloat | None = None,
    sigma: PositiveFloat = 0.001,
    n_samples: Annotated[int, Range(2)] = 50,
    momentum: Annotated[float, Range(0, 1, strict_max=True)] = 0.9,
    plateau_length: PositiveInt = 5,
    plateau_drop: Annotated[float, Range(1)] = 2.0,
    loss: LossSetting = "ce",
    max_queries: MaxQueries = None,
    generator: Randomness = None,
) -> AttackResult:
    """NES attack of Ilyas et al. (query-limited setting): PGD on an antithetic Gaussian gradient estimate.

    Each step spends ``n_samples`` queries on ``g = 1/(n σ) Σ [f(x+σu) - f(x-σu)] u``, smooths it with
    momentum, takes a projected steepest-ascent step (sign for linf, normalised for l2) and spends one query on
    the new point. The step size is divided by ``plateau_drop`` when the loss has not improved over
    ``plateau_length`` steps (the authors' schedule), down to ``min_step_size``. Examples stop once adversarial
    or out of queries; an exhausted budget or an unreachable target stops the attack with the points found.

    Args:
        model: a module returning logits, a ``Classifier``, or an :class:`~advlab.blackbox.Oracle` in scores mode.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels ``(N,)``.
        threat: ``linf`` or ``l2`` threat model.
        goal: ``None`` (untargeted) or ``Targeted(target)``.
        steps: PGD steps (100).
        step_size: initial step length in the threat norm; default ``eps / 5`` (Ilyas et al.: 0.01 at eps 0.05).
        min_step_size: smallest step after plateau drops; default ``eps / 200``.
        sigma: search standard deviation (0.001 in the paper, for inputs in [0, 1]).
        n_samples: queries per gradient estimate ("samples per draw": 50 in the paper, 25 antithetic pairs).
        momentum: momentum on the estimate (0.9 in the authors' code; 0 for plain NES-PGD).
        plateau_length: steps without improvement before the step size drops (5).
        plateau_drop: factor of each drop (2).
        loss: ``"ce"`` (default: cross-entropy, i.e. the log-probability of the target when targeted),
            ``"margin"`` or a callable on log-probabilities.
        max_queries: per-example cap on queries, framework's clean and final checks included.
        generator: seed or ``torch.Generator`` for the Gaussian draws, or an :class:`~advlab.rng.ExampleRNG`
            (each example's draws from its own stream).

    Returns:
        AttackResult with ``queries`` per example and ``info["stopped"]``.

    Raises:
        ValueError: on bad settings, a labels-only oracle, or an unsupported norm.

    References:
        Ilyas et al., "Black-box Adversarial Attacks with Limited Queries and Information", arXiv:1804.08598.

    Examples:
        >>> result = nes(TorchOracle(model, budget=100_000), x, y, ThreatModel("linf", 0.05))
        >>> result.success.float().mean(), result.queries.median()
    """
    step_size = STEP_SIZE_FRACTION * threat.eps if step_size is None else step_size
    min_step_size = MIN_STEP_FRACTION * threat.eps if min_step_size is None else min_step_size
    return run_query_attack(
        _core, model, x, y, threat, goal=goal, name="nes", max_queries=max_queries, need_scores=True, steps=steps,
        step_size=step_size, min_step_size=min(min_step_size, step_size), sigma=sigma, n_samples=n_samples,
        momentum=momentum, plateau_length=plateau_length, plateau_drop=plateau_drop, loss_fn=get_loss(loss),
        generator=as_rng(generator),
    )  # fmt: skip


NES = nes.config
