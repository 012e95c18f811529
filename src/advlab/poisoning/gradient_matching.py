"""Gradient-matching clean-label poisons ("Witches' Brew", Geiping et al., ICLR 2021).

A targeted attack for training from scratch: the attacker perturbs a small budget of training images of the
*adversarial class* (the class the targets should be given; their labels stay correct) inside an ``linf`` ball of
radius ``eps`` so that the training gradient on the poisons points where the *adversarial* gradient of the
targets points. Training on the poisons then does what training on the mislabelled targets would do.

With ``theta`` the parameters of a clean model the attacker trained, ``G_t = grad_theta L(f(x_t), y_adv)`` and
``G_p(Delta) = grad_theta sum_i L(f(x_i + Delta_i), y_i)`` over the poisons, the alignment loss is

    ``B(Delta) = 1 - <G_p(Delta), G_t> / (||G_p(Delta)|| ||G_t||)``,

minimised by signed Adam (Adam on the sign of ``grad_Delta B``, learning rate ``0.1 eps``, divided by 10 at 3/8,
5/8 and 7/8 of the steps) with the perturbations projected onto the ball and the input box after each step
(:meth:`advlab.threat.ThreatModel.project`), from ``restarts`` random starts of which the lowest ``B`` is kept
(the paper: 240 steps, 8 restarts, eps 16/255, a budget of 1% of the training set). With ``augment`` (the paper's
differentiable data augmentation, on by default) each step takes ``G_p`` on random translations and horizontal
flips of the poisons (:func:`~advlab.poisoning.augment.random_crop_flip`), so the poisons keep their effect on the
augmented batches a victim trains on (``Training(augment=True)``, random crops with padding 4 and flips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.models import device_of
from advlab.poisoning.augment import PADDING, random_crop_flip
from advlab.poisoning.base import PoisonedData, check_rate, check_target, choose, generator_of, number_of_classes
from advlab.threat import ThreatModel

EPS = 16 / 255
"""The paper's ``linf`` budget on CIFAR-10."""
LR_FACTOR = 0.1
"""Signed Adam's learning rate as a share of ``eps`` (the paper's ``tau = 0.1``)."""
MILESTONES = (3 / 8, 5 / 8, 7 / 8)
"""Where the learning rate is divided by 10, as shares of the steps."""


