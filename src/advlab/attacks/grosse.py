"""Grosse et al.'s malware attack (2016): greedy addition of the feature whose forward derivative most raises the target score."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack, warn_once_zero_grad
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.losses import margin
from advlab.result import AttackResult
from advlab.settings import OneOf
from advlab.threat import FeatureConstraints, ThreatModel, flatten

UNCONSTRAINED = FeatureConstraints(binary=False, direction="both")
"""What the attacks on binary features assume without constraints: any feature may move, to either end of the box."""


def target_values(
    grad: torch.Tensor, constraints: FeatureConstraints, box: tuple[torch.Tensor | float, torch.Tensor | float]
) -> torch.Tensor:
    """The value each feature would be set to: the end of the box the gradient (or the direction) points at.

    Args:
        grad: the forward derivative of the target score, ``(N, d)``.
        constraints: the direction of change (``"increase"``: the high end; ``"decrease"``: the low end; ``"both"``:
            the end the gradient climbs towards).
        box: ``(low, high)``, floats or ``(N, d)`` tensors (a range around ``x`` where the box is infinite:
            :meth:`~advlab.threat.ThreatModel.box_around`).

    Examples:
        >>> target_values(torch.tensor([[0.5, -0.5]]), UNCONSTRAINED, (0.0, 1.0))
        tensor([[1., 0.]])
    """
    low, high = (torch.as_tensor(end, dtype=grad.dtype, device=grad.device).expand_as(grad) for end in box)
    if constraints.direction == "increase":
        return high.clone()
    if constraints.direction == "decrease":
        return low.clone()
    return torch.where(grad > 0, high, low)


def aimed_at(clean: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The class whose score the attack raises: the target, or (untargeted) the one ranked next after the true label."""
    return labels if targeted else clean.scatter(1, labels[:, None], -math.inf).argmax(dim=1)


def target_score(logits: torch.Tensor, target: torch.Tensor, jacobian: str) -> torch.Tensor:
    """The score whose forward derivative guides the attack: ``F_t`` (softmax) or the margin ``Z_t - max_{j != t} Z_j``.

    Args:
        logits: ``(N, C)``.
        target: the class aimed at, ``(N,)``.
        jacobian: ``"probs"`` or ``"margin"``.
    """
    if jacobian == "probs":
        return logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1)
    return margin(logits, target, True)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    jacobian: str,
) -> AttackOutput:
    n, d = x.shape[0], x[0].numel()
    constraints = threat.constraints or UNCONSTRAINED
    with torch.no_grad():
        clean = model(x)
    target = aimed_at(clean, labels, targeted)
    xf = flatten(x).clone()
    allowed = constraints.allowed(x, threat.box)  # features that may still change (each changes at most once)
    active = ~is_success(clean, labels, targeted)
    changes = torch.zeros(n, dtype=torch.long, device=x.device)
    for i in range(min(int(threat.eps), d)):  # one feature per iteration
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        xa = xf[idx].requires_grad_(True)
        logits = model(xa.view((-1,) + x.shape[1:]))
        (grad,) = torch.autograd.grad(target_score(logits, target[idx], jacobian).sum(), xa)
        if i == 0:
            warn_once_zero_grad(grad, "grosse")
        value = target_values(grad, constraints, threat.box_around(xf[idx], threat.scale))
        gain = (grad * (value - xa.detach())).masked_fill(~allowed[idx], -math.inf)
        best_gain, best = gain.max(dim=1)
        move = (best_gain > 0) & ~is_success(logits.detach(), labels[idx], targeted)
        active[idx[~move]] = False  # reached the goal, or no allowed feature raises the target score
        rows, cols = idx[move], best[move]
        xf[rows, cols] = value[move, cols]
        allowed[rows, cols] = False
        changes[rows] += 1
    return AttackOutput(xf.view(x.shape), info={"target": target, "changes": changes})


@register_attack("Grosse", norms=("l0",), paper="Grosse et al. 2016, arXiv:1606.04435", constraints=True)
def grosse(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    jacobian: Annotated[str, OneOf(("probs", "margin"))] = "probs",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """Grosse et al.'s attack: add, one at a time, the allowed feature whose forward derivative most raises the target.

    The paper's Algorithm 1, batched. Each iteration computes the forward derivative of the target class's score,
    ``dF_t/dx`` (one backward pass for the batch), and changes the one feature with the largest first-order gain
    ``dF_t/dx_j * (v_j - x_j)`` among those it may change, where ``v_j`` is the value the feature would take. Under
    the threat model's :class:`~advlab.threat.FeatureConstraints` (the paper's setting: binary features, 0 -> 1 only,
    a mask of features that may be added) ``v_j = 1`` and only mutable features still at 0 count; without
    constraints any feature may move to the end of the box its derivative climbs towards. Each feature changes at
    most once. An example stops when it is misclassified (reaches the target), when no allowed feature has a
    positive gain, or after ``eps`` changes (the L0 budget).

    Goals: the paper's setting is untargeted on malware (the target is the other class of a binary detector: benign).
    Untargeted, the target is the class the model ranks highest after the true label on the clean input, and any
    wrong class counts as success.

    On a linear model (logistic regression) the gains are exact and additive, so the greedy order is the optimal one:
    it finds an adversarial example within ``k`` changes whenever one exists (the tests check it against a brute-force
    search). On a network the derivative is a local guide and the greedy can miss subsets that a search would find.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``; 0/1 under binary constraints.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("l0", k, (0, 1), constraints=FeatureConstraints(...))``; ``k`` is the most features
            that may change.
        goal: ``None`` (untargeted, the paper's setting), ``Targeted(target)`` or ``LeastLikely()``.
        jacobian: ``"probs"`` differentiates the target's softmax output ``F_t`` (the paper's forward derivative);
            ``"margin"`` the logit margin ``Z_t - max_{j != t} Z_j``, which a saturated softmax does not flatten. For a
            two-class detector both rank the features alike (``dF_t = F_t F_o d(Z_t - Z_o)``) where ``F`` is not
            saturated.
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``info["target"]`` (the class aimed at) and ``info["changes"]`` (features changed).

    Raises:
        ValueError: on a norm other than ``"l0"``, non-binary inputs under binary constraints, a budget above the
            number of features, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Grosse, Papernot, Manoharan, Backes, McDaniel, "Adversarial Perturbations Against Deep Neural Networks for
        Malware Classification", arXiv:1606.04435 (ESORICS 2017).

    Examples:
        >>> threat = ThreatModel("l0", 20, (0.0, 1.0), constraints=FeatureConstraints(direction="increase"))
        >>> result = grosse(detector, x_malware, y_malware, threat)
        >>> result.success.float().mean()  # share of malware now classified benign
    """
    return run_attack(_core, model, x, y, threat, goal=goal, jacobian=jacobian)


Grosse = grosse.config
