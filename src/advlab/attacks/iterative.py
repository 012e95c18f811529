"""The iterative gradient loop shared by BIM/ILLC, PGD and MI-FGSM (one loop, three papers' settings).

Kept lean because it is the hot path: one forward and one backward per step, the step, the projection,
and a per-example record of the last iterate that reached the goal (read off the logits the step computes
anyway, so it costs no extra forward pass). The forward on the last iterate, which tells whether it reached the
goal, also serves the attack boundary's success check (:attr:`Iterate.evaluated`), which then makes no forward
of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from advlab import devices
from advlab.attacks.base import loss_and_grad, warn_once_zero_grad
from advlab.goals import is_success
from advlab.losses import LossFn
from advlab.threat import ThreatModel, flatten, per_example

GradientFn = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]"]
"""A replacement of the plain loss gradient: ``(x_adv, g) -> (loss, grad, logits)``, with ``g`` the accumulated
momentum (``None`` without momentum) and ``logits`` those of ``x_adv`` itself, or ``None`` when the forward pass saw
a transformed input (then the step records no success)."""


class Iterate(NamedTuple):
    """What :func:`iterate` returns.

    Attributes:
        x_adv: per example, the final iterate, or the last iterate that reached the goal when the final one did not.
        success: whether ``x_adv`` reached the goal.
        loss: the loss at the final iterate.
        trace: the mean loss per step.
        evaluated: ``(point, logits)``: the final iterate and its logits, from a forward without gradients (what
            :attr:`advlab.attacks.base.AttackOutput.evaluated` takes).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    trace: torch.Tensor
    evaluated: tuple[torch.Tensor, torch.Tensor]


def iterate(
    model: torch.nn.Module,
    x: torch.Tensor,
    x_init: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    loss_fn: LossFn,
    momentum: float | None = None,
    gradient: GradientFn | None = None,
    name: str = "attack",
) -> Iterate:
    """Run ``steps`` projected steepest-ascent steps from ``x_init``.

    With ``momentum`` (MI-FGSM), the step direction comes from ``g = mu * g + grad / |grad|_1``. With ``gradient``
    (the transfer-boosting attacks), ``grad`` is what it returns instead of the plain loss gradient.

    Returns:
        An :class:`Iterate`: for each example the final iterate, or the last iterate that reached the goal when the
        final one did not; success at that point, the loss at the final iterate (the one compared across restarts),
        the mean loss per step, and the final iterate with its logits.
    """
    x_adv = x_init.detach()
    x_found = x_adv
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    trace = torch.empty(steps, device=x.device)
    g = torch.zeros_like(x) if momentum is not None else None
    logits: torch.Tensor | None
    for i in range(steps):
        if gradient is None:
            loss, grad, logits = loss_and_grad(model, x_adv, labels, targeted, loss_fn)
        else:
            loss, grad, logits = gradient(x_adv, g)
        if i == 0:
            warn_once_zero_grad(grad, name)
        trace[i] = loss.mean()
        if logits is not None:
            succ = is_success(logits, labels, targeted)
            x_found = torch.where(per_example(succ, x), x_adv, x_found)
            found |= succ
        if g is not None and momentum is not None:
            l1 = flatten(grad).abs().sum(1).clamp_min(1e-12)
            g = momentum * g + grad / per_example(l1, grad)
            grad = g
        x_adv = threat.project(x_adv + step_size * threat.ascent_direction(grad, x_adv), x)
    with torch.no_grad(), devices.own_layout():  # the boundary's success check: as the module itself computes it
        logits = model(x_adv)
        loss = loss_fn(logits, labels, targeted)
    succ = is_success(logits, labels, targeted)
    keep_found = found & ~succ
    x_out = torch.where(per_example(keep_found, x), x_found, x_adv)
    return Iterate(x_out, succ | found, loss, trace, (x_adv, logits))


def best_of_restarts(
    run_once,  # Callable[[torch.Tensor], tuple[x_adv, success, loss, trace, ...]] on a subset index
    x: torch.Tensor,
    restarts: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``run_once`` ``restarts`` times, each time only on examples not yet successful.

    Keeps, per example, the first successful result, or else the one with the highest loss.

    Returns:
        ``(x_adv, trace)``, with ``trace`` the loss trace of the first restart.
    """
    n = x.shape[0]
    x_best = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    first_trace = None
    for _ in range(restarts):
        idx = (~done).nonzero().flatten()
        if idx.numel() == 0:
            break
        x_adv, succ, loss, trace = run_once(idx)[:4]
        if first_trace is None:
            first_trace = trace
        better = succ | (loss > best_loss[idx])
        sel = idx[better]
        x_best[sel] = x_adv[better]
        best_loss[sel] = loss[better]
        done[idx[succ]] = True
    return x_best, first_trace if first_trace is not None else torch.empty(0)
