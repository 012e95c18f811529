"""Free adversarial training (Shafahi et al. 2019): minibatch replay with one gradient for weights and perturbation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from advlab import validation
from advlab.defenses._adversarial import AdversarialTrainer
from advlab.models import Classifier


class FreeTraining(AdversarialTrainer):
    """Free adversarial training: minibatch replay, one backward pass for both weights and perturbation.

    Each minibatch is replayed ``m`` times; every replay does one backward pass whose input gradient updates
    the perturbation and whose parameter gradient updates the weights.

    The perturbation ``delta`` persists across replays and across minibatches (it is checkpointed, so a
    resumed run continues with it). Each replay: loss on ``x + delta`` (clamped into the box), backward,
    ``delta <- clip_eps(delta + step_size * sign(grad_delta))``, optimiser step.

    Budget: ``epochs`` is the budget in passes of gradient computations, as for natural training; the data is
    traversed ``ceil(epochs / m)`` times (``epochs_run`` in :meth:`settings`), each example getting ``m``
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

    Example:
        >>> FreeTraining(m=8, eps=8 / 255, epochs=40, optimizer="sgd", lr=0.1).fit(model, train, test)
    """

    name = "free"

    def __init__(
        self, *, m: int = 4, eps: float = 0.3, step_size: float | None = None, epochs: int = 5, **settings: Any
    ) -> None:
        self.m = validation.check_int("m", m, minimum=1)
        self.budget_epochs = validation.check_int("epochs", epochs, minimum=1)
        super().__init__(eps=eps, epochs=max(1, math.ceil(self.budget_epochs / self.m)), **settings)
        self.step_size = (
            self.threat.eps
            if step_size is None
            else validation.check_float("step_size", step_size, minimum=0.0, strict_min=True)
        )
        self.replays = self.m
        self.delta_: torch.Tensor | None = None
        self._current: tuple[torch.Tensor, float] | None = None

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "epochs": self.budget_epochs,
            "epochs_run": self.epochs,
            "m": self.m,
            "step_size": self.step_size,
        }

    def fit(self, model, train, val=None, **kwargs):
        self.delta_ = None  # a fresh run starts from delta = 0; a resumed one gets its delta from the checkpoint
        return super().fit(model, train, val, **kwargs)

    def reset_perturbation(self) -> None:
        """Forget the carried perturbation (the next batch starts from ``delta = 0``)."""
        self.delta_ = None

    def training_step(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float):
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
        delta, epoch = self._current
        self._current = None
        eps = self.eps_at(epoch)
        scale = eps / self.threat.eps if self.threat.eps > 0 else 0.0
        with torch.no_grad():
            step = self.step_size * scale * self.threat.ascent_direction(delta.grad, None)
            self.delta_[: delta.shape[0]] = self.threat.project_delta(delta + step, eps)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.delta_ is None else {"delta": self.delta_.detach().clone()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.delta_ = tensors["delta"].clone() if "delta" in tensors else None
