"""Defensive distillation (Papernot et al. 2016): a teacher and a student trained at temperature T, deployed at T = 1."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F

from advlab.defenses.base import Trainer, declared_settings, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


class _TemperatureTraining(Trainer):
    """Cross-entropy of ``softmax(z / T)`` with the hard labels (the teacher of defensive distillation).

    Args:
        temperature: ``T > 0``.
    """

    name = "distillation-teacher"
    temperature: float

    def __init__(self, *, temperature: PositiveFloat = 1.0, **settings: Any) -> None:
        super().__init__(**settings)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits / self.temperature, y), logits


@register_defense("distillation")
class DefensiveDistillation(Trainer):
    """Defensive distillation: a teacher and a student trained at temperature ``T``, deployed at ``T = 1``.

    A teacher is trained at temperature ``T`` on hard labels, then the model (the student, same architecture)
    on the teacher's soft labels ``softmax(z_teacher(x) / T)`` at the same ``T``.

    The student is deployed at ``T = 1``: the model left in place outputs its raw logits ``z``, i.e. the
    temperature is dropped at test time. Its logits are then about ``T`` times larger than a normally trained
    network's, so the softmax saturates and gradients of the cross-entropy vanish — which is why FGSM/JSMA
    fail on it while Carlini & Wagner's logit-margin attack (arXiv:1608.04644) still succeeds: the defense
    masks gradients rather than removing adversarial examples.

    The teacher starts from a copy of the model's initial weights and is checkpointed under
    ``checkpoint_dir / "teacher"``; it is kept as ``teacher_``.

    Args:
        temperature: ``T > 0`` (paper: 100 on MNIST).
        teacher_epochs: epochs of the teacher (default: ``epochs``).
        **settings: see :class:`~advlab.defenses.base.Trainer` (used for teacher and student alike).

    Raises:
        ValueError: ``temperature <= 0``.

    References:
        Papernot, McDaniel, Wu, Jha & Swami, "Distillation as a Defense to Adversarial Perturbations against
        Deep Neural Networks", IEEE S&P 2016, arXiv:1511.04508.

    Examples:
        >>> DefensiveDistillation(temperature=100, epochs=5).fit(model, train, test)
    """

    temperature: float
    teacher_epochs: int

    def __init__(
        self, *, temperature: PositiveFloat = 100.0, teacher_epochs: PositiveInt | None = None, **settings: Any
    ) -> None:
        super().__init__(**settings)
        if teacher_epochs is None:
            self.teacher_epochs = self.epochs

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> DefensiveDistillation:
        model = as_classifier(model)
        self._initial = copy.deepcopy(model)  # the teacher starts where the student starts
        self._val = val
        super().fit(model, train, val, **kwargs)
        return self

    def teacher_trainer(self) -> Trainer:
        """The teacher's trainer: this trainer's settings at the same temperature, for ``teacher_epochs`` epochs,
        checkpointed in ``checkpoint_dir / "teacher"``."""
        settings = {name: getattr(self, name) for name in declared_settings(Trainer)}
        ckpt = None if self.checkpoint_dir is None else self.checkpoint_dir / "teacher"
        settings.update(epochs=self.teacher_epochs, checkpoint_dir=ckpt)
        return _TemperatureTraining(temperature=self.temperature, **settings)

    def setup(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None) -> None:
        log.info("distillation: training the teacher at T = %g", self.temperature)
        teacher = self._initial
        self.teacher_trainer().fit(teacher, (x, y), self._val)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher_ = teacher

    def soft_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's ``softmax(z / T)`` on ``x``."""
        with torch.no_grad():
            return F.softmax(self.teacher_(x) / self.temperature, dim=1)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        target = self.soft_labels(x)
        loss = -(target * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean()
        return loss, logits
