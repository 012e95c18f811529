"""R+FGSM (Tramèr et al. 2018): a random step of size alpha, then a gradient step of size eps - alpha."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, Randomness, run_attack
from advlab.attacks.fgsm import fast_gradient_step
from advlab.attacks.registry import register_attack
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import RNG, as_rng
from advlab.settings import NonNegativeFloat
from advlab.threat import ThreatModel

DEFAULT_ALPHA_FRACTION = 0.5
"""Tramèr et al. use eps = 16/255 and alpha = 8/255, i.e. alpha = eps / 2."""


def _random_direction(x: torch.Tensor, threat: ThreatModel, rng: RNG) -> torch.Tensor:
    """A unit-norm random direction: sign of a Gaussian for linf (as in the paper), a uniform direction for l2."""
    gauss = rng.randn(x.shape, dtype=x.dtype).to(x.device)
    return threat.ascent_direction(gauss)


def _core(model, x, labels, targeted, threat, *, alpha, loss_fn, generator) -> AttackOutput:
    x_rand = threat.clip_box(x + alpha * _random_direction(x, threat, generator))
    x_adv = fast_gradient_step(model, x_rand, labels, targeted, threat, threat.eps - alpha, loss_fn, "rfgsm")
    return AttackOutput(x_adv)


@register_attack("RFGSM", norms=("linf", "l2"), stochastic=True, paper="Tramèr et al. 2018, arXiv:1705.07204")
def rfgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    alpha: NonNegativeFloat | None = None,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """R+FGSM: ``x' = x + alpha * sign(N(0, I))``, then ``x_adv = x' + (eps - alpha) * sign(grad at x')``.

    The random step escapes the sharp curvature near data points that makes single-step attacks weak on
    adversarially trained models. For l2 the random step is a uniform direction of length alpha.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        alpha: size of the random step, ``0 <= alpha < eps``; default ``eps / 2``.
        loss: loss to ascend.
        generator: ``torch.Generator`` or int seed (default seed 0), or an :class:`~advlab.rng.ExampleRNG`.

    Returns:
        AttackResult.

    Raises:
        ValueError: alpha outside ``[0, eps)`` or bad input.

    References:
        Tramèr et al., "Ensemble Adversarial Training: Attacks and Defenses", arXiv:1705.07204.

    Examples:
        >>> result = rfgsm(model, x, y, ThreatModel("linf", 16 / 255), alpha=8 / 255)
    """
    if alpha is None:
        alpha = DEFAULT_ALPHA_FRACTION * threat.eps
    if threat.eps > 0 and alpha >= threat.eps:
        raise ValueError(
            f"alpha: expected 0 <= alpha < eps = {threat.eps}, got {alpha}; the gradient step needs eps - alpha > 0"
        )
    return run_attack(
        _core, model, x, y, threat, goal=goal, alpha=alpha, loss_fn=get_loss(loss), generator=as_rng(generator)
    )


RFGSM = rfgsm.config
