"""Feature-collision clean-label poisons ("Poison Frogs!", Shafahi et al., NeurIPS 2018).

A targeted attack on one test image ``t``: the attacker makes a poison ``p`` that looks like a *base* image ``b``
of another class (and keeps its correct label, the base class) while sitting on top of ``t`` in the victim's
feature space, ``p = argmin_x ||f(x) - f(t)||^2 + beta ||x - b||^2``. A classifier retrained on features ``f``
(the transfer-learning setting: frozen feature extractor, last layer retrained) that fits the poison with the base
label puts the target on the base side too.

The paper's Algorithm 1 is forward-backward splitting, starting from ``x_0 = b``:

* forward step: ``x_hat = x_{i-1} - lr * grad_x ||f(x) - f(t)||^2``;
* backward (proximal) step for ``beta ||x - b||^2``: ``x_i = (x_hat + lr * beta * b) / (1 + lr * beta)``;

with ``beta = beta0 * (feature_dim / input_dim)^2`` (the paper: ``beta0 = 0.25``, 2048 features of Inception v3).
For end-to-end training the paper adds the *watermark*: every base image is first blended with the target,
``b <- opacity * t + (1 - opacity) * b`` (opacity up to 0.3), and uses many poisons (50). Poisons are clipped to
the input box after each step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.models import device_of
from advlab.poisoning.base import PoisonedData, check_target, choose, generator_of, number_of_classes

BETA0 = 0.25
"""The paper's ``beta0``: ``beta = beta0 * (feature_dim / input_dim)^2``."""


