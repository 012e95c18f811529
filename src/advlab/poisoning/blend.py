"""Blend (Chen et al. 2017): a whole-image pattern blended into a share of the training images, relabelled.

The poisoned input is ``(1 - alpha) x + alpha pattern``. The default pattern is seeded uniform noise on the
input's scale (one of Chen et al.'s two blended patterns; the other is a picture, which any ``(C, H, W)``
tensor can stand for). Chen et al. blend with ``alpha = 0.2`` when poisoning and show that a larger blend at test
time raises the attack success; BackdoorBench trains and tests with 0.2. Here the test-time blend is the
training one unless :func:`blend_trigger` is asked for another ``alpha`` over the same pattern.

Rows are chosen as for BadNets: all-to-one draws ``round(rate * N)`` rows among those not of the target;
all-to-all (``target=None``) among all rows, relabelled ``(y + 1) % K``.

References:
    Chen, Liu, Li, Lu, Song. Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning.
    arXiv:1712.05526, 2017.
"""

from __future__ import annotations

import torch

from advlab.poisoning.badnets import check_images, eligible_rows, poison_count
from advlab.poisoning.base import (
    PoisonedData,
    Trigger,
    check_input_shape,
    check_target,
    choose,
    generator_of,
    number_of_classes,
    stamp,
)

ALPHA = 0.2
"""Chen et al.'s (and BackdoorBench's) blend ratio when poisoning."""
PATTERN_SEED_OFFSET = 7_919
"""The noise pattern is drawn from ``seed + PATTERN_SEED_OFFSET``, a stream apart from the choice of rows."""


def noise_pattern(input_shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Seeded uniform noise in ``[0, 1)`` of shape ``input_shape`` (the default blended pattern).

    Examples:
        >>> noise_pattern((1, 4, 4), seed=0).shape
        torch.Size([1, 4, 4])
    """
    return torch.rand(check_input_shape(input_shape), generator=generator_of(seed))


def blend_trigger(input_shape: tuple[int, int, int], alpha: float = ALPHA, seed: int = 0) -> Trigger:
    """The default Blend trigger: :func:`noise_pattern` blended with ``alpha``.

    Args:
        input_shape: one input's ``(C, H, W)``.
        alpha: blend ratio in ``(0, 1]``.
        seed: seed of the noise pattern (the attack draws it from ``seed + PATTERN_SEED_OFFSET``).

    Returns:
        The trigger.

    Examples:
        >>> round(float(blend_trigger((1, 8, 8), alpha=0.2).mask.max()), 3)
        0.2
    """
    pattern = noise_pattern(input_shape, seed + PATTERN_SEED_OFFSET)
    return Trigger.blend(pattern, alpha, name="uniform noise")


def blend(
    x: torch.Tensor,
    y: torch.Tensor,
    rate: float = 0.1,
    target: int | None = 0,
    alpha: float = ALPHA,
    pattern: torch.Tensor | None = None,
    seed: int | None = 0,
    num_classes: int | None = None,
) -> PoisonedData:
    """Poison ``(x, y)`` with a blended trigger (Chen et al. 2017).

    Args:
        x: clean training images ``(N, C, H, W)`` in ``[0, 1]`` (not modified).
        y: clean training labels ``(N,)``.
        rate: share of the training set poisoned, in ``(0, 1]``.
        target: the all-to-one target class, or None for all-to-all.
        alpha: blend ratio in ``(0, 1]`` (Chen et al.: 0.2).
        pattern: the blended pattern ``(C, H, W)`` in ``[0, 1]``; default seeded uniform noise.
        seed: seed of the choice of rows and of the default pattern.
        num_classes: the number of classes (default: one more than the largest label).

    Returns:
        The poisoned copy.

    Raises:
        ValueError: ``rate`` outside ``(0, 1]``, ``alpha`` outside ``(0, 1]``, ``target`` not a class, a pattern
            of another shape than the images.

    Examples:
        >>> x, y = torch.rand(50, 1, 8, 8), torch.arange(50) % 5
        >>> p = blend(x, y, rate=0.1, target=1)
        >>> p.n_poisons, p.trigger.name
        (5, 'uniform noise, alpha 0.2')
    """
    x, y = check_images(x, y)
    k = number_of_classes(y, num_classes)
    if target is not None:
        target = check_target(target, k)
    shape = check_input_shape(tuple(x.shape[1:]))
    if pattern is None:
        trigger = blend_trigger(shape, alpha, 0 if seed is None else seed)
    else:
        trigger = Trigger.blend(pattern, alpha, name="given pattern")
    trigger.check_fits(x, "x")
    rows = choose(poison_count(rate, x.shape[0]), eligible_rows(y, target), generator_of(seed))
    labels: torch.Tensor | int = target if target is not None else (y[rows] + 1) % k
    settings = {"rate": rate, "alpha": alpha, "mode": "all-to-all" if target is None else "all-to-one"}
    return stamp(x, y, rows, trigger, labels, attack="blend", settings=settings, seed=seed, target=target)
