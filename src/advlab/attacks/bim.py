"""Basic Iterative Method / I-FGSM and Iterative Least-Likely Class (Kurakin, Goodfellow & Bengio 2016)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.iterative import iterate
from advlab.attacks.registry import ALL_NORMS, Alias, AttackConfig, make_attack, register_attack
from advlab.goals import Goal, LeastLikely
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.settings import PositiveFloat, PositiveInt
from advlab.threat import ThreatModel

PIXEL_LEVELS = 255
"""The paper works in pixel units of an 8-bit image: alpha = 1 level, eps in levels."""


NON_LINF_STEPS = 10
"""For l2/l1 (where "one pixel level per step" means nothing) BIM takes 10 steps of ``1.25 * eps / 10``,
keeping the paper's ratio of total path length to eps (``alpha * steps ≈ 1.25 eps``)."""


def paper_defaults(threat: ThreatModel) -> tuple[int, float]:
    """Kurakin et al.'s settings: step alpha = 1 pixel level, ``min(eps + 4, 1.25 eps)`` iterations (eps in levels).

    The rule is defined for linf on a finite box; for other norms and unbounded inputs (where a pixel level means
    nothing) see :data:`NON_LINF_STEPS`.
    """
    if threat.norm != "linf" or not threat.bounded:
        return NON_LINF_STEPS, 1.25 * threat.eps / NON_LINF_STEPS
    width = threat.box[1] - threat.box[0]
    eps_levels = threat.eps / width * PIXEL_LEVELS
    steps = max(1, math.ceil(min(eps_levels + 4, 1.25 * eps_levels)))
    return steps, width / PIXEL_LEVELS


def _core(model, x, labels, targeted, threat, *, steps, step_size, loss_fn) -> AttackOutput:
    default_steps, default_size = paper_defaults(threat)  # the threat model has the model's bounds here
    steps = default_steps if steps is None else steps
    step_size = default_size if step_size is None else step_size
    run = iterate(model, x, x, labels, targeted, threat, steps=steps, step_size=step_size, loss_fn=loss_fn, name="bim")
    return AttackOutput(run.x_adv, loss_trace=run.trace, evaluated=run.evaluated)


@register_attack(
    "BIM",
    norms=ALL_NORMS,
    paper="Kurakin et al. 2016, arXiv:1607.02533",
    aliases={
        "illc": Alias("bim", goal=LeastLikely(), doc="Iterative Least-Likely Class: BIM toward the least-likely class")
    },
)
def bim(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt | None = None,
    step_size: PositiveFloat | None = None,
    loss: LossSetting = "ce",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """Iterated FGSM from the clean input, clipping to the eps-ball and the box after every step.

    With ``goal=LeastLikely()`` this is the Iterative Least-Likely Class method (:func:`illc`, the ``"illc"``
    alias).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm, eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations; default ``min(eps + 4, 1.25 eps)`` with eps in pixel levels (the paper's rule,
            linf); 10 for l2/l1 and for unbounded inputs.
        step_size: default one pixel level, ``(high - low) / 255`` (linf); ``1.25 * eps / 10`` for l2/l1 and for
            unbounded inputs.
        loss: loss to ascend.
        generator: unused (deterministic); accepted for a uniform interface.

    Returns:
        AttackResult.

    Raises:
        ValueError: bad settings or input.

    References:
        Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", arXiv:1607.02533.

    Examples:
        >>> result = bim(model, x, y, ThreatModel("linf", 8 / 255))   # 10 steps of 1/255
    """
    return run_attack(_core, model, x, y, threat, goal=goal, steps=steps, step_size=step_size, loss_fn=get_loss(loss))


BIM = bim.config


def illc(model: nn.Module, x: Any, y: Any, threat: ThreatModel, **settings: Any) -> AttackResult:
    """Iterative Least-Likely Class: :func:`bim` with ``goal=LeastLikely()``, the class the model finds least
    likely on clean ``x``; success means the prediction equals that class. Takes :func:`bim`'s settings.

    References:
        Kurakin, Goodfellow & Bengio, arXiv:1607.02533, section 2.3.

    Examples:
        >>> result = illc(model, x, y, ThreatModel("linf", 16 / 255))
    """
    if settings.get("goal") is not None:
        raise ValueError("goal: ILLC always targets the least-likely class; use bim() for other goals")
    settings.pop("goal", None)
    return bim(model, x, y, threat, goal=LeastLikely(), **settings)


def ILLC(**settings: Any) -> AttackConfig:
    """Deprecated: the config of the ``"illc"`` alias is ``make_attack("illc")`` (BIM with ``goal=LeastLikely()``)."""
    validation.warn("ILLC() is deprecated; use make_attack('illc') (BIM with goal=LeastLikely())", FutureWarning)
    return make_attack("illc", **settings)
