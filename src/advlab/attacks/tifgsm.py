"""Translation invariance (Dong et al. 2019): the gradient convolved with a Gaussian kernel before each step."""

from __future__ import annotations

from typing import Any

from torch import nn

from advlab.attacks.base import Randomness, run_attack
from advlab.attacks.registry import register_attack
from advlab.attacks.transfer import Boosts, KernelSize, ResizeRate, default_step_size, transfer_core
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.rng import as_rng
from advlab.settings import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from advlab.threat import ThreatModel

IMAGENET_KERNEL_SIZE = 15
"""The paper's kernel side for 299-pixel ImageNet images (its code's ``kernlen``)."""

SMALL_IMAGE_KERNEL_SIZE = 5
"""The default for the small images advlab is mostly used with (28-pixel MNIST, 32-pixel CIFAR-10): a 15-pixel
kernel would smear the gradient over half a digit; 5 keeps about the paper's ratio of kernel to object size."""


@register_attack("TIFGSM", norms=("linf", "l2"), stochastic=True, paper="Dong et al. 2019, arXiv:1904.02884")
def tifgsm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 1.0,
    kernel_size: KernelSize = SMALL_IMAGE_KERNEL_SIZE,
    kernel_sigmas: PositiveFloat = 3.0,
    diversity_prob: Fraction = 0.5,
    resize_rate: ResizeRate = 0.9,
    loss: LossSetting = "ce",
    generator: Randomness = None,
) -> AttackResult:
    """MI-FGSM with input diversity whose gradient is smoothed by a Gaussian kernel (the paper's TI-DIM).

    Convolving the gradient with a kernel ``W`` is the gradient of the loss averaged over translated copies of the
    input weighted by ``W``: the examples stop relying on the source model's exact spatial positions, which
    defended and other models do not share. The defaults are the paper's strongest combination, TI-DIM (momentum 1,
    input diversity with p = 0.5); ``diversity_prob=0`` gives TI-MI-FGSM, ``momentum=0`` as well TI-FGSM, and
    ``kernel_size=1`` removes the smoothing (MI-FGSM exactly with ``diversity_prob=0``).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``; images ``(N, C, H, W)``.
        x: inputs inside ``threat.bounds``, shape ``(N, C, H, W)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations T (10, the paper's).
        step_size: default ``eps / steps``.
        momentum: decay factor mu of the accumulated gradient (1.0; 0 without momentum).
        kernel_size: odd side of the Gaussian kernel; 5 suits 28-32 pixel images, the paper uses 15 on 299-pixel
            ImageNet images; 1 is no smoothing.
        kernel_sigmas: the kernel's profile is the normal density on ``[-kernel_sigmas, kernel_sigmas]`` (3, the
            paper's code).
        diversity_prob: probability of input diversity at each step (0.5, TI-DIM; 0 for TI-MI-FGSM).
        resize_rate: smallest resized side of input diversity as a fraction of the side (0.9).
        loss: loss to ascend.
        generator: ``torch.Generator`` or int seed (default seed 0), or an :class:`~advlab.rng.ExampleRNG`.

    Returns:
        AttackResult.

    Raises:
        ValueError: inputs that are not images, an even kernel size, bad settings or input.

    References:
        Dong et al., "Evading Defenses to Transferable Adversarial Examples by Translation-Invariant Attacks",
        CVPR 2019, arXiv:1904.02884.

    Examples:
        >>> result = tifgsm(model, x, y, ThreatModel("linf", 16 / 255), kernel_size=15)  # ImageNet-sized images
    """
    boosts = Boosts(
        diversity_prob=diversity_prob, resize_rate=resize_rate, kernel_size=kernel_size, kernel_sigmas=kernel_sigmas
    )
    return run_attack(
        transfer_core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, loss_fn=get_loss(loss),
        boosts=boosts, generator=as_rng(generator), name="tifgsm",
    )  # fmt: skip


TIFGSM = tifgsm.config
