"""The box-constrained L-BFGS attack of Szegedy et al. (2013): minimise ``c |r|_2^2 + loss(x + r)`` in the box, with a line search over c."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.result import AttackResult
from advlab.settings import PositiveFloat, PositiveInt
from advlab.threat import ThreatModel, flatten

log = logging.getLogger(__name__)

CONST_GROWTH = 10.0
GTOL = 1e-6
"""L-BFGS-B stops once every coordinate's projected gradient is below this (scipy's ``gtol``)."""


def _loss_f(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The paper's ``loss_f``: cross-entropy of the target, or (untargeted) of "any class but the true one".

    Untargeted, ``-log(1 - p_y) = logsumexp(z) - logsumexp_{j != y}(z_j)``: like the targeted loss it is
    bounded below and flattens once the goal is reached (minus the true label's cross-entropy would keep
    pulling toward the box corners, making the minimiser far larger than the boundary distance).
    """
    if targeted:
        return F.cross_entropy(logits, labels, reduction="none")
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)


def _minimise(
    model: nn.Module,
    xs: torch.Tensor,
    x64: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    c: torch.Tensor,
    box: Any,
    steps: int,
) -> Any:
    """One box-constrained L-BFGS-B run on ``c |r|_2^2 + loss_f(x + r)`` for every example at once, from ``x``.

    One objective for the whole batch: a sum of per-example terms in disjoint variables, so its minimiser is every
    example's own minimiser and one L-BFGS-B call serves the batch.
    """
    from scipy.optimize import minimize  # scipy comes with scikit-learn

    dev, dtype = xs.device, xs.dtype

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z).to(dev).view_as(x64).requires_grad_(True)
        logits = model(zt.to(dtype).view_as(xs))
        total = (c * (zt - x64).pow(2).sum(1) + _loss_f(logits, labels, targeted).double()).sum()
        (grad,) = torch.autograd.grad(total, zt)
        return float(total.detach()), grad.cpu().numpy().ravel()

    # ftol = 0: the relative-decrease test would look at the batch total, where one example's progress can hide
    # another's; stop on the per-coordinate projected gradient (gtol) or ``steps`` instead.
    start = x64.cpu().numpy().ravel()
    options = {"maxiter": steps, "ftol": 0.0, "gtol": GTOL}
    return minimize(objective, start, jac=True, method="L-BFGS-B", bounds=box, options=options)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    initial_const: float,
    binary_search_steps: int,
    steps: int,
) -> AttackOutput:
    from scipy.optimize import Bounds  # scipy comes with scikit-learn

    n, dev, dtype = x.shape[0], x.device, x.dtype
    low, high = threat.box
    with torch.no_grad():
        clean = model(x)
    todo = (~is_success(clean, labels, targeted)).nonzero().flatten()  # fooled already: r = 0 is the minimum
    best = x.clone()
    best_dist = torch.zeros(n, device=dev, dtype=torch.float64)
    best_dist[todo] = math.inf
    const = torch.full((n,), initial_const, device=dev, dtype=torch.float64)
    c_adv = torch.zeros(n, device=dev, dtype=torch.float64)  # largest c whose minimiser was adversarial
    c_fail = torch.full((n,), math.inf, device=dev, dtype=torch.float64)  # smallest c whose minimiser was not
    if todo.numel() == 0:
        return AttackOutput(best, info={"const": torch.full((n,), math.nan, device=dev, dtype=torch.float64)})
    xs, ls = x[todo], labels[todo]
    x64 = flatten(xs).double()
    box = Bounds(np.full(x64.numel(), low), np.full(x64.numel(), high))
    for step in range(binary_search_steps):
        c = const[todo]
        res = _minimise(model, xs, x64, ls, targeted, c, box, steps)
        z = torch.from_numpy(res.x).to(dev).view_as(x64)
        x_c = z.to(dtype).view_as(xs)
        with torch.no_grad():
            adv = is_success(model(x_c), ls, targeted)
        dist = (z - x64).norm(dim=1)
        better = adv & (dist < best_dist[todo])
        best[todo[better]] = x_c[better]
        best_dist[todo[better]] = dist[better]
        c_adv[todo] = torch.where(adv, torch.maximum(c_adv[todo], c), c_adv[todo])
        c_fail[todo] = torch.where(adv, c_fail[todo], torch.minimum(c_fail[todo], c))
        lo, hi = c_adv[todo], c_fail[todo]
        const[todo] = torch.where(
            torch.isinf(hi), c * CONST_GROWTH, torch.where(lo == 0, c / CONST_GROWTH, torch.sqrt(lo * hi))
        )
        log.debug("lbfgs search step %d: %d/%d adversarial (%s)", step, int(adv.sum()), len(todo), res.message)
    found_c = torch.where(c_adv > 0, c_adv, torch.full_like(c_adv, math.nan))
    return AttackOutput(best, info={"const": found_c})


