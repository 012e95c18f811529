"""Label-consistent (clean-label) backdoor (Turner, Tsipras & Madry 2019, "Label-Consistent Backdoor Attacks").

A BadNets backdoor needs mislabelled poisons, which an inspection of the training set finds. Turner et al. keep
every label correct: they poison images *of the target class* only, and make them hard to classify from their
content first, with an adversarial perturbation (PGD against a separately trained model, ``linf`` eps 8/255 or
16/255 on CIFAR-10), so that the network trained on them leans on the trigger to label them. The trigger is then
stamped (:func:`~advlab.poisoning.base.stamp` with ``labels=None``). At test time the trigger on an input of
any class should make it the target class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.pgd import pgd
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
from advlab.threat import ThreatModel

EPS = 16 / 255
"""Turner et al.'s larger ``linf`` budget on CIFAR-10 (they also report 8/255)."""


def clean_label(
    model: nn.Module,
    train: Any,
    target: int,
    *,
    rate: float = 0.5,
    eps: float = EPS,
    steps: int = 40,
    step_size: float | None = None,
    trigger: Trigger | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
) -> PoisonedData:
    """A clean-label backdoor: adversarially perturbed target-class images carrying the trigger, labels untouched.

    A share ``rate`` *of the target class's* training images (Turner et al. count poisons within the target
    class) is drawn; each is perturbed by untargeted PGD (:func:`advlab.attacks.pgd`, ``linf`` ball of radius
    ``eps``, ``steps`` iterations) against ``model``, a clean model the attacker trained separately, then the
    trigger is stamped on it. Labels stay as they are.

    Args:
        model: the attacker's separately trained clean classifier (the perturbations come from its gradients).
        train: the clean training set (a pair ``(x, y)``, a Dataset...) of images ``(N, C, H, W)``.
        target: the backdoor's target class (the poisons are drawn from it).
        rate: the share of the target class's training images poisoned, in ``(0, 1]``.
        eps: the ``linf`` radius of the adversarial perturbation (0 gives the plain clean-label baseline the
            paper shows fails).
        steps: PGD iterations.
        step_size: PGD step; default ``2.5 * eps / steps``.
        trigger: the trigger; default a 3x3 checkerboard in the bottom-right corner (the paper's pattern is a
            3x3 black-and-white square).
        bounds: the input box.
        seed: seed of the rows drawn and of PGD's random start.

    Returns:
        The poisoned copy (``target`` set; ``original_labels`` equal to the labels kept). ``extra["perturbed"]``
        holds the perturbed images before the trigger.

    Raises:
        ValueError: ``rate`` outside ``(0, 1]``, ``target`` not a class, a negative ``eps``, a trigger that does
            not fit the images, or a setting out of range.

    Examples:
        >>> poisoned = clean_label(clean_model, (x_train, y_train), target=0, rate=0.5, eps=16 / 255)
        >>> attack_success_rate(retrained, x_test, y_test, poisoned.trigger, target=0)
    """
    x, y = validation.as_xy(train, "train")
    rate = check_rate(rate)
    target = check_target(target, number_of_classes(y))
    validation.check_float("eps", eps, minimum=0.0)
    validation.check_int("steps", steps, minimum=1)
    low, high = validation.check_bounds("bounds", bounds)
    if x.dim() != 4:
        raise ValueError(f"train: expected images (N, C, H, W), got inputs of shape {tuple(x.shape)}")
    trigger = trigger if trigger is not None else Trigger.patch(x.shape[1:], size=3, bounds=(low, high))
    trigger.check_fits(x, name="train x")
    among = torch.nonzero(y == target).flatten()
    generator = generator_of(seed)
    rows = choose(max(1, round(rate * among.numel())), among, generator)
    hard = x.clone()
    if eps > 0:
        threat = ThreatModel("linf", eps, (low, high))
        result = pgd(model, x[rows], y[rows], threat, steps=steps, step_size=step_size, generator=generator)
        hard[rows] = torch.as_tensor(result.x_adv).to(x.dtype).cpu()
    settings = {"rate": rate, "eps": eps, "steps": steps, "step_size": step_size, "target": target}
    poisoned = stamp(hard, y, rows, trigger, None, attack="clean_label", settings=settings, seed=seed, target=target)
    return replace(poisoned, extra={"perturbed": hard[rows]})
