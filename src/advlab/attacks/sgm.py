"""Skip gradient method (Wu et al. 2020): the gradient through residual blocks decayed along the residual branches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.iterative import iterate
from advlab.attacks.registry import register_attack
from advlab.attacks.transfer import default_step_size
from advlab.goals import Goal
from advlab.losses import LossSetting, get_loss
from advlab.result import AttackResult
from advlab.settings import Fraction, NonNegativeFloat, NotASetting, PositiveInt
from advlab.threat import ThreatModel

SKIP_ATTRIBUTES = ("shortcut", "downsample")
"""Attributes that mark a residual block and hold its skip path: ``shortcut`` (the zoo's ``PreActBlock``, most CIFAR
ResNets), ``downsample`` (torchvision's ``BasicBlock`` and ``Bottleneck``); ``None`` or an empty module is the
identity."""


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that are residual blocks: those with a ``shortcut`` or ``downsample`` attribute.

    Args:
        model: any ``torch.nn.Module`` (an ``advlab.Classifier`` is searched through).

    Returns:
        The blocks, in module order (empty when the model has none).

    Examples:
        >>> len(residual_blocks(build_classifier("preact-resnet18", (3, 32, 32), 10)))
        8
    """
    return [m for m in model.modules() if any(hasattr(m, a) for a in SKIP_ATTRIBUTES)]


def _skip_module(block: nn.Module) -> nn.Module | None:
    for attribute in SKIP_ATTRIBUTES:
        skip = getattr(block, attribute, None)
        if isinstance(skip, nn.Module):
            return skip
    return None


@contextlib.contextmanager
def skip_gradient_decay(blocks: Sequence[nn.Module], gamma: float) -> Iterator[None]:
    """Within the context, the backward pass through each block is ``d skip + gamma * d residual`` (SGM, Eq. 7).

    A block's output ``o = s + r`` (skip path ``s``, residual branch ``r``) is replaced in the forward pass by
    ``o.detach() + a - a.detach()`` with ``a = gamma * o + (1 - gamma) * s``: the same value, bit for bit, and the
    gradient ``gamma * do + (1 - gamma) * ds = ds + gamma * dr``. ``s`` is the output of the block's ``shortcut`` or
    ``downsample`` module when it has one (a projection; the zoo's pre-activation block applies it to the
    pre-activated input, so that path keeps its full gradient), else the block's input (the identity). For a
    post-activation block (``relu(s + r)``, torchvision's) the ReLU's mask then falls on the decayed part only: an
    approximation of the paper's rule there.

    Args:
        blocks: residual blocks (see :func:`residual_blocks`).
        gamma: decay factor of the residual branches' gradient, in [0, 1].

    Raises:
        ValueError: a block without a skip module whose output shape differs from its input's.

    Examples:
        >>> with skip_gradient_decay(residual_blocks(model), 0.2):
        ...     grad = torch.autograd.grad(loss_fn(model(x)), x)
    """
    skips: dict[nn.Module, torch.Tensor] = {}
    handles = []

    def remember(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        skips[owner[module]] = output

    def decay(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        skip = skips.pop(module, None)
        if not torch.is_grad_enabled():
            return None
        s = inputs[0] if skip is None else skip
        if s.shape != output.shape:
            raise ValueError(
                f"blocks: {type(module).__name__} maps {tuple(s.shape)} to {tuple(output.shape)} and has no "
                f"{' or '.join(SKIP_ATTRIBUTES)} module, so its skip path is unknown; pass only residual blocks"
            )
        a = gamma * output + (1 - gamma) * s
        return output.detach() + (a - a.detach())

    owner: dict[nn.Module, nn.Module] = {}
    try:
        for block in blocks:
            skip_module = _skip_module(block)
            if skip_module is not None:
                owner[skip_module] = block
                handles.append(skip_module.register_forward_hook(remember))
            handles.append(block.register_forward_hook(decay))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _core(model, x, labels, targeted, threat, *, steps, step_size, momentum, gamma, blocks, loss_fn) -> AttackOutput:
    found = residual_blocks(model) if blocks is None else list(blocks)
    if not found:
        raise ValueError(
            "model: SGM decays the gradient through residual blocks and found none (modules with a "
            f"{' or '.join(repr(a) for a in SKIP_ATTRIBUTES)} attribute); pass blocks=[...] (the model's residual "
            "blocks), or use mifgsm/difgsm for a model without skip connections"
        )
    with skip_gradient_decay(found, gamma):
        run = iterate(
            model, x, x, labels, targeted, threat, steps=steps, step_size=step_size, loss_fn=loss_fn,
            momentum=momentum, name="sgm",
        )  # fmt: skip
    return AttackOutput(run.x_adv, loss_trace=run.trace)


@register_attack("SGM", norms=("linf", "l2"), paper="Wu et al. 2020, arXiv:2002.05990")
def sgm(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegativeFloat | None = None,
    momentum: NonNegativeFloat = 0.0,
    gamma: Fraction = 0.2,
    loss: LossSetting = "ce",
    blocks: Annotated[Sequence[nn.Module] | None, NotASetting()] = None,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """I-FGSM (or MI-FGSM) on a residual source model whose gradient favours the skip connections.

    In a residual network ``z_{i+1} = z_i + f_i(z_i)``; SGM back-propagates ``1 + gamma * df_i/dz`` through each
    block instead of ``1 + df_i/dz``, so more of the gradient comes through the skip connections, the low-level
    features that other models share: examples crafted on a ResNet transfer much better. The forward pass is
    unchanged (:func:`skip_gradient_decay`). ``gamma=1`` is the base attack exactly (:func:`~advlab.attacks.mifgsm.
    mifgsm` with the same momentum). The model must have residual blocks: found by their ``shortcut``/``downsample``
    attribute (the zoo's ``preact-resnet18``, torchvision ResNets) or given as ``blocks``.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``, with residual blocks.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (linf or l2), eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: iterations (the paper's 10).
        step_size: default ``eps / steps``.
        momentum: decay factor of MI-FGSM's accumulated gradient; 0 (the default, the paper's main base attack)
            is I-FGSM with L1-normalised gradients.
        gamma: decay of the residual branches' gradient (the paper's 0.2 for ResNets, 0.5 for DenseNets).
        loss: loss to ascend.
        blocks: the residual blocks to decay through (default: every module with a ``shortcut`` or ``downsample``
            attribute). Data, not a setting: not on the command line.
        generator: unused (deterministic).

    Returns:
        AttackResult.

    Raises:
        ValueError: a model without residual blocks (and no ``blocks``), bad settings or input.

    References:
        Wu, Wang, Xia, Bailey & Ma, "Skip Connections Matter: On the Transferability of Adversarial Examples
        Generated with ResNets", ICLR 2020, arXiv:2002.05990.

    Examples:
        >>> resnet = build_classifier("preact-resnet18", (3, 32, 32), 10)
        >>> result = sgm(resnet, x, y, ThreatModel("linf", 16 / 255), gamma=0.2)
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, steps=steps,
        step_size=default_step_size(threat, steps, step_size), momentum=momentum, gamma=gamma, blocks=blocks,
        loss_fn=get_loss(loss),
    )  # fmt: skip


SGM = sgm.config