@register_attack(
    "LBFGS",
    norms=("l2",),
    minimum_norm=True,
    paper="Szegedy et al. 2013, arXiv:1312.6199",
    renamed={"search_steps": "binary_search_steps", "max_iter": "steps"},
)
def lbfgs(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    initial_const: PositiveFloat = 1e-2,
    binary_search_steps: PositiveInt = 12,
    steps: PositiveInt = 100,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """The L-BFGS attack: box-constrained L-BFGS on ``c |r|_2^2 + loss_f(x + r)`` and a line search over ``c``.

    For a target ``t`` (the paper's setting) ``loss_f`` is the cross-entropy of ``t``; untargeted, it is the
    cross-entropy of "not the true label", ``-log(1 - p_y)``. ``x + r`` is kept in ``threat.bounds`` by L-BFGS-B's bound
    constraints (``scipy.optimize.minimize(method="L-BFGS-B")``). The per-example objectives are summed into one
    problem over disjoint variables, so one L-BFGS-B run per value of ``c`` minimises the whole batch, each
    example with its own ``c``.

    The penalty is ``|r|_2^2`` rather than the paper's ``|r|``: it is smooth at ``r = 0``, where every run
    starts, and it has the same family of minimisers (a stationary point of ``c |r| + loss_f`` is one of
    ``c' |r|^2 + loss_f`` with ``c' = c / (2 |r|)``), so the search over ``c`` traces the same solutions.

    The line search: the paper asks for "the minimum c > 0" for which the minimiser is adversarial, but in
    ``c |r| + loss_f`` a larger ``c`` means a smaller ``r``; the smallest perturbation comes from the largest
    adversarial ``c``, which is what is searched here (as Foolbox does). Per example, ``c`` starts at
    ``initial_const`` and is multiplied by 10 while the minimiser stays adversarial (divided by 10 while it
    does not and none has been), then bisected in log scale between the largest adversarial and the
    smallest non-adversarial ``c``, for ``binary_search_steps`` runs in all. The adversarial minimiser with the
    smallest L2 norm over all runs is returned; examples never fooled return ``x``.

    L-BFGS is a minimum-norm attack: it ignores ``threat.eps`` while searching, and the framework then
    projects the result onto the eps-ball (give a large eps to get the unconstrained minimum).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("l2", eps, bounds)``.
        goal: ``Targeted(target)`` (the paper's setting), ``LeastLikely()`` or ``None`` (untargeted).
        initial_const: the first ``c`` (1e-2); it is multiplied (or divided) by 10 until the search brackets it.
        binary_search_steps: L-BFGS-B runs per example over the search on ``c`` (12): a few bracket it, the
            rest bisect it in log scale. Called ``search_steps`` before advlab 0.2.
        steps: L-BFGS-B iterations per run (100; scipy's ``maxiter``). Called ``max_iter`` before advlab 0.2.
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``info["const"]`` is the largest adversarial ``c`` per example (NaN where none).

    Raises:
        ValueError: on an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, arXiv:1312.6199.

    Examples:
        >>> result = lbfgs(model, x, y, ThreatModel("l2", 10.0), goal=Targeted((y + 1) % 10))
        >>> result.distance  # the L2 norm of each adversarial perturbation found
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, initial_const=initial_const, binary_search_steps=binary_search_steps,
        steps=steps,
    )  # fmt: skip


LBFGS = lbfgs.config
