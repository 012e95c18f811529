"""Model-based optimisation: the input a model finds most typical of each class (standard vs robust models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.attacks import pgd
from advlab.explain._common import batched_logits
from advlab.goals import Targeted
from advlab.models import Classifier
from advlab.threat import ThreatModel


@dataclass
class ClassVisualization:
    """One optimised input per class.

    Attributes:
        x: shape ``(num_classes, ...)``, inside the box.
        confidence: the model's softmax probability of the intended class on each, shape ``(num_classes,)``.
        start: the starting image (shape ``(1, ...)``).
        radius: the L2 radius of the search around the start.
    """

    x: torch.Tensor
    confidence: torch.Tensor
    start: torch.Tensor
    radius: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence.tolist(),
            "radius": self.radius,
            "min_confidence": float(self.confidence.min()),
        }


def visualize_classes(
    model: Classifier,
    start: torch.Tensor,
    num_classes: int,
    *,
    radius: float | None = None,
    steps: int = 100,
) -> ClassVisualization:
    """For each class, maximise its probability by targeted PGD in a large L2 ball around ``start``.

    On a standard model the result is adversarial noise: the class is reached by a pattern no human reads as
    that class. On an adversarially trained model the same optimisation draws recognisable class features,
    because the robust model's gradients are aligned with perceptible features (Tsipras et al. 2019,
    arXiv:1805.12152; Santurkar et al. 2019, arXiv:1906.09453).

    Args:
        model: the classifier.
        start: the starting point, shape ``(1, ...)``, e.g. the mean training image.
        num_classes: number of classes.
        radius: L2 radius of the search (default ``0.25 * sqrt(d)``).
        steps: PGD steps.

    Returns:
        ClassVisualization.

    Examples:
        >>> viz = visualize_classes(robust_model, train.x.mean(0, keepdim=True), 10)
    """
    steps = validation.check_int("steps", steps, minimum=1)
    num_classes = validation.check_int("num_classes", num_classes, minimum=2)
    d = start[0].numel()
    radius = 0.25 * d**0.5 if radius is None else validation.check_float("radius", radius, minimum=0.0, strict_min=True)
    x0 = start.expand(num_classes, *start.shape[1:]).contiguous()
    target = torch.arange(num_classes, device=start.device)
    dummy = (target + 1) % num_classes  # targeted PGD only needs a label different from the target
    threat = ThreatModel("l2", radius, model.bounds)
    res = pgd(
        model, x0, dummy, threat, goal=Targeted(target), steps=steps, step_size=2.5 * radius / steps, random_start=False
    )
    x_adv = torch.as_tensor(res.x_adv)
    probs = torch.softmax(batched_logits(model, x_adv), 1)
    conf = probs[torch.arange(num_classes), target].cpu()
    return ClassVisualization(x_adv.cpu(), conf, start.cpu(), radius)
