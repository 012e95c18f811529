"""Adversarial perturbations versus random noise and corruption of the same size ("not noise")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.attacks import PGD, attack_in_batches
from advlab.explain._common import batched_logits
from advlab.models import Classifier
from advlab.threat import ThreatModel, norm_of


@dataclass
class PerturbationComparison:
    """Accuracy under perturbations of comparable size, with their measured norms.

    Attributes:
        rows: one dict per perturbation kind: ``name``, ``accuracy``, ``linf`` and ``l2`` (mean norms).
        eps: the L∞ radius used.
    """

    rows: list[dict[str, Any]]
    eps: float

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "rows": self.rows}


def compare_perturbations(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 250,
) -> PerturbationComparison:
    """Accuracy on clean inputs, under PGD at L∞ ``eps``, and under non-adversarial changes of equal size.

    The comparisons: uniform random signs ``±eps`` per pixel (the same L∞ and L2 norm as FGSM, the largest the
    ball allows), Gaussian noise rescaled per example to the adversarial example's L2 norm, and a brightness
    change of ``+eps`` (the same L∞ norm, a corruption). All are clipped to the input box. A model that loses
    little accuracy to these but collapses under PGD shows that adversarial examples are not noise: they are
    a few specific directions.

    Args:
        model: the classifier.
        x: inputs, ``(n, ...)``; y: labels.
        eps: the L∞ radius.
        steps: PGD steps.
        seed: for the noise and PGD's random start.
        batch_size: attack batch size.

    Returns:
        PerturbationComparison.

    References:
        Goodfellow et al., arXiv:1412.6572; Szegedy et al., arXiv:1312.6199; Fawzi et al., arXiv:1608.08967.

    Examples:
        >>> cmp = compare_perturbations(model, x, y, eps=0.3)
        >>> [(r["name"], r["accuracy"]) for r in cmp.rows]
    """
    eps = validation.check_float("eps", eps, minimum=0.0, strict_min=True)
    threat = ThreatModel("linf", eps, model.bounds)
    gen = torch.Generator().manual_seed(seed)
    adv = torch.as_tensor(
        attack_in_batches(PGD(steps=steps), model, x, y, threat, batch_size=batch_size, seed=seed).x_adv
    )
    adv_l2 = norm_of(adv - x, "l2")
    signs = (torch.randint(0, 2, x.shape, generator=gen).to(x) * 2 - 1) * eps
    gauss = torch.randn(x.shape, generator=gen).to(x)
    gauss = gauss * (adv_l2 / norm_of(gauss, "l2").clamp_min(1e-12)).view(-1, *([1] * (x.dim() - 1)))
    candidates = {
        "clean": x,
        f"PGD-{steps} (adversarial)": adv,
        "random signs ±eps": threat.clip_box(x + signs),
        "Gaussian noise, same L2 as PGD": threat.clip_box(x + gauss),
        "brightness +eps": threat.clip_box(x + eps),
    }
    rows = []
    for name, xp in candidates.items():
        acc = float((batched_logits(model, xp).argmax(1) == y).double().mean())
        rows.append(
            {
                "name": name,
                "accuracy": acc,
                "linf": float(norm_of(xp - x, "linf").mean()),
                "l2": float(norm_of(xp - x, "l2").mean()),
            }
        )
    return PerturbationComparison(rows, eps)
