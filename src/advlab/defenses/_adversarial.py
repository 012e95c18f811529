"""Shared machinery of the adversarial trainers: the training threat model, the eps ramp-up and seeded crafting."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Annotated, Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.base import loss_and_grad
from advlab.defenses.base import Trainer
from advlab.losses import cross_entropy
from advlab.models import Classifier
from advlab.settings import Check, Fraction, NonNegativeFloat, OneOf, Range
from advlab.threat import NORMS, ThreatModel


@contextlib.contextmanager
def crafting(model: Classifier) -> Iterator[Classifier]:
    """Eval mode with parameter gradients off while adversarial examples are crafted; modes restored after.

    Unlike :meth:`Classifier.attack_mode` it does not warn about train mode: a trainer is in train mode on
    purpose and crafts its examples in eval mode (batch-norm running statistics, dropout off).
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with model.attack_mode():
            yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def reinitialized_copy(model: Classifier, seed: int) -> Classifier:
    """A deep copy of ``model`` with every layer re-initialised by PyTorch's default scheme from ``seed``.

    The default initialisers draw from the global RNG, so they run inside ``torch.random.fork_rng``: the
    caller's RNG stream is left exactly as it was.
    """
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not clone:
                reset()
    return clone


def check_bounds(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a pair of floats ``(low, high)`` with ``low < high``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name}: expected a pair (low, high), got {value!r}")
    low = validation.check_float(f"{name}[0]", value[0])
    high = validation.check_float(f"{name}[1]", value[1])
    if not low < high:
        raise ValueError(f"{name}: expected low < high, got {(low, high)!r}")
    return low, high


Norm = Annotated[str, OneOf(NORMS)]
Bounds = Annotated[tuple[float, float], Check(check_bounds)]
OptionalStep = Annotated[float | None, Range(0, strict_min=True)]
"""A step size that defaults (``None``) to a multiple of ``eps`` chosen by the trainer."""


class AdversarialTrainer(Trainer):
    """A :class:`~advlab.defenses.base.Trainer` with a training threat model and a linear eps ramp-up.

    Args:
        eps: radius of the training threat model (>= 0).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        eps_rampup: fraction of training over which eps grows linearly from 0 (0 = none).
        bounds: the input box.
        **trainer_settings: see :class:`~advlab.defenses.base.Trainer`.
    """

    eps: float
    norm: str
    eps_rampup: float
    bounds: tuple[float, float]

    def __init__(
        self,
        *,
        eps: NonNegativeFloat = 0.3,
        norm: Norm = "linf",
        eps_rampup: Fraction = 0.0,
        bounds: Bounds = (0.0, 1.0),
        **trainer_settings: Any,
    ) -> None:
        super().__init__(**trainer_settings)
        self.threat = ThreatModel(norm, eps, bounds)

    def eps_at(self, epoch: float) -> float:
        """The training eps at fractional ``epoch`` (linear ramp over the first ``eps_rampup`` of training)."""
        if self.eps_rampup <= 0:
            return self.threat.eps
        return self.threat.eps * min(1.0, epoch / (self.eps_rampup * self.epochs_run))

    def threat_at(self, epoch: float) -> ThreatModel:
        """The threat model with the ramped eps."""
        return self.threat.with_eps(self.eps_at(epoch))


def fgsm_from(
    model: Classifier, x: torch.Tensor, start: torch.Tensor, y: torch.Tensor, threat: ThreatModel, step_size: float
) -> torch.Tensor:
    """One projected steepest-ascent step of the cross-entropy from ``start`` (FGSM when ``start = x``)."""
    with crafting(model):
        _, grad, _ = loss_and_grad(model, start, y, False, cross_entropy)
        x_adv = threat.project(start + step_size * threat.ascent_direction(grad, start), x)
    return x_adv.detach()


def first_layer(module: nn.Module) -> nn.Module:
    """The first ``Linear``/``Conv`` layer of ``module`` in definition order."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m
    raise ValueError(
        f"model: {type(module).__name__} has no Linear or Conv layer to regularise; pass a network with one"
    )


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Number of minibatches in one pass over ``n`` examples."""
    return max(1, math.ceil(n / batch_size))
