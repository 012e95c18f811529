"""PGD adversarial training (Madry et al. 2018): minimise the loss on PGD adversarial examples."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from advlab.attacks.iterative import iterate
from advlab.defenses._adversarial import AdversarialTrainer, OptionalStep, crafting
from advlab.defenses.base import register_defense
from advlab.losses import cross_entropy
from advlab.models import Classifier
from advlab.settings import PositiveInt

STEP_FACTOR = 2.5
"""Default ``step_size = STEP_FACTOR * eps / steps`` (Madry et al.)."""


@register_defense("pgd")
class PGDTraining(AdversarialTrainer):
    """Adversarial training with PGD examples: ``min_theta E[max_{|delta| <= eps} L(x + delta, y)]``.

    Args:
        steps: PGD steps per batch (Madry et al.: 40 on MNIST, 7 on CIFAR-10).
        step_size: default ``2.5 * eps / steps``.
        **settings: ``eps``, ``norm``, ``eps_rampup`` and ``bounds`` of
            :class:`~advlab.defenses._adversarial.AdversarialTrainer`, and those of
            :class:`~advlab.defenses.base.Trainer`.

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083.

    MNIST at eps 0.3 on a CPU (measured, BENCHMARKS.md): 5 steps, 12 epochs, Adam with the cyclic schedule
    peaking at 5e-3, batch 100 and an eps ramp-up over the first 20% give the wong-cnn 99.05% clean and 90.6%
    accuracy under PGD-40 with 10 restarts, in 5.3 minutes on 2 cores:
    ``advlab train --data mnist --arch wong-cnn --defense pgd --epochs 12 --lr 5e-3 --schedule cyclic
    --batch-size 100 --set eps=0.3 --set steps=5 --set eps_rampup=0.2 --out runs/mnist-pgd``.

    Examples:
        >>> PGDTraining(eps=0.3, steps=40, epochs=10).fit(model, train, test)
    """

    steps: int
    step_size: float

    def __init__(self, *, steps: PositiveInt = 10, step_size: OptionalStep = None, **settings: Any) -> None:
        super().__init__(**settings)
        if step_size is None:
            self.step_size = STEP_FACTOR * self.eps / steps

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float) -> torch.Tensor:
        """PGD examples for a batch, crafted in eval mode with parameter gradients off."""
        threat = self.threat_at(epoch)
        if threat.eps == 0:
            return x
        scale = threat.eps / self.eps
        gen = self.generator_at(epoch, x.device)  # seeded from the position: a resumed run draws the same starts
        with crafting(model):
            x0 = threat.random_start(x, gen)
            x_adv = iterate(
                model,
                x,
                x0,
                y,
                False,
                threat,
                steps=self.steps,
                step_size=self.step_size * scale,
                loss_fn=cross_entropy,
                name="pgd-training",
            ).x_adv
        return x_adv.detach()

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(model, x, y, epoch)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