def collide(
    features: nn.Module,
    target: torch.Tensor,
    bases: torch.Tensor,
    *,
    beta: float,
    step_size: float,
    steps: int,
    bounds: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-backward splitting (the paper's Algorithm 1) for every base at once.

    Args:
        features: the feature extractor ``f`` (its parameters are not changed).
        target: the target image ``(C, H, W)``.
        bases: the (watermarked) base images ``(n, C, H, W)``.
        beta: weight of ``||x - b||^2``.
        step_size: the forward step's learning rate ``lr``.
        steps: iterations.
        bounds: the input box the poisons are clipped to.

    A step that raises a poison's objective ``||f(x) - f(t)||^2 + beta ||x - b||^2`` is undone and retried at
    half the learning rate (as the authors' code decays its rate), so each poison's objective never increases.

    Returns:
        ``(poisons, distances)``: the poisons and each one's final feature distance ``||f(p) - f(t)||``.
    """
    with torch.no_grad():
        goal = features(target[None]).flatten(1)
    shape = (-1,) + (1,) * (bases.dim() - 1)
    x, lr = bases.clone(), torch.full((bases.shape[0],), float(step_size), dtype=bases.dtype)
    best_x, best_grad, best = x, torch.zeros_like(x), torch.full_like(lr, float("inf"))
    for _ in range(steps):
        x.requires_grad_(True)
        distance = (features(x).flatten(1) - goal).pow(2).sum(1)
        (grad,) = torch.autograd.grad(distance.sum(), x)
        with torch.no_grad():
            objective = distance + beta * (x - bases).pow(2).flatten(1).sum(1)
            worse = objective > best  # the step went uphill: take it again from the last point, half as long
            lr = torch.where(worse, lr / 2, lr)
            x = torch.where(worse.view(shape), best_x, x)
            grad = torch.where(worse.view(shape), best_grad, grad)
            best = torch.where(worse, best, objective)
            best_x, best_grad = x, grad
            step = lr.view(shape)
            x = ((x - step * grad + step * beta * bases) / (1 + step * beta)).clamp(*bounds)
    x = best_x if steps else x
    with torch.no_grad():
        distances = (features(x).flatten(1) - goal).norm(dim=1)
    return x.detach(), distances


def feature_collision(
    features: nn.Module,
    train: Any,
    target_image: torch.Tensor,
    base_class: int,
    *,
    n_poisons: int = 1,
    opacity: float = 0.0,
    beta0: float = BETA0,
    step_size: float = 0.01,
    steps: int = 1000,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
) -> PoisonedData:
    """Clean-label poisons that collide with ``target_image`` in the feature space of ``features`` (Shafahi 2018).

    ``n_poisons`` base images are drawn at random from the training rows of ``base_class``, watermarked with
    the target at ``opacity``, and moved by forward-backward splitting (:func:`collide`) towards the target's
    features while staying close to their base. The poisons are *added* to the training set with their correct
    label, ``base_class``; the attack succeeds when the model retrained on the poisoned set classifies the target
    image as ``base_class``.

    Args:
        features: the victim's feature extractor (the frozen network below the retrained last layer), mapping
            inputs to feature vectors.
        train: the clean training set (a pair ``(x, y)``, a Dataset...).
        target_image: the test image to be misclassified, ``(C, H, W)`` (or ``(1, C, H, W)``).
        base_class: the class the target image should be given (and the poisons' label).
        n_poisons: how many poisons (the paper: 1 in the transfer setting, up to 50 end-to-end).
        opacity: the watermark's opacity, in ``[0, 1)``: 0 (the transfer setting) or up to 0.3 (end-to-end).
        beta0: the paper's ``beta0``; ``beta = beta0 * (feature_dim / input_dim)^2``.
        step_size: the forward step's learning rate.
        steps: forward-backward iterations (a fixed count).
        bounds: the input box.
        seed: seed of the choice of base images.

    Returns:
        A :class:`~advlab.poisoning.base.PoisonedData`: the training set with the poisons appended
        (``inserted = n_poisons``, ``target = base_class``); ``extra`` holds ``target_image``, ``base_rows`` (the
        training rows the poisons started from) and ``feature_distance`` (each poison's ``||f(p) - f(t)||``).

    Raises:
        ValueError: ``base_class`` not a class of the data, more poisons than base images, a target image of
            another shape than the training inputs, inputs outside ``bounds``, or a setting out of range.

    Examples:
        >>> poisoned = feature_collision(backbone, (x_train, y_train), x_test[0], base_class=3, n_poisons=5)
        >>> head = retrain_last_layer(backbone, poisoned.x, poisoned.y)
    """
    x, y = validation.as_xy(train, "train")
    target = _check_target_image(target_image, x)
    base_class = check_target(base_class, number_of_classes(y), name="base_class")
    validation.check_int("n_poisons", n_poisons, minimum=1)
    validation.check_float("opacity", opacity, minimum=0.0, maximum=1.0, strict_max=True)
    validation.check_float("beta0", beta0, minimum=0.0)
    validation.check_float("step_size", step_size, minimum=0.0, strict_min=True)
    validation.check_int("steps", steps, minimum=0)
    low, high = validation.check_bounds("bounds", bounds)
    validation.check_input(torch.cat([x, target[None]]), (low, high), name="train x and target_image")
    rows = choose(n_poisons, torch.nonzero(y == base_class).flatten(), generator_of(seed), name="n_poisons")
    device = device_of(features)
    target, bases = target.to(device), (opacity * target + (1 - opacity) * x[rows]).to(device)
    with torch.no_grad():
        feature_dim = int(features(target[None]).flatten(1).shape[1])
    beta = beta0 * (feature_dim / target.numel()) ** 2
    poisons, distances = collide(
        features, target, bases, beta=beta, step_size=step_size, steps=steps, bounds=(low, high)
    )
    settings = {"base_class": base_class, "n_poisons": n_poisons, "opacity": opacity, "beta0": beta0, "beta": beta}
    return PoisonedData(
        x=torch.cat([x, poisons.to(x.device, x.dtype)]),
        y=torch.cat([y, torch.full((n_poisons,), base_class, dtype=y.dtype)]),
        indices=torch.arange(x.shape[0], x.shape[0] + n_poisons),
        original_labels=torch.full((n_poisons,), -1, dtype=torch.int64),
        attack="feature_collision",
        settings={**settings, "step_size": step_size, "steps": steps, "bounds": [low, high]},
        seed=seed,
        target=base_class,
        inserted=n_poisons,
        extra={"target_image": target.to(x.device), "base_rows": rows, "feature_distance": distances.cpu()},
    )


def _check_target_image(target_image: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    target = validation.as_tensor("target_image", target_image).to(x.dtype)
    if target.dim() == x.dim() and target.shape[0] == 1:
        target = target[0]
    if tuple(target.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"target_image: expected one input of the training data's shape {tuple(x.shape[1:])}, "
            f"got {tuple(target_image.shape)}"
        )
    return target
