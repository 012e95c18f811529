"""Input-gradient amplitudes of a model, e.g. to compare a model with its distilled or robust version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab.attacks.base import loss_and_grad
from advlab.losses import cross_entropy
from advlab.models import Classifier
from advlab.threat import norm_of


@dataclass
class GradientAmplitudes:
    """Per-example norms of ``grad_x CE`` and all per-feature absolute values.

    Attributes:
        l1, l2: per-example gradient norms, shape ``(n,)``.
        values: ``|grad|`` of every feature of every example, flattened.
        zero_fraction: fraction of examples whose gradient is exactly zero (a masking symptom).
    """

    l1: torch.Tensor
    l2: torch.Tensor
    values: torch.Tensor
    zero_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "l1_median": float(self.l1.median()),
            "l2_median": float(self.l2.median()),
            "l2_mean": float(self.l2.mean()),
            "zero_fraction": self.zero_fraction,
            "n": int(self.l1.numel()),
        }


def gradient_amplitudes(
    model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250
) -> GradientAmplitudes:
    """Amplitude of the cross-entropy's input gradient per example and per feature.

    Defensive distillation at high temperature makes these amplitudes vanish (Papernot et al. 2016), which
    stops gradient attacks that use the softmax output without making the model robust: C&W's logit loss
    still succeeds (Carlini & Wagner 2016, arXiv:1607.04311). Comparing two models' distributions shows this.

    Args:
        model: the classifier.
        x: inputs.
        y: their labels.
        batch_size: examples per backward pass.

    Returns:
        GradientAmplitudes.

    Examples:
        >>> a, b = gradient_amplitudes(model, x, y), gradient_amplitudes(distilled, x, y)
        >>> a.l2.median() / b.l2.median()
    """
    grads = []
    with model.attack_mode(warn_train_mode=False):
        for i in range(0, x.shape[0], batch_size):
            _, g, _ = loss_and_grad(model, x[i : i + batch_size], y[i : i + batch_size], False, cross_entropy)
            grads.append(g)
    g = torch.cat(grads)
    l1, l2 = norm_of(g, "l1").cpu(), norm_of(g, "l2").cpu()
    return GradientAmplitudes(l1, l2, g.abs().flatten().cpu(), float((l1 == 0).double().mean()))
