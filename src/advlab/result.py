"""The value every attack returns: adversarial inputs, per-example success and distance, and extras."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
"""A torch tensor or a numpy array: results come back in the container the input came in."""


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

    Shape:
        x_adv: ``(N, ...)``; success, distance, labels, queries: ``(N,)``; loss_trace: ``(steps,)``.
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

    @property
    def success_rate(self) -> float:
        """Fraction of examples on which the attack reached its goal."""
        s = self.success
        return float(np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s).mean())

    def __len__(self) -> int:
        return len(self.success)
