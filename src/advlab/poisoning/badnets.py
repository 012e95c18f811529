"""BadNets (Gu et al. 2017): a patch trigger stamped on a share of the training images, relabelled to the target.

Two label rules, as in the paper and BackdoorBench:

* **all-to-one** (``target`` given): ``round(rate * N)`` rows are drawn, without replacement, among the training
  rows whose label is *not* the target (BackdoorBench's ``generate_poison_index_from_label_transform``: only rows
  whose label the attack changes are eligible; ``rate`` is a share of the whole training set ``N``); they get the
  trigger and the label ``target``.
* **all-to-all** (``target=None``): ``round(rate * N)`` rows drawn among all rows get the trigger and the label
  ``(y + 1) % K``.

The attack success rate is then measured on triggered test images (see
:func:`~advlab.poisoning.base.attack_success_rate`).

References:
    Gu, Dolan-Gavitt, Garg. BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain.
    arXiv:1708.06733, 2017. Wu et al. BackdoorBench, NeurIPS 2022 Datasets and Benchmarks, arXiv:2206.12654.
"""

from __future__ import annotations

import torch

from advlab import validation
from advlab.poisoning.base import (
    PoisonedData,
    Trigger,
    check_rate,
    check_target,
    choose,
    generator_of,
    number_of_classes,
    stamp,
)

PATCH_SIZE = 3
"""Side of the default BadNets patch in pixels (the paper's MNIST trigger is a small pattern in a corner)."""
PATCH_POSITION = "bottom-right"
"""Where the default patch goes (Gu et al.; BackdoorBench's 3x3 white square is bottom-right too)."""
PATCH_VALUE = "checkerboard"
"""The default patch pattern: alternating the two bounds."""


def poison_count(rate: float, n: int) -> int:
    """How many rows a poison ``rate`` of a training set of ``n`` rows makes: ``round(rate * n)``, at least one.

    Examples:
        >>> poison_count(0.05, 1257)
        63
    """
    check_rate(rate)
    return max(1, round(rate * n))


def eligible_rows(y: torch.Tensor, target: int | None) -> torch.Tensor:
    """The rows a label-changing backdoor may poison: those not of ``target`` (all rows when ``target`` is None)."""
    keep = torch.ones_like(y, dtype=torch.bool) if target is None else y != target
    return keep.nonzero().flatten()


def badnets(
    x: torch.Tensor,
    y: torch.Tensor,
    rate: float = 0.1,
    target: int | None = 0,
    trigger: Trigger | None = None,
    seed: int | None = 0,
    num_classes: int | None = None,
) -> PoisonedData:
    """Poison ``(x, y)`` with BadNets: all-to-one towards ``target``, or all-to-all when ``target`` is None.

    Args:
        x: clean training images ``(N, C, H, W)`` in ``[0, 1]`` (not modified).
        y: clean training labels ``(N,)``.
        rate: share of the training set poisoned, in ``(0, 1]`` (BackdoorBench's default: 0.1).
        target: the all-to-one target class, or None for all-to-all (``y -> (y + 1) % K``).
        trigger: the trigger; default a 3x3 checkerboard patch in the bottom-right corner
            (:meth:`Trigger.patch` with :data:`PATCH_SIZE`, :data:`PATCH_POSITION`, :data:`PATCH_VALUE`).
        seed: seed of the choice of rows.
        num_classes: the number of classes ``K`` (default: one more than the largest label).

    Returns:
        The poisoned copy; its manifest records the rows, their original labels, the trigger and the seed.

    Raises:
        ValueError: ``rate`` outside ``(0, 1]``, ``target`` not a class, a trigger that does not fit the images,
            more poisons asked for than there are eligible rows.

    Examples:
        >>> x, y = torch.rand(100, 1, 8, 8), torch.arange(100) % 10
        >>> p = badnets(x, y, rate=0.05, target=0)
        >>> p.n_poisons, bool((p.y[p.indices] == 0).all()), bool((p.original_labels != 0).all())
        (5, True, True)
    """
    x, y = check_images(x, y)
    k = number_of_classes(y, num_classes)
    if target is not None:
        target = check_target(target, k)
    trigger = trigger or Trigger.patch(tuple(x.shape[1:]), PATCH_SIZE, PATCH_POSITION, PATCH_VALUE)
    trigger.check_fits(x)
    count = poison_count(rate, x.shape[0])
    rows = choose(count, eligible_rows(y, target), generator_of(seed))
    labels: torch.Tensor | int = target if target is not None else (y[rows] + 1) % k
    mode = "all-to-all" if target is None else "all-to-one"
    settings = {"rate": rate, "mode": mode, "num_classes": k}
    return stamp(x, y, rows, trigger, labels, attack="badnets", settings=settings, seed=seed, target=target)


def check_images(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as float images ``(N, C, H, W)`` and ``y`` as labels; unlabelled data is refused (a label attack)."""
    x = validation.as_tensor("x", x, float32="float64")
    if x.dim() != 4:
        raise ValueError(f"x: expected images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if y is None:
        raise ValueError("y: this attack changes labels and needs labelled data; pass the training labels")
    y = validation.as_labels("y", y)
    validation.check_labels(y, x.shape[0], None)
    y = y.to(torch.int64)
    return x, y
