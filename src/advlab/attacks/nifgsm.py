"""Nesterov lookahead and scale invariance (Lin et al. 2020): NI-FGSM and SI-NI-FGSM."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import run_attack
from advlab.attacks.registry import register_attack
from advlab.attacks.transfer import Boosts, default_step_size, transfer_core
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import as_rng
from advlab.settings import NonNegativeFloat, PositiveInt
from advlab.threat import ThreatModel

PAPER = "Lin et al. 2020, arXiv:1908.06281"


@register_attack("NIFGSM", norms=("linf", "l2"), paper=PAPER)
def nifgsm(
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
    """MI-FGSM whose gradient is taken at the Nesterov lookahead point ``x + step_size * mu * g``.

    Looking ahead along the accumulated direction before taking the gradient lets the attack step over poor
    local maxima sooner, which improves transfer at the same number of steps. ``g`` is the momentum in the paper
    code's units (mean-abs-normalised gradients; see :meth:`~advlab.attacks.transfer.TransferGradient.lookahead`
    for l2). ``momentum=0`` removes the lookahead and is MI-FGSM with ``momentum=0`` exactly.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (the paper's 10).
        step_size: default ``eps / steps`` (the paper's).
        momentum: decay factor mu of the accumulated gradient and of the lookahead (the paper's 1.0).
        loss: loss to ascend.
        generator: unused (deterministic).

    Returns:
        AttackResult.

    Raises:
        ValueError: bad settings or input.

    References:
        Lin, Song, He, Wang & Hopcroft, "Nesterov Accelerated Gradient and Scale Invariance for Adversarial
        Attacks", ICLR 2020, arXiv:1908.06281.

    Examples:
        >>> result = nifgsm(model, x, y, ThreatModel("linf", 16 / 255))
    """
    return run_attack(
        transfer_core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, loss_fn=get_loss(loss),
        boosts=Boosts(nesterov=True), generator=as_rng(generator), name="nifgsm",
    )  # fmt: skip


NIFGSM = nifgsm.config


@register_attack("SINIFGSM", norms=("linf", "l2"), paper=PAPER)
def sinifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    scales: PositiveInt = 5,
    nesterov: bool = True,
    loss: LossSetting = "ce",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """NI-FGSM whose gradient is the mean over the scaled copies ``x / 2^i``, ``i < scales`` (SI-NI-FGSM).

    A network's loss is nearly the same on an image and on the image scaled down (darker, for inputs in [0, 1]):
    averaging the gradient over these copies is an augmentation of the source model that costs no training and
    makes the examples transfer. ``nesterov=False`` gives SI-FGSM on MI-FGSM (the paper's SI-MI); ``scales=1`` is
    NI-FGSM (or MI-FGSM without the lookahead). The copies scale the raw input, as the paper and torchattacks do;
    each costs one forward and backward pass per step (all copies go through the model in one batch).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (the paper's 10).
        step_size: default ``eps / steps`` (the paper's).
        momentum: decay factor mu of the accumulated gradient (the paper's 1.0).
        scales: number of scale copies m (the paper's 5).
        nesterov: take the gradient at NI-FGSM's lookahead point (SI-NI-FGSM, the paper's); ``False`` for SI-MI.
        loss: loss to ascend.
        generator: unused (deterministic).

    Returns:
        AttackResult.

    Raises:
        ValueError: bad settings or input.

    References:
        Lin, Song, He, Wang & Hopcroft, "Nesterov Accelerated Gradient and Scale Invariance for Adversarial
        Attacks", ICLR 2020, arXiv:1908.06281.

    Examples:
        >>> result = sinifgsm(model, x, y, ThreatModel("linf", 16 / 255), scales=5)
    """
    return run_attack(
        transfer_core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, loss_fn=get_loss(loss),
        boosts=Boosts(scales=scales, nesterov=nesterov), generator=as_rng(generator), name="sinifgsm",
    )  # fmt: skip


SINIFGSM = sinifgsm.config
