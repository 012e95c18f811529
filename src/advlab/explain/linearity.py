"""The model's logits along the FGSM direction (Goodfellow et al. 2014): how linear the response is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.explain._common import batched_logits, fgsm_direction
from advlab.models import Classifier


@dataclass
class LogitResponse:
    """Logits of one input moved by ``eps * sign(grad)`` for a range of ``eps``, and a linearity score.

    Attributes:
        eps: the L∞ step sizes, shape ``(num,)`` (negative values move against the gradient).
        logits: shape ``(num, num_classes)`` for the first input.
        label: its true class.
        r2: mean coefficient of determination of a straight-line fit per logit, over the analysed inputs
            (1.0 = perfectly linear response).
        r2_per_example: shape ``(n,)``.
    """

    eps: torch.Tensor
    logits: torch.Tensor
    label: int
    r2: float
    r2_per_example: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "r2_mean": self.r2,
            "r2_min": float(self.r2_per_example.min()),
            "n": int(self.r2_per_example.numel()),
            "eps_max": float(self.eps.max()),
        }


def _r2(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """R² of least-squares lines fitted to each column of ``values`` (shape (num, k)) against ``t``."""
    tc = t - t.mean()
    vc = values - values.mean(0, keepdim=True)
    slope = (tc[:, None] * vc).sum(0) / (tc @ tc)
    resid = vc - slope[None] * tc[:, None]
    ss_tot = (vc**2).sum(0).clamp_min(1e-12)
    return 1 - (resid**2).sum(0) / ss_tot


def logit_response(
    model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps_max: float = 0.5, num: int = 41
) -> LogitResponse:
    """Logits along ``x + eps * sign(grad)`` for ``eps`` in ``[-eps_max, eps_max]`` (not clipped to the box).

    Goodfellow et al. argue that adversarial examples exist because networks are too linear: along the FGSM
    direction the logits are nearly straight lines, so a small step per pixel adds up over many pixels.

    Args:
        model: the classifier.
        x: inputs, shape ``(n, ...)`` (the figure uses the first one; the score averages all).
        y: their labels.
        eps_max: largest step, in raw input units.
        num: points along the line.

    Returns:
        LogitResponse.

    References:
        Goodfellow, Shlens & Szegedy, arXiv:1412.6572, section 5 and figure 4.

    Examples:
        >>> resp = logit_response(model, x[:16], y[:16])
        >>> resp.r2   # close to 1 for ReLU networks
    """
    eps_max = validation.check_float("eps_max", eps_max, minimum=0.0, strict_min=True)
    num = validation.check_int("num", num, minimum=3)
    direction = fgsm_direction(model, x, y)
    eps = torch.linspace(-eps_max, eps_max, num, device=x.device)
    n = x.shape[0]
    points = x[None] + eps.view(-1, *([1] * x.dim())) * direction[None]  # (num, n, ...)
    logits = batched_logits(model, points.reshape(num * n, *x.shape[1:])).reshape(num, n, -1)
    r2 = torch.stack([_r2(logits[:, i].double(), eps.double()).mean() for i in range(n)]).float()
    return LogitResponse(eps.cpu(), logits[:, 0].cpu(), int(y[0]), float(r2.mean()), r2.cpu())
