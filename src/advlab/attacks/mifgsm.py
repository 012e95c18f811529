"""Momentum iterative FGSM (Dong et al. 2018), the NIPS 2017 competition winner for transferable attacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks._iterative import iterate
from advlab.attacks.base import ATTACKS, AttackConfig, AttackOutput, run_attack
from advlab.goals import Goal
from advlab.losses import LossFn, get_loss
from advlab.result import AttackResult
from advlab.threat import ThreatModel

DEFAULT_STEPS = 10
DEFAULT_DECAY = 1.0
"""The paper's T = 10 iterations, step eps / T, decay factor mu = 1.0."""


def _core(model, x, labels, targeted, threat, *, steps, step_size, decay, loss_fn) -> AttackOutput:
    x_adv, _, _, trace = iterate(
        model,
        x,
        x,
        labels,
        targeted,
        threat,
        steps=steps,
        step_size=step_size,
        loss_fn=loss_fn,
        momentum=decay,
        name="mifgsm",
    )
    return AttackOutput(x_adv, loss_trace=trace)


def mifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    decay: float = DEFAULT_DECAY,
    loss: str | LossFn = "ce",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """Iterative gradient attack with momentum: ``g = mu g + grad / |grad|_1``, step along ``g``.

    The accumulated direction stabilises updates and escapes poor local maxima, which makes the examples
    transfer better to other models than BIM's.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm, eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (default 10).
        step_size: default ``eps / steps``.
        decay: momentum decay factor mu (default 1.0); 0 gives BIM with L1-normalised gradients.
        loss: loss to ascend.
        generator: unused (deterministic).

    Returns:
        AttackResult.

    Raises:
        ValueError: decay < 0, bad settings or input.

    References:
        Dong et al., "Boosting Adversarial Attacks with Momentum", arXiv:1710.06081.

    Example:
        >>> result = mifgsm(model, x, y, ThreatModel("linf", 16 / 255), steps=10, decay=1.0)
    """
    validation.check_threat_model(threat)
    steps = validation.check_int("steps", steps, minimum=1)
    decay = validation.check_float("decay", decay, minimum=0.0)
    if step_size is None:
        step_size = threat.eps / steps
    step_size = validation.check_float("step_size", step_size, minimum=0.0)
    return run_attack(
        _core,
        model,
        x,
        y,
        threat,
        goal=goal,
        name="mifgsm",
        norms=MIFGSM.norms,
        steps=steps,
        step_size=step_size,
        decay=decay,
        loss_fn=get_loss(loss),
    )


@ATTACKS.register("mifgsm")
@dataclass(frozen=True)
class MIFGSM(AttackConfig):
    """Config for :func:`mifgsm` (Dong et al. 2018, arXiv:1710.06081)."""

    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    decay: float = DEFAULT_DECAY
    loss: str = "ce"

    name = "mifgsm"
    norms = ("linf", "l2")
    paper = "Dong et al. 2018, arXiv:1710.06081"

    def run(self, model, x, y, threat, *, goal=None, generator=None) -> AttackResult:
        return mifgsm(model, x, y, threat, goal=goal, **self.settings())
