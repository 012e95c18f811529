"""Variance tuning (Wang & He 2021): VMI-FGSM and VNI-FGSM, each gradient corrected by the last step's variance."""

from __future__ import annotations

from typing import Any

from torch import nn

from advlab.attacks.base import Randomness, run_attack
from advlab.attacks.registry import register_attack
from advlab.attacks.transfer import Boosts, default_step_size, transfer_core
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import as_rng
from advlab.settings import NonNegativeFloat, NonNegativeInt, PositiveInt
from advlab.threat import ThreatModel

PAPER = "Wang & He 2021, arXiv:2103.15571"


def _run(model, x, y, threat, goal, *, steps, step_size, momentum, samples, beta, loss, generator, nesterov, name):
    return run_attack(
        transfer_core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, loss_fn=get_loss(loss),
        boosts=Boosts(samples=samples, beta=beta, nesterov=nesterov), generator=as_rng(generator), name=name,
    )  # fmt: skip


@register_attack("VMIFGSM", norms=("linf",), stochastic=True, paper=PAPER)
def vmifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    samples: NonNegativeInt = 20,
    beta: NonNegativeFloat = 1.5,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """MI-FGSM whose gradient at step t is ``grad(x_t) + v_t``, ``v_t`` the last iterate's gradient variance.

    ``v_{t+1} = mean_k grad(x_t + r_k) - grad(x_t)`` with ``r_k`` uniform in the linf ball of radius
    ``beta * eps``: the gradient is steadied by its neighbourhood, so the attack escapes the source model's sharp
    local features and transfers better. Costs ``samples`` extra forward and backward passes per step (in one
    batch). ``samples=0`` is MI-FGSM exactly.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: linf threat model.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (the paper's 10).
        step_size: default ``eps / steps`` (the paper's).
        momentum: decay factor mu of the accumulated gradient (the paper's 1.0).
        samples: neighbours N sampled per step (the paper's 20; torchattacks uses 5).
        beta: the neighbourhood's radius in units of eps (the paper's 1.5).
        loss: loss to ascend.
        generator: ``torch.Generator`` or int seed (default seed 0), or an :class:`~advlab.rng.ExampleRNG` (each
            example's neighbours from its own stream).

    Returns:
        AttackResult.

    Raises:
        ValueError: bad settings or input.

    References:
        Wang & He, "Enhancing the Transferability of Adversarial Attacks through Variance Tuning", CVPR 2021,
        arXiv:2103.15571.

    Examples:
        >>> result = vmifgsm(model, x, y, ThreatModel("linf", 16 / 255), samples=20, beta=1.5)
    """
    return _run(
        model, x, y, threat, goal, steps=steps, step_size=step_size, momentum=momentum, samples=samples, beta=beta,
        loss=loss, generator=generator, nesterov=False, name="vmifgsm",
    )  # fmt: skip


VMIFGSM = vmifgsm.config


@register_attack("VNIFGSM", norms=("linf",), stochastic=True, paper=PAPER)
def vnifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    samples: NonNegativeInt = 20,
    beta: NonNegativeFloat = 1.5,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """VMI-FGSM with NI-FGSM's Nesterov lookahead: the gradient at ``x + step_size * mu * g``, tuned by the variance.

    The variance is drawn around the iterate itself (the paper's Algorithm 1 and its code). ``samples=0`` is
    :func:`~advlab.attacks.nifgsm.nifgsm` exactly.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: linf threat model.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (the paper's 10).
        step_size: default ``eps / steps`` (the paper's).
        momentum: decay factor mu of the accumulated gradient and of the lookahead (the paper's 1.0).
        samples: neighbours N sampled per step (the paper's 20; torchattacks uses 5).
        beta: the neighbourhood's radius in units of eps (the paper's 1.5).
        loss: loss to ascend.
        generator: ``torch.Generator`` or int seed (default seed 0), or an :class:`~advlab.rng.ExampleRNG`.

    Returns:
        AttackResult.

    Raises:
        ValueError: bad settings or input.

    References:
        Wang & He, "Enhancing the Transferability of Adversarial Attacks through Variance Tuning", CVPR 2021,
        arXiv:2103.15571.

    Examples:
        >>> result = vnifgsm(model, x, y, ThreatModel("linf", 16 / 255))
    """
    return _run(
        model, x, y, threat, goal, steps=steps, step_size=step_size, momentum=momentum, samples=samples, beta=beta,
        loss=loss, generator=generator, nesterov=True, name="vnifgsm",
    )  # fmt: skip


VNIFGSM = vnifgsm.config
