"""Input diversity (Xie et al. 2019): M-DI²-FGSM, the gradient taken through a random resize-and-pad of the input."""

from __future__ import annotations

from typing import Any

from torch import nn

from advlab.attacks.base import Randomness, run_attack
from advlab.attacks.registry import register_attack
from advlab.attacks.transfer import Boosts, ResizeRate, default_step_size, transfer_core
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import as_rng
from advlab.settings import Fraction, NonNegativeFloat, PositiveInt
from advlab.threat import ThreatModel


@register_attack(
    "DIFGSM", norms=("linf", "l2"), stochastic=True, paper="Xie et al. 2019, arXiv:1803.06978", name="difgsm"
)
def difgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    diversity_prob: Fraction = 0.5,
    resize_rate: ResizeRate = 0.9,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """MI-FGSM whose every gradient is taken through a random resize-and-pad of the input (input diversity).

    With probability ``diversity_prob`` an example's input is resized (bilinear) to a side drawn uniformly from
    ``[int(side * resize_rate), side)`` and zero-padded back to its size at a random place, so the model sees it
    at its usual size. The attack then fits many slightly different views at once instead of the source model's
    exact pixels, which makes the examples transfer. ``momentum=1`` (the default) is the paper's M-DI²-FGSM, its
    strongest attack; ``momentum=0`` is DI²-FGSM; ``diversity_prob=0`` is MI-FGSM exactly.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``; images ``(N, C, H, W)``.
        x: inputs inside ``threat.bounds``, shape ``(N, C, H, W)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (10, as MI-FGSM; the paper takes ``min(eps + 4, 1.25 eps)`` steps of one pixel level).
        step_size: default ``eps / steps``.
        momentum: decay factor mu of the accumulated gradient (1.0: M-DI²-FGSM; 0: DI²-FGSM).
        diversity_prob: probability p of transforming an example's input at each step (the paper's 0.5).
        resize_rate: smallest resized side as a fraction of the side (0.9). The paper enlarges 299-pixel ImageNet
            images to ``[299, 330)`` and pads to 330 for a network that takes any size; a network with a fixed input
            size needs the resized image smaller than the input, as torchattacks' ``resize_rate=0.9`` does.
        loss: loss to ascend.
        generator: ``torch.Generator`` or int seed (default seed 0), or an :class:`~advlab.rng.ExampleRNG` (each
            example's transforms from its own stream).

    Returns:
        AttackResult.

    Raises:
        ValueError: inputs that are not images while ``diversity_prob > 0``, bad settings or input.

    References:
        Xie et al., "Improving Transferability of Adversarial Examples with Input Diversity", CVPR 2019,
        arXiv:1803.06978.

    Examples:
        >>> result = difgsm(model, x, y, ThreatModel("linf", 16 / 255), diversity_prob=0.5)
    """
    boosts = Boosts(diversity_prob=diversity_prob, resize_rate=resize_rate)
    return run_attack(
        transfer_core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, loss_fn=get_loss(loss),
        boosts=boosts, generator=as_rng(generator), name="difgsm",
    )  # fmt: skip


DIFGSM = difgsm.config
