"""FGSM adversarial training of Goodfellow et al. 2014: a mix of the clean and the FGSM loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from advlab.defenses._adversarial import AdversarialTrainer, fgsm_from
from advlab.defenses.base import register_defense
from advlab.models import Classifier
from advlab.settings import Fraction, NonNegativeFloat


@register_defense("goodfellow")
class GoodfellowTraining(AdversarialTrainer):
    """Minimise ``alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J(x, y)), y)``.

    The FGSM examples are recomputed for every minibatch against the current weights (in eval mode, parameter
    gradients off) and treated as constants, as in the paper. ``alpha = 1`` is standard training.

    Args:
        alpha: weight of the clean loss, in ``[0, 1]`` (paper: 0.5).
        eps: FGSM radius (paper: 0.25 on MNIST).
        **settings: ``norm`` (``"linf"`` in the paper; ``"l2"`` or ``"l1"`` take that norm's steepest-ascent
            step), ``eps_rampup`` and ``bounds`` of :class:`~advlab.defenses._adversarial.AdversarialTrainer`,
            and those of :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``, ``eps < 0``, unknown norm.

    References:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
        arXiv:1412.6572, §6.

    Examples:
        >>> GoodfellowTraining(eps=0.25, alpha=0.5, epochs=5).fit(model, train, test)
    """

    alpha: float

    def __init__(self, *, alpha: Fraction = 0.5, eps: NonNegativeFloat = 0.25, **settings: Any) -> None:
        super().__init__(eps=eps, **settings)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        threat = self.threat_at(epoch)
        x_adv = fgsm_from(model, x, x, y, threat, threat.eps) if threat.eps > 0 else x
        logits = model(x)
        loss = self.alpha * F.cross_entropy(logits, y) + (1 - self.alpha) * F.cross_entropy(model(x_adv), y)
        return loss, logits
