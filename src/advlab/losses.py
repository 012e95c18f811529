"""Losses that attacks maximise, written so that larger always means closer to the attack's goal.

Each takes ``(logits, labels, targeted)``; for untargeted goals ``labels`` are the true labels, for targeted
goals the targets. Per-example losses have shape ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from advlab.settings import Check

LossFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example cross-entropy, negated for targeted goals (ascend toward the target)."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, kappa: float = float("inf")) -> torch.Tensor:
    """Carlini-Wagner margin: ``max_{j != t} z_j - z_t`` (untargeted) or ``z_t - max_{j != t} z_j`` (targeted).

    Clipped from above at ``kappa`` (the confidence parameter); ``inf`` leaves it unclipped.
    """
    z_label = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    m = z_label - other if targeted else other - z_label
    return m.clamp(max=kappa) if kappa != float("inf") else m


def dlr(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Difference of Logits Ratio of Croce & Hein 2020 (arXiv:2003.01690), shift and scale invariant.

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``. Targeted:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` where ``labels`` are the targets and the true labels
    are not needed because ``z_y`` is replaced by the best non-target logit (the standard formulation
    uses the true label; callers needing that use :func:`dlr_targeted`).
    """
    sorted_z, _ = logits.sort(dim=1)
    if not targeted:
        z_y = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
        return -(z_y - other) / (sorted_z[:, -1] - sorted_z[:, -3] + 1e-12)
    z_t = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -(other - z_t) / (sorted_z[:, -1] - 0.5 * (sorted_z[:, -3] + sorted_z[:, -4]) + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR of Croce & Hein 2020: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``."""
    sorted_z, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (sorted_z[:, -1] - 0.5 * (sorted_z[:, -3] + sorted_z[:, -4]) + 1e-12)


def logit(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Logit loss of Zhao et al. 2021 (arXiv:2012.11207): the target's logit ``z_t`` (targeted), or ``-z_y``.

    Unlike cross-entropy it does not saturate once the source model is fooled, so the iterations go on enlarging
    the margin, which is what makes the examples transfer (above all for targeted transfer, with many steps).
    """
    z = logits.gather(1, labels[:, None]).squeeze(1)
    return z if targeted else -z


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "margin": margin, "dlr": dlr, "logit": logit}
"""Loss names accepted by the ``loss=`` argument of gradient attacks."""


def get_loss(name: str | LossFn) -> LossFn:
    """Look up a loss by name (``"ce"``, ``"margin"``, ``"dlr"``, ``"logit"``) or pass a callable through."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)} or a callable, got {name!r}")
    return LOSSES[name]


def check_loss(name: str, value: Any) -> str | LossFn:
    """``value`` unchanged if it is a loss name of :data:`LOSSES` or a callable, else ``ValueError`` naming ``name``."""
    if callable(value) or (isinstance(value, str) and value in LOSSES):
        return value
    raise ValueError(
        f"{name}: expected one of {sorted(LOSSES)} or a callable (logits, labels, targeted) -> (N,), got {value!r}"
    )


LossSetting = Annotated[str | LossFn, Check(check_loss)]
"""The annotation of an attack's ``loss`` setting: a name of :data:`LOSSES` or a callable."""
