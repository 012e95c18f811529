"""TRADES (Zhang et al. 2019): cross-entropy on clean inputs plus beta times the KL divergence to adversarial ones."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from advlab.defenses._adversarial import AdversarialTrainer, OptionalStep, crafting
from advlab.defenses.base import register_defense
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat, PositiveInt

INIT_SCALE = 0.001
"""The PGD of TRADES starts at ``x + 0.001 * N(0, I)`` (the authors' code)."""
STEP_DIVISOR = 4
"""Default ``step_size = eps / STEP_DIVISOR``."""


def kl_to(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(softmax(logits_clean) || softmax(logits_adv))``, shape ``(N,)``."""
    p_log = F.log_softmax(logits_clean, dim=1)
    q_log = F.log_softmax(logits_adv, dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(1)


@register_defense("trades")
class TRADES(AdversarialTrainer):
    """Minimise ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, ``x_adv = argmax_{x' in ball} KL(f(x) || f(x'))``.

    ``x_adv`` comes from ``steps`` projected steepest-ascent steps on the KL term (clean distribution held
    fixed), started at ``x + 0.001 * N(0, I)``, crafted in eval mode. The KL in the training loss is averaged
    over the batch (the authors' ``batchmean``); gradients flow through both ``f(x)`` and ``f(x_adv)``.
    ``beta = 0`` is standard training.

    Args:
        beta: weight of the robustness term (>= 0; paper: 6 on CIFAR-10, 1 or 6 on MNIST).
        eps: training radius (paper: 0.3 on MNIST, 0.031 on CIFAR-10).
        steps: ascent steps (paper: 40 on MNIST, 10 on CIFAR-10).
        step_size: default ``eps / 4`` (the paper's 0.01 at eps 0.3 with 40 steps is ``eps / 30``; 0.007 at
            0.031 with 10 steps is ``eps / 4.4``).
        **settings: ``norm``, ``eps_rampup``, ``bounds`` and the :class:`~advlab.defenses.base.Trainer` settings.

    Raises:
        ValueError: ``beta < 0``, ``eps < 0``, ``steps < 1``...

    References:
        Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019,
        arXiv:1901.08573.

    Examples:
        >>> TRADES(beta=6.0, eps=0.3, steps=40).fit(model, train, test)
    """

    beta: float
    steps: int
    step_size: float

    def __init__(
        self,
        *,
        beta: NonNegativeFloat = 6.0,
        eps: NonNegativeFloat = 0.3,
        steps: PositiveInt = 10,
        step_size: OptionalStep = None,
        **settings: Any,
    ) -> None:
        super().__init__(eps=eps, **settings)
        if step_size is None:
            self.step_size = self.eps / STEP_DIVISOR

    def perturb(self, model: Classifier, x: torch.Tensor, epoch: float) -> torch.Tensor:
        """The TRADES inner maximisation: PGD on ``KL(f(x) || f(x'))`` from ``x + 0.001 N(0, I)``."""
        threat = self.threat_at(epoch)
        if threat.eps == 0:
            return x
        scale = threat.eps / self.threat.eps
        gen = self.generator_at(epoch, x.device)
        with crafting(model):
            with torch.no_grad():
                clean = model(x)
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x_adv = threat.project(x + INIT_SCALE * noise, x)
            for _ in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(kl_to(clean, model(x_adv)).sum(), x_adv)
                x_adv = threat.project(x_adv + self.step_size * scale * threat.ascent_direction(grad, x_adv), x)
        return x_adv.detach()

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(model, x, epoch)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + self.beta * kl_to(logits, model(x_adv)).mean()
        return loss, logits
