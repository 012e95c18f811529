"""Fast gradient sign method (Goodfellow et al. 2014) and its L2/L1 forms, the fast gradient method."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, loss_and_grad, run_attack, warn_once_zero_grad
from advlab.attacks.registry import ALL_NORMS, register_attack
from advlab.goals import Goal
from advlab.losses import LossFn, LossSetting, get_loss
from advlab.result import AttackResult
from advlab.threat import ThreatModel


def fast_gradient_step(
    model: nn.Module,
    x_start: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    size: float,
    loss_fn: LossFn,
    name: str,
) -> torch.Tensor:
    """One step of length ``size`` from ``x_start`` along the threat norm's steepest-ascent direction."""
    _, grad, _ = loss_and_grad(model, x_start, labels, targeted, loss_fn)
    warn_once_zero_grad(grad, name)
    return x_start + size * threat.ascent_direction(grad, x_start)


def _core(model, x, labels, targeted, threat, *, loss_fn) -> AttackOutput:
    return AttackOutput(fast_gradient_step(model, x, labels, targeted, threat, threat.eps, loss_fn, "fgsm"))


@register_attack("FGSM", norms=ALL_NORMS, paper="Goodfellow et al. 2014, arXiv:1412.6572")
def fgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    loss: LossSetting = "ce",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """One step of size eps along the gradient's steepest-ascent direction for the threat norm.

    ``x_adv = x + eps * sign(grad)`` for linf (FGSM), ``x + eps * grad / |grad|_2`` for l2 (the fast gradient
    method), and the sparse L1 direction for l1. For targeted goals the step descends the loss toward the
    target (Kurakin et al. 2016's "step l.l." when the goal is ``LeastLikely()``).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm, eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        loss: loss to ascend (``"ce"`` in the paper).
        generator: unused (FGSM is deterministic); accepted for a uniform interface.

    Returns:
        AttackResult.

    Raises:
        ValueError: on bad input (see :mod:`advlab.validation`).

    References:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", arXiv:1412.6572.

    Examples:
        >>> result = fgsm(model, x, y, ThreatModel("linf", 0.1))
        >>> result.success.float().mean()
    """
    return run_attack(_core, model, x, y, threat, goal=goal, loss_fn=get_loss(loss))


FGSM = fgsm.config
