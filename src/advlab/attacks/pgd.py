"""Projected gradient descent (Madry et al. 2018) for linf, l2 and l1, with random start and restarts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks._iterative import best_of_restarts, iterate
from advlab.attacks.base import ATTACKS, AttackConfig, AttackOutput, make_generator, run_attack
from advlab.goals import Goal
from advlab.losses import LossFn, get_loss
from advlab.result import AttackResult
from advlab.threat import ThreatModel

DEFAULT_STEPS = 40
"""Madry et al. use 40 steps on MNIST."""
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
    generator: torch.Generator,
) -> AttackOutput:
    def run_once(idx: torch.Tensor):
        xs = x[idx]
        x0 = threat.random_start(xs, generator) if random_start else xs
        return iterate(
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

    x_adv, trace = best_of_restarts(run_once, x, restarts if random_start else 1)
    return AttackOutput(x_adv, loss_trace=trace)


def pgd(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    loss: str | LossFn = "ce",
    generator: torch.Generator | int | None = None,
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
        steps: iterations per restart (default 40).
        step_size: step length in the threat norm; default ``2.5 * eps / steps``.
        restarts: number of random restarts (needs ``random_start``).
        random_start: start from a uniform point of the ball (Madry et al.) instead of ``x``.
        loss: ``"ce"``, ``"margin"``, ``"dlr"`` or a callable ``(logits, labels, targeted) -> (N,)``.
        generator: ``torch.Generator`` or int seed for the random starts (default seed 0).

    Returns:
        AttackResult with ``x_adv``, ``success``, ``distance`` and the first restart's ``loss_trace``.

    Raises:
        ValueError: on eps < 0, an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083.

    Example:
        >>> threat = ThreatModel("linf", 0.3)
        >>> result = pgd(model, x, y, threat, steps=40, restarts=10)
        >>> robust_accuracy = 1 - result.success.float().mean()
    """
    validation.check_threat_model(threat)
    steps = validation.check_int("steps", steps, minimum=1)
    restarts = validation.check_int("restarts", restarts, minimum=1)
    if step_size is None:
        step_size = STEP_SIZE_FACTOR * threat.eps / steps
    step_size = validation.check_float("step_size", step_size, minimum=0.0, strict_min=True) if threat.eps > 0 else 0.0
    return run_attack(
        _core,
        model,
        x,
        y,
        threat,
        goal=goal,
        name="pgd",
        norms=PGD.norms,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
        random_start=bool(random_start),
        loss_fn=get_loss(loss),
        generator=make_generator(generator),
    )


@ATTACKS.register("pgd")
@dataclass(frozen=True)
class PGD(AttackConfig):
    """Config for :func:`pgd` (Madry et al. 2018, arXiv:1706.06083)."""

    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"

    name = "pgd"
    norms = ("linf", "l2", "l1")
    stochastic = True
    paper = "Madry et al. 2018, arXiv:1706.06083"

    def run(self, model, x, y, threat, *, goal=None, generator=None) -> AttackResult:
        return pgd(model, x, y, threat, goal=goal, generator=generator, **self.settings())
