"""Weight decay and an L1 penalty on the first layer: regularisation as a defense, known to fail."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from advlab.defenses._adversarial import first_layer
from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat


@register_defense("regularization")
class RegularizedTraining(Trainer):
    """Cross-entropy plus ``l1 * |W_1|_1`` on the first layer's weights, with L2 weight decay on all weights.

    **Known to fail.** Goodfellow et al. (§5) show that L1 weight decay on a linear model only shrinks the
    margin everywhere; it neither removes the linear behaviour that FGSM exploits nor helps deep networks,
    and it costs clean accuracy before it buys any robustness. The trained model is plain, deterministic and
    differentiable: white-box PGD (no adaptation needed) breaks it at the usual eps.

    Args:
        l1: coefficient of the L1 penalty on the first Linear/Conv layer's weights (>= 0).
        weight_decay: L2 weight decay of the optimiser (default 5e-4 here).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: ``l1 < 0``; a model without a Linear/Conv layer (at ``fit``).

    References:
        Goodfellow, Shlens & Szegedy, arXiv:1412.6572, §5 and §6 (weight decay versus adversarial training).

    Examples:
        >>> RegularizedTraining(l1=1e-4, weight_decay=5e-4).fit(model, train)
    """

    l1: float

    def __init__(self, *, l1: NonNegativeFloat = 1e-4, weight_decay: NonNegativeFloat = 5e-4, **settings: Any) -> None:
        super().__init__(weight_decay=weight_decay, **settings)

    def setup(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._first = first_layer(model.module)

    def l1_penalty(self) -> torch.Tensor:
        """``|W_1|_1`` of the first layer."""
        return cast(torch.Tensor, self._first.weight).abs().sum()

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y) + self.l1 * self.l1_penalty(), logits
