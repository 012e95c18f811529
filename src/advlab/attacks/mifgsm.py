"""Momentum iterative FGSM (Dong et al. 2018), the NIPS 2017 competition winner for transferable attacks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.iterative import iterate
from advlab.attacks.registry import register_attack
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.settings import NonNegativeFloat, PositiveInt
from advlab.threat import ThreatModel


def _core(model, x, labels, targeted, threat, *, steps, step_size, momentum, loss_fn) -> AttackOutput:
    run = iterate(
        model,
        x,
        x,
        labels,
        targeted,
        threat,
        steps=steps,
        step_size=step_size,
        loss_fn=loss_fn,
        momentum=momentum,
        name="mifgsm",
    )
    return AttackOutput(run.x_adv, loss_trace=run.trace, evaluated=run.evaluated)


@register_attack(
    "MIFGSM", norms=("linf", "l2"), paper="Dong et al. 2018, arXiv:1710.06081", renamed={"decay": "momentum"}
)
def mifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    loss: LossSetting = "ce",
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
        steps: iterations T (the paper's 10).
        step_size: default ``eps / steps``.
        momentum: the decay factor mu of the accumulated gradient (the paper's 1.0); 0 gives BIM with
            L1-normalised gradients. Called ``decay`` before advlab 0.2.
        loss: loss to ascend.
        generator: unused (deterministic).

    Returns:
        AttackResult.

    Raises:
        ValueError: momentum < 0, bad settings or input.

    References:
        Dong et al., "Boosting Adversarial Attacks with Momentum", arXiv:1710.06081.

    Examples:
        >>> result = mifgsm(model, x, y, ThreatModel("linf", 16 / 255), steps=10, momentum=1.0)
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, steps=steps,
        step_size=threat.eps / steps if step_size is None else step_size, momentum=momentum, loss_fn=get_loss(loss),
    )  # fmt: skip


MIFGSM = mifgsm.config
