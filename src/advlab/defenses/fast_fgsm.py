"""Fast adversarial training of Wong, Rice & Kolter 2020: FGSM from a random start, cyclic learning rate,
and the catastrophic-overfitting check with early stopping."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from advlab import validation
from advlab.attacks.iterative import iterate
from advlab.defenses._adversarial import AdversarialTrainer, OptionalStep, crafting, fgsm_from
from advlab.defenses.base import Schedule, register_defense
from advlab.losses import cross_entropy
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat, NonNegativeInt, OneOf, PositiveInt, Range

log = logging.getLogger(__name__)

ON_OVERFIT = ("stop", "warn")
CHECK_SEED = 2020
"""Seed of the random starts of the held-out PGD check (fixed, so epochs are compared on equal terms)."""
STEP_FACTOR = 1.25
"""Default FGSM step ``STEP_FACTOR * eps`` (the paper's alpha)."""
CHECK_STEP_FACTOR = 2.5
"""The held-out PGD check steps by ``CHECK_STEP_FACTOR * eps / check_steps``."""


@register_defense("fast-fgsm")
class FastFGSMTraining(AdversarialTrainer):
    """FGSM adversarial training from a uniform random start ("fast is better than free").

    Each batch: ``delta ~ U(-eps, eps)``, one signed-gradient step of ``alpha = 1.25 eps``, projection onto the
    eps-ball and box, then the weights are updated on ``x + delta``. The learning rate follows the cyclic
    schedule by default. After each epoch, the PGD accuracy on a fixed held-out batch is recorded as
    ``history_[i]["check_pgd_accuracy"]``; catastrophic overfitting shows as a sudden collapse of that number
    (FGSM accuracy stays high while PGD accuracy drops to near 0). When it falls more than ``overfit_drop``
    below the best value seen so far (Wong et al.'s rule: an absolute drop of 0.2), ``on_overfit="stop"``
    restores the weights of the best epoch and stops (the paper's early stopping); ``"warn"`` warns and goes
    on. An absolute drop, not a ratio, so that the first epochs, when the check accuracy is still near 0 and
    moves by noise, do not count as a collapse.

    Args:
        eps: training radius (Wong et al.: 0.3 on MNIST, 8/255 on CIFAR-10).
        step_size: FGSM step; default ``1.25 * eps`` (the paper's alpha).
        check_size: held-out examples used for the PGD check (first ones of ``val``, else of the training set).
        check_steps: PGD steps of the check (the paper uses PGD-10 with a step of ``eps / 4``... here
            ``2.5 * eps / check_steps``).
        overfit_drop: collapse threshold, an absolute drop below the best check accuracy so far, in ``(0, 1]``.
        on_overfit: ``"stop"`` or ``"warn"``.
        schedule: learning-rate schedule, default ``"cyclic"``.
        **settings: ``norm``, ``eps_rampup``, ``bounds`` and the :class:`~advlab.defenses.base.Trainer` settings.

    Raises:
        ValueError: a setting out of range.

    References:
        Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020,
        arXiv:2001.03994.

    Examples:
        >>> FastFGSMTraining(eps=0.3, epochs=10, lr=5e-3).fit(model, train, test).history_[-1]["check_pgd_accuracy"]
    """

    step_size: float
    check_size: int
    check_steps: int
    overfit_drop: float
    on_overfit: str

    def __init__(
        self,
        *,
        eps: NonNegativeFloat = 0.3,
        step_size: OptionalStep = None,
        check_size: NonNegativeInt = 256,
        check_steps: PositiveInt = 10,
        overfit_drop: Annotated[float, Range(0, 1, strict_min=True)] = 0.2,
        on_overfit: Annotated[str, OneOf(ON_OVERFIT)] = "stop",
        schedule: Schedule = "cyclic",
        **settings: Any,
    ) -> None:
        super().__init__(eps=eps, schedule=schedule, **settings)
        if step_size is None:
            self.step_size = STEP_FACTOR * self.eps

    # ------------------------------------------------------------------ training
    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> FastFGSMTraining:
        source = val if val is not None else train
        xc, yc = validation.as_xy(source, "val" if val is not None else "train", labels="optional")
        self._check = (xc[: self.check_size], None if yc is None else yc[: self.check_size])
        self._good: dict[str, torch.Tensor] = {}
        self._best = -1.0
        self._good_epoch = 0
        super().fit(model, train, val, **kwargs)
        return self

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        threat = self.threat_at(epoch)
        if threat.eps > 0:
            start = threat.random_start(x, self.generator_at(epoch, x.device))
            x_adv = fgsm_from(model, x, start, y, threat, self.step_size * threat.eps / self.threat.eps)
        else:
            x_adv = x
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    # ------------------------------------------------------------------ catastrophic overfitting
    def heldout_pgd_accuracy(self, model: Classifier) -> float | None:
        """PGD accuracy at the full training eps on the held-out check batch (``None`` when there is none)."""
        x, y = self._check
        if y is None or x.shape[0] == 0 or self.threat.eps == 0:
            return None
        x, y = x.to(model.device), y.to(model.device)
        gen = torch.Generator(device=x.device).manual_seed(CHECK_SEED)
        with crafting(model):
            x0 = self.threat.random_start(x, gen)
            success = iterate(
                model,
                x,
                x0,
                y,
                False,
                self.threat,
                steps=self.check_steps,
                step_size=CHECK_STEP_FACTOR * self.threat.eps / self.check_steps,
                loss_fn=cross_entropy,
                name="overfit-check",
            ).success
        return 1.0 - float(success.float().mean())

    def end_epoch(self, model: Classifier, epoch: int, record: dict[str, Any]) -> bool:
        acc = self.heldout_pgd_accuracy(model)
        if acc is None:
            return False
        record["check_pgd_accuracy"] = acc
        collapsed = self._best - acc > self.overfit_drop
        if collapsed:
            record["catastrophic_overfitting"] = True
            msg = (
                f"fast-fgsm: catastrophic overfitting at epoch {epoch + 1}: held-out PGD accuracy {acc:.3f} is more than "
                f"{self.overfit_drop} below the best so far ({self._best:.3f})"
            )
            if self.on_overfit == "warn":
                validation.warn(msg)
                return False
            if self._good:
                model.module.load_state_dict(self._good)
                record["restored_epoch"] = int(self._good_epoch)
            log.warning("%s; restoring the weights of epoch %d and stopping", msg, self._good_epoch)
            return True
        if acc >= self._best:
            self._best = acc
            self._good = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
            self._good_epoch = epoch + 1
        return False

    def extra_state(self) -> dict[str, torch.Tensor]:
        out = {f"good.{k}": v for k, v in self._good.items()}
        out["best"] = torch.tensor([self._best, float(self._good_epoch)])
        return out

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self._good = {k[5:]: v.clone() for k, v in tensors.items() if k.startswith("good.")}
        if "best" in tensors:
            self._best, good_epoch = (float(v) for v in tensors["best"])
            self._good_epoch = int(good_epoch)
