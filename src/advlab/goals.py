"""Attack goals as values: untargeted (move away from the true label), targeted, or least-likely class.

A goal is passed to an attack, never set as a mode. Internally every attack works on the pair
``(labels, targeted)`` that :meth:`Goal.resolve` returns: for untargeted goals ``labels`` are the true labels
and the attack succeeds when ``argmax != labels``; for targeted goals they are the targets and the attack
succeeds when ``argmax == labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlab import validation


class Goal:
    """Base class of attack goals."""

    targeted: bool = False
    name: str = "goal"

    def resolve(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        """Return the labels the attack's loss uses (true labels or targets) for this batch.

        Args:
            model: the classifier (in attack mode).
            x: the clean batch.
            y: the true labels.
            num_classes: the model's number of classes, when known (targets are checked against it).
        """
        raise NotImplementedError

    def subset(self, index: torch.Tensor) -> Goal:
        """The goal restricted to the examples at ``index`` (for batching and cascades)."""
        return self


@dataclass(frozen=True)
class Untargeted(Goal):
    """Any wrong prediction counts as success."""

    targeted = False
    name = "untargeted"

    def resolve(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        return y


@dataclass(frozen=True, eq=False)
class Targeted(Goal):
    """Success means the model predicts ``target`` (one class index per example).

    Examples:
        >>> result = pgd(model, x, y, threat, goal=Targeted((y + 1) % 10))
    """

    target: Any
    targeted = True
    name = "targeted"

    def resolve(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        target = self.target
        if isinstance(target, np.ndarray):
            target = torch.from_numpy(target)
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target: expected a tensor or array of class indices, got {type(target).__name__}")
        target = target.to(y.device)
        validation.check_target(target, y, num_classes or getattr(model, "num_classes", None))
        return target.long()

    def subset(self, index: torch.Tensor) -> Goal:
        target = self.target
        if isinstance(target, np.ndarray):
            target = torch.from_numpy(target)
        return Targeted(target[index.to(target.device)])


@dataclass(frozen=True)
class LeastLikely(Goal):
    """Target the class the model finds least likely on the clean input (Kurakin et al. 2016, ILLC)."""

    targeted = True
    name = "least-likely"

    def resolve(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmin(dim=1)


def is_success(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example success: ``argmax == labels`` when targeted, ``argmax != labels`` otherwise."""
    pred = logits.argmax(dim=1)
    return pred == labels if targeted else pred != labels


def as_goal(goal: Goal | None) -> Goal:
    """``None`` means untargeted."""
    if goal is None:
        return Untargeted()
    if not isinstance(goal, Goal):
        raise TypeError(
            f"goal: expected advlab.Untargeted(), advlab.Targeted(target) or advlab.LeastLikely(), "
            f"got {type(goal).__name__}"
        )
    return goal
