"""Ensemble adversarial training (Tramèr et al. 2018): adversarial examples transferred from fixed pre-trained
models, alternating with the model's own, to decouple example generation from the model being trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from advlab.defenses._adversarial import AdversarialTrainer, batches_per_epoch, fgsm_from
from advlab.defenses.base import Recorded, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import Check, Fraction, NonNegativeFloat, OneOf
from advlab.zoo import load_model

METHODS = ("rfgsm", "fgsm")
RFGSM_DIVISOR = 2
"""Default R+FGSM random step ``rfgsm_alpha = eps / RFGSM_DIVISOR``."""


def check_static_models(name: str, value: Any) -> list[Any]:
    """One or more static models (``Classifier``/module objects or model folders) as a list."""
    if isinstance(value, (str, Path, torch.nn.Module)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{name}: expected at least one pre-trained model (Classifier or model folder), got "
            f"{value!r}; e.g. {name}=['runs/a', 'runs/b']"
        )
    for i, m in enumerate(value):
        if not isinstance(m, (str, Path, torch.nn.Module)):
            raise TypeError(f"{name}[{i}]: expected a Classifier or a model folder, got {type(m).__name__}")
    return list(value)


def model_names(models: Sequence[Any]) -> list[str]:
    """How static models are recorded: a folder by its path, a model object by the architecture in its card."""
    return [
        str(m) if isinstance(m, (str, Path)) else (getattr(m, "card", {}) or {}).get("arch", type(m).__name__)
        for m in models
    ]


StaticModels = Annotated[Sequence[Any], Check(check_static_models), Recorded(model_names)]


@register_defense("ensemble-adversarial")
class EnsembleAdversarialTraining(AdversarialTrainer):
    """Ensemble adversarial training: examples from the model itself or from fixed pre-trained models.

    The examples come, batch by batch, from the model being trained or one of several static pre-trained
    models (R+FGSM by default), with the loss ``0.5 * CE(x) + 0.5 * CE(x_adv)``.

    The source cycles per batch through ``[model, static_1, ..., static_k]`` (the paper alternates the
    source uniformly; a fixed cycle is its deterministic form). R+FGSM: ``x' = x + alpha * sign(N(0, I))``,
    then ``x_adv = x' + (eps - alpha) * sign(grad_x' J(x', y))``, ``alpha = eps / 2``.

    Args:
        static_models: pre-trained models that are never updated: ``Classifier`` objects or folders written by
            ``advlab train`` (CLI: ``--set static_models='["runs/a","runs/b"]'``). At least one.
        method: ``"rfgsm"`` or ``"fgsm"``.
        rfgsm_alpha: the random-step size of R+FGSM; default ``eps / 2``.
        clean_weight: weight of the clean loss (paper: 0.5).
        eps: training radius (paper: 0.3 on MNIST, 16/255 on ImageNet).
        **settings: ``norm``, ``eps_rampup``, ``bounds`` and the :class:`~advlab.defenses.base.Trainer` settings.

    Raises:
        ValueError: no static model, a folder that is not a model, bad settings.
        TypeError: a static model that is neither a Classifier/module nor a path.

    References:
        Tramèr, Kurakin, Papernot, Goodfellow, Boneh & McDaniel, "Ensemble Adversarial Training: Attacks and
        Defenses", ICLR 2018, arXiv:1705.07204.

    Examples:
        >>> EnsembleAdversarialTraining(static_models=["runs/a", "runs/b"], eps=0.3).fit(model, train, test)
    """

    static_models: list[Any]
    method: str
    rfgsm_alpha: float
    clean_weight: float

    def __init__(
        self,
        *,
        static_models: StaticModels = (),
        method: Annotated[str, OneOf(METHODS)] = "rfgsm",
        rfgsm_alpha: NonNegativeFloat | None = None,
        clean_weight: Fraction = 0.5,
        eps: NonNegativeFloat = 0.3,
        **settings: Any,
    ) -> None:
        super().__init__(eps=eps, **settings)
        if rfgsm_alpha is None:
            self.rfgsm_alpha = self.eps / RFGSM_DIVISOR
        if self.rfgsm_alpha > self.eps:
            raise ValueError(f"rfgsm_alpha: expected <= eps = {self.eps}, got {self.rfgsm_alpha}")

    def setup(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None) -> None:
        static = []
        for m in self.static_models:
            clf = (
                load_model(m, device=model.device) if isinstance(m, (str, Path)) else as_classifier(m).to(model.device)
            )
            clf.eval()
            static.append(clf)
        self.static_ = static
        self._batches = batches_per_epoch(x.shape[0], self.batch_size)

    def source_at(self, epoch: float) -> int:
        """Index of the example source at this step: 0 is the model being trained, ``i >= 1`` static model ``i``."""
        step = round(epoch * self._batches)
        return step % (1 + len(self.static_))

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float) -> torch.Tensor:
        """The adversarial examples of this step, crafted on its source (R+FGSM or FGSM)."""
        threat = self.threat_at(epoch)
        if threat.eps == 0:
            return x
        src = self.source_at(epoch)
        source = model if src == 0 else self.static_[src - 1]
        alpha = self.rfgsm_alpha * threat.eps / self.threat.eps if self.method == "rfgsm" else 0.0
        start = x
        if alpha > 0:
            gen = self.generator_at(epoch, x.device)
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            start = threat.project(x + alpha * threat.ascent_direction(noise, x), x)
        return fgsm_from(source, x, start, y, threat, threat.eps - alpha)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(model, x, y, epoch)
        logits = model(x)
        loss = self.clean_weight * F.cross_entropy(logits, y) + (1 - self.clean_weight) * F.cross_entropy(
            model(x_adv), y
        )
        return loss, logits
