"""Projected gradient descent (Madry et al. 2018) for linf, l2 and l1, with random start and restarts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, Randomness, run_attack
from advlab.attacks.iterative import Iterate, best_of_restarts, iterate
from advlab.attacks.registry import ALL_NORMS, register_attack
from advlab.goals import Goal
from advlab.losses import LossFn, LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import RNG, as_rng
from advlab.settings import PositiveFloat, PositiveInt
from advlab.threat import ThreatModel

STEP_SIZE_FACTOR = 2.5
"""Default step size is ``2.5 * eps / steps`` (Madry et al. 2018, appendix), enough to reach the boundary."""


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    restarts: int,
    random_start: bool,
    loss_fn: LossFn,
    generator: RNG,
) -> AttackOutput:
    runs: list[Iterate] = []

    def run_once(idx: torch.Tensor) -> Iterate:
        xs = x[idx]
        x0 = threat.random_start(xs, generator.rows(idx)) if random_start else xs
        runs.append(
            iterate(
                model,
                xs,
                x0,
                labels[idx],
                targeted,
                threat,
                steps=steps,
                step_size=step_size,
                loss_fn=loss_fn,
                name="pgd",
            )
        )
        return runs[-1]

    x_adv, trace = best_of_restarts(run_once, x, restarts)
    # The first restart ran on every example; its last forward is the success check when nothing came after it.
    return AttackOutput(x_adv, loss_trace=trace, evaluated=runs[0].evaluated if len(runs) == 1 else None)


@register_attack("PGD", norms=ALL_NORMS, stochastic=True, paper="Madry et al. 2018, arXiv:1706.06083")
def pgd(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 40,
    step_size: PositiveFloat | None = None,
    restarts: PositiveInt = 1,
    random_start: bool = True,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """Projected gradient descent on the loss, from a random point in the ball, best of ``restarts``.

    Each step moves ``step_size`` along the threat model's steepest-ascent direction (sign of the gradient
    for linf, normalised gradient for l2, sparse L1 direction of Tramèr & Boneh 2019 for l1) and projects back
    onto the ball and box. Restarts run only on examples not yet fooled; per example the first successful
    restart is kept, otherwise the one with the highest loss.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm, eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations per restart (40, Madry et al.'s MNIST setting).
        step_size: step length in the threat norm; default ``2.5 * eps / steps``.
        restarts: number of random restarts (needs ``random_start``).
        random_start: start from a uniform point of the ball (Madry et al.) instead of ``x``.
        loss: ``"ce"``, ``"margin"``, ``"dlr"`` or a callable ``(logits, labels, targeted) -> (N,)``.
        generator: ``torch.Generator`` or int seed for the random starts (default seed 0), or an
            :class:`~advlab.rng.ExampleRNG` (each example's starts from its own stream).

    Returns:
        AttackResult with ``x_adv``, ``success``, ``distance`` and the first restart's ``loss_trace``.

    Raises:
        ValueError: on eps < 0, an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083.

    Examples:
        >>> threat = ThreatModel("linf", 0.3)
        >>> result = pgd(model, x, y, threat, steps=40, restarts=10)
        >>> robust_accuracy = 1 - result.success.float().mean()
    """
    if step_size is None:
        step_size = STEP_SIZE_FACTOR * threat.eps / steps
    return run_attack(
        _core, model, x, y, threat, goal=goal, steps=steps, step_size=step_size,
        restarts=restarts if random_start else 1, random_start=random_start, loss_fn=get_loss(loss),
        generator=as_rng(generator),
    )  # fmt: skip


PGD = pgd.config