def shift_of(x: torch.Tensor) -> int:
    """The largest translation of the crafting augmentation: 4 pixels on 32x32 images (side / 8, at least 1)."""
    return max(1, min(x.shape[-2:]) * PADDING // 32)


@dataclass(frozen=True)
class Alignment:
    """The cosine alignment of the poisons' training gradient with the targets' adversarial gradient.

    Attributes:
        model: the attacker's clean model.
        params: the parameters the gradients are taken with respect to.
        target_grad: ``G_t``, one tensor per parameter (detached).
    """

    model: nn.Module
    params: tuple[torch.Tensor, ...]
    target_grad: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, model: nn.Module, x_target: torch.Tensor, y_adversarial: torch.Tensor) -> Alignment:
        """The alignment towards the gradient of the targets labelled with the adversarial class."""
        params = tuple(p for p in model.parameters() if p.requires_grad)
        if not params:
            raise ValueError("model: has no parameter that requires grad; gradient matching needs its gradients")
        loss = nn.functional.cross_entropy(model(x_target), y_adversarial)
        grads = torch.autograd.grad(loss, params)
        return cls(model, params, tuple(g.detach() for g in grads))

    def loss(self, x: torch.Tensor, y: torch.Tensor, augment: torch.Generator | None = None) -> torch.Tensor:
        """``B = 1 - cos(G_p, G_t)`` for poisons ``x`` with labels ``y``, differentiable in ``x``.

        With a generator ``augment``, ``G_p`` is taken on a random crop and flip of each poison drawn from it
        (:func:`~advlab.poisoning.augment.random_crop_flip`, translations of up to :func:`shift_of` pixels): the
        paper's differentiable data augmentation, the gradient flowing back through it to ``x``.
        """
        if augment is not None:
            x = random_crop_flip(x, augment, padding=shift_of(x))
        loss = nn.functional.cross_entropy(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        dot = torch.stack([(g * t).sum() for g, t in zip(grads, self.target_grad, strict=True)]).sum()
        poison_norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
        target_norm = torch.stack([t.pow(2).sum() for t in self.target_grad]).sum().sqrt()
        return 1 - dot / (poison_norm * target_norm + 1e-12)


def brew(
    alignment: Alignment,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    restarts: int,
    generator: torch.Generator,
    augment: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """The poisons of lowest alignment loss over ``restarts`` runs of signed Adam (the paper's optimiser).

    Args:
        alignment: what to align with.
        x: the clean base images (the poisons' starting points).
        y: their (kept) labels.
        threat: the ``linf`` ball and box the poisons stay in.
        steps: signed-Adam steps per restart.
        restarts: random restarts.
        generator: draws the random starts (and the augmentations).
        augment: take every step's alignment loss on a fresh random crop and flip of the poisons
            (:meth:`Alignment.loss`); the restarts are still compared without augmentation.

    Returns:
        ``(poisons, losses)``: the best poisons and the alignment loss at every step of the best restart (on that
        step's augmentation when ``augment``), then its final loss without augmentation.
    """
    augmentation = generator if augment else None
    best, best_trace = x, [float("inf")]
    for _ in range(restarts):
        x_adv = threat.random_start(x, generator).requires_grad_(True)
        optimiser = torch.optim.Adam([x_adv], lr=LR_FACTOR * threat.eps)
        milestones = [int(m * steps) for m in MILESTONES]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
        trace = []
        for _ in range(steps):
            loss = alignment.loss(x_adv, y, augmentation)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv.grad = grad.sign()
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                x_adv.copy_(threat.project(x_adv, x))
            trace.append(float(loss.detach()))
        final = float(alignment.loss(x_adv.detach().requires_grad_(True), y).detach())
        trace.append(final)
        if final < best_trace[-1]:
            best, best_trace = x_adv.detach(), trace
    return best, best_trace


def gradient_matching(
    model: nn.Module,
    train: Any,
    targets: torch.Tensor,
    adversarial_class: int,
    *,
    budget: float = 0.01,
    eps: float = EPS,
    steps: int = 240,
    restarts: int = 8,
    augment: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
) -> PoisonedData:
    """Witches' Brew poisons: perturbed adversarial-class images whose training gradient matches the targets'.

    ``round(budget * N)`` training images of ``adversarial_class`` are drawn at random and perturbed
    (:func:`brew`) so that training on them with their correct label pushes ``model``'s parameters the way
    training on ``targets`` labelled ``adversarial_class`` would. The victim trains from scratch on the poisoned
    set; the attack succeeds when it classifies the targets as ``adversarial_class``.

    Args:
        model: the attacker's clean model trained on the same task (the paper: same architecture as the victim).
        train: the clean training set (a pair ``(x, y)``, a Dataset...).
        targets: the target test images ``(T, C, H, W)`` (the paper: one).
        adversarial_class: the class the targets should be given (the poisons are drawn from it).
        budget: the share of the training set poisoned, in ``(0, 1]`` (the paper: 0.01).
        eps: the ``linf`` radius of the perturbations (the paper: 16/255).
        steps: signed-Adam steps per restart (the paper: 240).
        restarts: random restarts, the lowest alignment loss kept (the paper: 8).
        augment: the paper's differentiable data augmentation: each step's poison gradient is taken on random
            translations (up to 4 pixels on 32x32 images, side / 8) and horizontal flips of the poisons, so the
            poisons keep working on the augmented batches a victim trains on. Turn it off for data a victim
            would not flip (digits, text rendered as images).
        bounds: the input box.
        seed: seed of the rows drawn and of the random starts.

    Returns:
        The poisoned copy (labels unchanged, ``target = adversarial_class``); ``extra`` holds ``targets`` and
        ``alignment_loss`` (the best restart's loss after every step).

    Raises:
        ValueError: ``budget`` outside ``(0, 1]`` or larger than the adversarial class, ``adversarial_class``
            not a class, targets of another shape than the training inputs, or a setting out of range.

    Examples:
        >>> poisoned = gradient_matching(clean_model, (x_train, y_train), x_test[:1], adversarial_class=3)
        >>> victim = train_from_scratch(poisoned.x, poisoned.y)
    """
    x, y = validation.as_xy(train, "train")
    budget = check_rate(budget, name="budget")
    adversarial_class = check_target(adversarial_class, number_of_classes(y), name="adversarial_class")
    validation.check_float("eps", eps, minimum=0.0, strict_min=True)
    validation.check_int("steps", steps, minimum=1)
    validation.check_int("restarts", restarts, minimum=1)
    low, high = validation.check_bounds("bounds", bounds)
    targets = validation.as_tensor("targets", targets).to(x.dtype)
    if targets.dim() != x.dim() or tuple(targets.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"targets: expected a batch of inputs (T, {', '.join(map(str, x.shape[1:]))}) like the training data, "
            f"got shape {tuple(targets.shape)}"
        )
    generator = generator_of(seed)
    among = torch.nonzero(y == adversarial_class).flatten()
    rows = choose(max(1, round(budget * x.shape[0])), among, generator, name="budget")
    device = device_of(model)
    labels = torch.full((targets.shape[0],), adversarial_class, dtype=torch.int64, device=device)
    alignment = Alignment.of(model, targets.to(device), labels)
    threat = ThreatModel("linf", eps, (low, high))
    bases, base_labels = x[rows].to(device), y[rows].to(device)
    poisons, trace = brew(
        alignment, bases, base_labels, threat, steps=steps, restarts=restarts, generator=generator, augment=augment
    )
    x_poisoned = x.clone()
    x_poisoned[rows] = poisons.to(x.device, x.dtype)
    settings = {
        "budget": budget,
        "eps": eps,
        "steps": steps,
        "restarts": restarts,
        "augment": augment,
        "adversarial_class": adversarial_class,
    }
    return PoisonedData(
        x=x_poisoned,
        y=y.clone(),
        indices=rows,
        original_labels=y[rows].clone(),
        attack="gradient_matching",
        settings=settings,
        seed=seed,
        target=adversarial_class,
        extra={"targets": targets, "alignment_loss": torch.tensor(trace, dtype=torch.float64)},
    )
