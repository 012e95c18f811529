"""The value every attack returns: adversarial inputs, per-example success and distance, and extras."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
"""A torch tensor or a numpy array: results come back in the container the input came in."""

SUCCESS_RATE_DEFINITION = (
    "fraction of the examples the model classified correctly before the attack on which the attack reached its "
    "goal (a wrong prediction; the target class when targeted)"
)
"""What "success rate" means in advlab: :attr:`AttackResult.success_rate`, ``advlab attack``'s result.json and the
evaluation reports (see :class:`AttackResult`)."""


@dataclass(frozen=True)
class AttackResult:
    """What an attack found (immutable: derive a changed copy with ``dataclasses.replace``).

    Attributes:
        x_adv: adversarial inputs, same shape/dtype/device (or numpy) as the input; always inside ball and box.
        success: per-example bool, recomputed by the framework on ``x_adv`` (targeted: ``argmax == target``).
        distance: per-example distance ``|x_adv - x|`` in the threat model's norm.
        labels: what success is measured against: the true labels (untargeted) or the targets (targeted;
            ``LeastLikely()`` resolved to a class per example). A torch tensor on the model's device.
        targeted: whether the goal was targeted.
        queries: per-example number of model queries, for query-based attacks (``None`` otherwise).
        loss_trace: mean loss per iteration where cheap to record (``None`` otherwise).
        logits: the model's logits on ``x_adv`` (torch, detached).
        info: attack-specific extras (e.g. C&W's best constant per example, FMN's ``min_distance``).
        correct: per-example bool: the model classifies the clean input correctly (its prediction equals the
            true label). These are the examples :attr:`success_rate` counts. ``None`` for results built by hand.

    Shape:
        x_adv: ``(N, ...)``; success, distance, labels, queries, correct: ``(N,)``; loss_trace: ``(steps,)``.

    Success rate, one definition everywhere:
        The **success rate** is the fraction of the examples the model classified correctly *before* the attack
        (``correct``) on which the attack reached its goal: a wrong prediction (untargeted), the target class
        (targeted, least-likely). Examples misclassified to begin with are left out of it, for every goal: an
        untargeted attack gets no credit for them, and a targeted attack is judged on the examples the model
        got right. :attr:`success_rate` here, ``attack_success_rate`` in the ``result.json`` of ``advlab
        attack``, and each stage's success rate in an evaluation report (``StageResult.success_rate``: the
        stage attacks only examples still robust, all of them correctly classified) are this number. Robust
        accuracy (correct and not fooled, over all examples) is the other side of it: ``robust accuracy =
        clean accuracy x (1 - success rate)`` for untargeted goals.
    """

    x_adv: ArrayLike
    success: ArrayLike
    distance: ArrayLike
    labels: torch.Tensor
    targeted: bool
    queries: ArrayLike | None = None
    loss_trace: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    correct: ArrayLike | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of the correctly classified examples on which the attack reached its goal (see the class).

        ``nan`` when no example was classified correctly; over all examples when ``correct`` is unknown.
        """
        success = _numpy(self.success).astype(bool)
        if self.correct is not None:
            success = success[_numpy(self.correct).astype(bool)]
        return float(success.mean()) if success.size else float("nan")

    def __len__(self) -> int:
        return len(self.success)


def _numpy(values: ArrayLike) -> np.ndarray:
    return np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
