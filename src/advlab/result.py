"""The value every attack returns: adversarial inputs, per-example success and distance, and extras."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class AttackResult:
    """What an attack found.

    Attributes:
        x_adv: adversarial inputs, same shape/dtype/device (or numpy) as the input; always inside ball and box.
        success: per-example bool, recomputed by the framework on ``x_adv`` (targeted: ``argmax == target``).
        distance: per-example distance ``|x_adv - x|`` in the threat model's norm.
        queries: per-example number of model queries, for query-based attacks (``None`` otherwise).
        loss_trace: mean loss per iteration where cheap to record (``None`` otherwise).
        logits: the model's logits on ``x_adv`` (torch, detached).
        info: attack-specific extras (e.g. C&W's best constant per example).

    Shape:
        x_adv: ``(N, ...)``; success, distance, queries: ``(N,)``; loss_trace: ``(steps,)``.
    """

    x_adv: Any
    success: Any
    distance: Any
    queries: Any = None
    loss_trace: Any = None
    logits: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of examples on which the attack reached its goal."""
        s = self.success
        return float(np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s).mean())

    def __len__(self) -> int:
        return len(self.success)
