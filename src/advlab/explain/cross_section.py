"""Class regions in a 2-D plane through an input (Warde-Farley & Goodfellow 2016): adversarial vs random planes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.explain._common import batched_logits, fgsm_direction
from advlab.models import Classifier


@dataclass
class CrossSection:
    """Predicted class over the plane ``x + a * u + b * v`` (``u``, ``v`` orthonormal in L2).

    Attributes:
        classes: predicted class per grid point, shape ``(resolution, resolution)``, indexed ``[b, a]``.
        coords: the ``a`` (and ``b``) values, shape ``(resolution,)``, in L2 units.
        label: the true class of ``x``.
        kind: ``"adversarial"`` (``u`` is the normalised FGSM direction) or ``"random"`` (``u`` random).
        flip_distance: smallest ``a >= 0`` along ``u`` (with ``b = 0``) where the prediction leaves ``label``
            (``inf`` when it never does inside the span; ``None`` in ``to_dict``).
        true_class_fraction: fraction of the plane predicted as ``label``.
    """

    classes: torch.Tensor
    coords: torch.Tensor
    label: int
    kind: str
    flip_distance: float
    true_class_fraction: float

    def to_dict(self) -> dict[str, Any]:
        flip = None if self.flip_distance == float("inf") else self.flip_distance  # JSON has no infinity
        return {
            "kind": self.kind,
            "label": self.label,
            "flip_distance": flip,
            "true_class_fraction": self.true_class_fraction,
            "span": float(self.coords.max()),
        }


def cross_section(
    model: Classifier,
    x: torch.Tensor,
    y: int,
    *,
    kind: str = "adversarial",
    span: float | None = None,
    resolution: int = 41,
    generator: torch.Generator | None = None,
) -> CrossSection:
    """Evaluate the model on a grid in the plane spanned by an adversarial (or random) and a random direction.

    Warde-Farley & Goodfellow found that along the adversarial direction the class changes within a short,
    nearly linear distance, while random directions cross far fewer class boundaries: adversarial examples are
    not rare pockets but broad half-spaces. The grid is not clipped to the input box: it shows the model's
    function around ``x``, as in the paper.

    Args:
        model: the classifier.
        x: one input, shape ``(1, ...)``.
        y: its true class.
        kind: ``"adversarial"`` (first axis along the FGSM direction) or ``"random"``.
        span: half-width of the grid in L2 units (default: the L2 length of an L∞ = 0.3 FGSM step).
        resolution: grid points per axis.
        generator: for the random direction(s).

    Returns:
        CrossSection.

    References:
        Warde-Farley & Goodfellow, "Adversarial Perturbations of Deep Neural Networks", 2016;
        Goodfellow et al., arXiv:1412.6572.

    Examples:
        >>> cs = cross_section(model, x[:1], int(y[0]), kind="adversarial")
        >>> cs.flip_distance
    """
    validation.check_choice("kind", kind, ("adversarial", "random"))
    resolution = validation.check_int("resolution", resolution, minimum=3)
    d = x[0].numel()
    if span is None:
        span = 0.3 * d**0.5
    span = validation.check_float("span", span, minimum=0.0, strict_min=True)
    gen = generator or torch.Generator().manual_seed(0)
    rand = lambda: torch.randn(x.shape[1:], generator=gen).to(x.device).flatten()  # noqa: E731
    if kind == "adversarial":
        u = fgsm_direction(model, x, torch.tensor([y], device=x.device)).flatten().float()
        if not bool(u.any()):
            u = rand()
    else:
        u = rand()
    u = u / u.norm()
    v = rand()
    v = v - (v @ u) * u
    v = v / v.norm()
    coords = torch.linspace(-span, span, resolution, device=x.device)
    bb, aa = torch.meshgrid(coords, coords, indexing="ij")
    points = x.flatten()[None] + aa.reshape(-1, 1) * u[None] + bb.reshape(-1, 1) * v[None]
    classes = batched_logits(model, points.reshape(-1, *x.shape[1:])).argmax(1).reshape(resolution, resolution)
    centre = resolution // 2
    row = classes[centre, centre:]
    flips = (row != y).nonzero().flatten()
    flip = float(coords[centre + int(flips[0])]) if flips.numel() else float("inf")
    return CrossSection(classes.cpu(), coords.cpu(), int(y), kind, flip, float((classes == y).double().mean()))
