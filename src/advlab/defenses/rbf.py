"""Training of the shallow RBF network of Goodfellow et al. 2014, a low-capacity model that resists FGSM only."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat, PositiveFloat
from advlab.zoo import RBFNetwork


@register_defense("rbf")
class RBFTraining(Trainer):
    """Cross-entropy training of the shallow RBF network (arch ``rbf``) of Goodfellow et al.

    ``advlab.zoo.RBFNetwork``, with an optional penalty that keeps the precisions small (wide, smooth basins).

    **Known to fail** as a defense: the RBF network is confident only near its class centres, so FGSM's
    single linear step makes few confident mistakes (Goodfellow et al.: 55.4% error, 1.2% mean confidence at
    eps 0.25 on MNIST), but its decisions are still easy to flip: iterative attacks (PGD with many steps, or
    the C&W margin loss, which is not flattened by the low confidence) drive its accuracy far lower, and its
    clean accuracy is below a deep network's. It is a capacity trade-off, not robustness.

    Args:
        precision_decay: coefficient of the mean precision penalty (>= 0).
        lr: default 1e-2 (the centres move slowly otherwise).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: ``precision_decay < 0``.
        TypeError: at ``fit``, a model that is not an RBF network (build it with ``--arch rbf``).

    References:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", arXiv:1412.6572, §7.

    Examples:
        >>> clf = advlab.zoo.build_classifier("rbf", (1, 28, 28), 10)
        >>> RBFTraining(epochs=5).fit(clf, train, test)
    """

    precision_decay: float

    def __init__(self, *, precision_decay: NonNegativeFloat = 0.0, lr: PositiveFloat = 1e-2, **settings: Any) -> None:
        super().__init__(lr=lr, **settings)

    def setup(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if not isinstance(model.module, RBFNetwork):
            raise TypeError(
                f"model: the 'rbf' defense trains an RBF network, got {type(model.module).__name__}; "
                "build it with advlab.zoo.build_classifier('rbf', ...) or --arch rbf"
            )

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if self.precision_decay:
            loss = loss + self.precision_decay * cast(RBFNetwork, model.module).precision.mean()
        return loss, logits
