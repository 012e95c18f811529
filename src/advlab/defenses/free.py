"""Free adversarial training (Shafahi et al. 2019): minibatch replay with one gradient for weights and perturbation."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F

from advlab.defenses._adversarial import AdversarialTrainer, OptionalStep
from advlab.defenses.base import register_defense
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat, PositiveInt


@register_defense("free")
class FreeTraining(AdversarialTrainer):
    """Free adversarial training: minibatch replay, one backward pass for both weights and perturbation.

    Each minibatch is replayed ``m`` times; every replay does one backward pass whose input gradient updates
    the perturbation and whose parameter gradient updates the weights.

    The perturbation ``delta`` persists across replays and across minibatches (it is checkpointed, so a
    resumed run continues with it). Each replay: loss on ``x + delta`` (clamped into the box), backward,
    ``delta <- clip_eps(delta + step_size * sign(grad_delta))``, optimiser step.

    Budget: ``epochs`` is the budget in passes of gradient computations, as for natural training; the data is
    traversed ``ceil(epochs / m)`` times (:attr:`epochs_run`, also recorded in :meth:`settings`), each example getting ``m``
    updates, so the total number of gradient computations matches ``epochs`` natural epochs (the paper's
    ``N_ep / m``).

    Args:
        m: replays per minibatch (>= 1; paper: 8 on CIFAR-10, 4 on ImageNet).
        eps: training radius.
        step_size: perturbation step; default ``eps`` (the paper's FGSM step).
        epochs: budget in natural-training epochs (see above).
        **settings: ``norm``, ``eps_rampup``, ``bounds`` and the :class:`~advlab.defenses.base.Trainer` settings.

    Raises:
        ValueError: ``m < 1``, ``eps < 0``...

    References:
        Shafahi et al., "Adversarial Training for Free!", NeurIPS 2019, arXiv:1904.12843, Algorithm 1.

    Examples:
        >>> FreeTraining(m=8, eps=8 / 255, epochs=40, optimizer="sgd", lr=0.1).fit(model, train, test)
    """

    m: int
    step_size: float

    def __init__(
        self,
        *,
        m: PositiveInt = 4,
        eps: NonNegativeFloat = 0.3,
        step_size: OptionalStep = None,
        epochs: PositiveInt = 5,
        **settings: Any,
    ) -> None:
        super().__init__(eps=eps, epochs=epochs, **settings)
        if step_size is None:
            self.step_size = self.eps
        self.replays = m
        self.delta_: torch.Tensor | None = None
        self._current: tuple[torch.Tensor, float] | None = None

    @property
    def epochs_run(self) -> int:
        """Passes over the data: ``ceil(epochs / m)``, so the gradient computations match ``epochs`` natural epochs."""
        return max(1, math.ceil(self.epochs / self.m))

    def derived_settings(self) -> dict[str, Any]:
        return {"epochs_run": self.epochs_run}

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> FreeTraining:
        self.delta_ = None  # a fresh run starts from delta = 0; a resumed one gets its delta from the checkpoint
        super().fit(model, train, val, **kwargs)
        return self

    def reset_perturbation(self) -> None:
        """Forget the carried perturbation (the next batch starts from ``delta = 0``)."""
        self.delta_ = None

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.delta_ is None or self.delta_.shape[1:] != x.shape[1:] or self.delta_.shape[0] < x.shape[0]:
            grown = torch.zeros(
                (max(x.shape[0], 0 if self.delta_ is None else self.delta_.shape[0]), *x.shape[1:]),
                dtype=x.dtype,
                device=x.device,
            )
            if self.delta_ is not None and self.delta_.shape[1:] == x.shape[1:]:
                grown[: self.delta_.shape[0]] = self.delta_
            self.delta_ = grown
        delta = self.delta_[: x.shape[0]].clone().requires_grad_(True)
        x_adv = self.threat.clip_box(x + delta)
        logits = model(x_adv)
        self._current = (delta, epoch)
        return F.cross_entropy(logits, y), logits

    def after_backward(self, model: Classifier) -> None:
        current, self._current = self._current, None
        if current is None or self.delta_ is None:
            raise RuntimeError("after_backward: called without a training_step before it")
        delta, epoch = current
        eps = self.eps_at(epoch)
        scale = eps / self.threat.eps if self.threat.eps > 0 else 0.0
        with torch.no_grad():
            step = self.step_size * scale * self.threat.ascent_direction(cast(torch.Tensor, delta.grad), None)
            self.delta_[: delta.shape[0]] = self.threat.project_delta(delta + step, eps)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.delta_ is None else {"delta": self.delta_.detach().clone()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.delta_ = tensors["delta"].clone() if "delta" in tensors else None
