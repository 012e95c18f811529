"""Helpers shared by the explain analyses: the FGSM direction and batched logits."""

from __future__ import annotations

import torch

from advlab.attacks.base import loss_and_grad
from advlab.losses import cross_entropy
from advlab.models import Classifier, predict


def fgsm_direction(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sign(grad_x CE(model(x), y))`` for a batch, computed in attack mode."""
    with model.attack_mode(warn_train_mode=False):
        _, grad, _ = loss_and_grad(model, x, y, False, cross_entropy)
    return grad.sign()


def batched_logits(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for a large batch of points (:func:`advlab.models.predict`), in eval mode (mode restored)."""
    with model.attack_mode(warn_train_mode=False):
        return predict(model, x, batch_size=batch_size, logits=True)


def is_image(input_shape: tuple[int, ...] | None) -> bool:
    """Whether examples are images (C, H, W) with 1 or 3 channels, so image figures make sense."""
    return input_shape is not None and len(input_shape) == 3 and input_shape[0] in (1, 3) and min(input_shape[1:]) >= 4
