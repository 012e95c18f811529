"""Projected gradient on the convex relaxation of an L0 budget under feature constraints, then the fewest top changes that succeed."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, loss_and_grad, run_attack
from advlab.attacks.grosse import UNCONSTRAINED
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.losses import LossFn, LossSetting, get_loss
from advlab.result import AttackResult
from advlab.settings import PositiveFloat, PositiveInt
from advlab.threat import FeatureConstraints, ThreatModel, flatten, project_l1_ball

TIE_BREAK = 1e-3
"""Weight (in box widths) of the gradient's preference that ranks relaxed changes of nearly equal size."""
TINY = 1e-12  # guards the division by a gradient that may be zero


def relaxed_step(
    delta: torch.Tensor,
    grad: torch.Tensor,
    allowed: torch.Tensor,
    constraints: FeatureConstraints,
    room: torch.Tensor,
    *,
    step: float,
    budget: float,
) -> torch.Tensor:
    """One ascent step on the relaxed perturbation, projected back onto the constraints' convex hull.

    The hull of "at most ``budget`` binary changes, each in the allowed direction" is the set of ``delta`` with
    ``0 <= delta_j <= room_j`` (``room``: how far feature ``j`` can move in its direction), zero on the features that
    may not change, and ``|delta|_1 <= budget`` (in units of the box width). The step is a sign step; the projection
    onto the L1 ball is followed by the clamp into the box, which keeps it inside the ball.

    Args:
        delta: the relaxed perturbation ``(N, d)``.
        grad: the loss gradient ``(N, d)``.
        allowed: the features that may change ``(N, d)``.
        constraints: the direction of change.
        room: ``(low_room, high_room)`` per feature stacked as ``(2, N, d)``: how far each may go down and up.
        step: the step length (box units).
        budget: the L1 radius (the L0 budget times the box width).
    """
    delta = (delta + step * grad.sign()) * allowed
    if constraints.direction == "increase":
        delta = delta.clamp_min(0)
    elif constraints.direction == "decrease":
        delta = delta.clamp_max(0)
    delta = project_l1_ball(delta, budget)
    return torch.maximum(torch.minimum(delta, room[1]), -room[0])


def fewest_changes(
    model: nn.Module,
    x: torch.Tensor,
    delta: torch.Tensor,
    grad: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    binary: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The point with the ``j`` largest relaxed changes made, for the smallest ``j <= budget`` that succeeds.

    Changes of (nearly) equal size, which the box makes common (every saturated feature has changed by its whole
    room), are ranked by how much the loss gradient ``grad`` at the last iterate still favours them
    (:data:`TIE_BREAK`). Binary features take the far end of the box (the change's sign says which); others take the
    relaxed value. All ``j`` are scored in one batched forward. An example that succeeds for no ``j`` keeps all
    ``budget`` changes.

    Returns:
        ``(x_adv, changes)``, flattened, and the ``j`` chosen per example.
    """
    xf = flatten(x)
    n, d = xf.shape
    budget = max(1, min(int(threat.eps), d))
    favour = grad * delta.sign() / (grad.abs().amax(dim=1, keepdim=True) + TINY)  # in [-1, 1]
    order = (delta.abs() + TIE_BREAK * threat.scale * favour).topk(budget, dim=1).indices  # (N, budget)
    picked = delta.gather(1, order)
    values = torch.where(picked > 0, threat.box[1], threat.box[0]) if binary else xf.gather(1, order) + picked
    values = torch.where(picked != 0, values, xf.gather(1, order))  # a zero change changes nothing
    ranks = torch.arange(budget, device=x.device)
    keep = ranks[None, :, None] >= ranks[None, None, :]  # (1, j, budget): candidate j makes the first j + 1
    cand = xf[:, None, :].repeat(1, budget, 1)
    cand.scatter_(
        2,
        order[:, None, :].expand(-1, budget, -1),
        torch.where(keep, values[:, None, :], xf.gather(1, order)[:, None, :]),
    )
    with torch.no_grad():
        logits = model(cand.reshape((n * budget,) + x.shape[1:]))
    ok = is_success(logits, labels.repeat_interleave(budget), targeted).view(n, budget)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(labels, budget - 1))
    return cand[torch.arange(n, device=x.device), first], first + 1


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    loss_fn: LossFn,
) -> AttackOutput:
    constraints = threat.constraints or UNCONSTRAINED
    width = threat.scale  # the box width (one standard deviation where the box is infinite)
    xf = flatten(x)
    allowed = constraints.allowed(x, threat.box)
    lo, hi = threat.box
    room = torch.stack([xf - lo, hi - xf])  # inf where the box is
    delta = torch.zeros_like(xf)
    trace = []
    grad = torch.zeros_like(xf)
    for _ in range(steps):
        loss, g, _logits = loss_and_grad(model, (xf + delta).view(x.shape), labels, targeted, loss_fn)
        trace.append(loss.mean())
        grad = flatten(g)
        delta = relaxed_step(delta, grad, allowed, constraints, room, step=step_size * width, budget=threat.eps * width)
    x_adv, changes = fewest_changes(model, x, delta, grad, labels, targeted, threat, constraints.binary)
    return AttackOutput(x_adv.view(x.shape), loss_trace=torch.stack(trace), info={"changes": changes})


@register_attack(
    "BinaryPGD", norms=("l0",), paper="Grosse et al. 2016, arXiv:1606.04435 (comparison)", constraints=True
)
def binary_pgd(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 50,
    step_size: PositiveFloat = 0.1,
    loss: LossSetting = "ce",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """PGD on the convex relaxation of an L0 budget under feature constraints, rounded to the fewest changes that work.

    The projected-gradient comparison to :func:`~advlab.attacks.grosse.grosse`. The set "at most ``k`` changes of
    binary features, each in the allowed direction, only of mutable features" has as its convex hull the
    perturbations ``delta`` with each ``delta_j`` between 0 and its room in the allowed direction, zero on immutable
    features, and ``|delta|_1 <= k``. Sign steps of ``step_size`` (a fraction of the box width) ascend the loss in that
    hull for ``steps`` iterations from ``x``. The relaxed point is then made discrete: the features are ranked by
    ``|delta_j|``, the candidates with the top ``j = 1..k`` changes made (binary features set to the far end of the
    box) are scored in one forward, and the smallest ``j`` that succeeds is kept (all ``k`` when none does). The
    framework's projection onto the constraints leaves the result as it is.

    Without constraints any feature may change in either direction and non-binary features keep their relaxed value.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``; 0/1 under binary constraints.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("l0", k, (0, 1), constraints=FeatureConstraints(...))``.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: gradient steps on the relaxation.
        step_size: sign-step length as a fraction of the box width.
        loss: ``"ce"``, ``"margin"``, ``"dlr"`` or a callable ``(logits, labels, targeted) -> (N,)``.
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``loss_trace`` (mean loss per step) and ``info["changes"]`` (features changed).

    Raises:
        ValueError: as :func:`~advlab.attacks.grosse.grosse`.

    References:
        Grosse et al., arXiv:1606.04435 (the threat model); Madry et al., arXiv:1706.06083 (PGD).

    Examples:
        >>> threat = ThreatModel("l0", 20, (0.0, 1.0), constraints=FeatureConstraints(direction="increase"))
        >>> result = binary_pgd(detector, x_malware, y_malware, threat, steps=50)
    """
    return run_attack(_core, model, x, y, threat, goal=goal, steps=steps, step_size=step_size, loss_fn=get_loss(loss))


BinaryPGD = binary_pgd.config
