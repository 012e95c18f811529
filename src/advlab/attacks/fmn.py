"""Fast Minimum-Norm attack (Pintor et al. 2021): the smallest adversarial perturbation in linf, l2, l1 or l0.

FMN alternates a normalised gradient step on the logit difference with a projection onto an lp-ball whose
radius ``eps_k`` adapts per example: it shrinks by a factor ``1 - gamma_k`` while the current point is
adversarial and grows by ``1 + gamma_k`` otherwise (before the first adversarial point it jumps to a linear
estimate of the distance to the decision boundary). Step size and ``gamma`` follow cosine annealing. The
smallest adversarial perturbation seen is kept per example.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, loss_and_grad, run_attack, warn_once_zero_grad
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.losses import margin
from advlab.result import AttackResult
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from advlab.threat import ThreatModel, flatten, norm_of, per_example

ALPHA_FINAL_FRACTION = 0.01
"""Default final step size: ``alpha_init / 100``."""

DUAL_NORM = {"linf": "l1", "l2": "l2", "l1": "linf", "l0": "l0"}
"""The dual of each norm: ``|f(x)| / ||grad f||_dual`` is the linearised distance to the boundary."""

_TINY = 1e-12
Rate = Annotated[float, Range(0, 1, strict_max=True)]


def _cosine(k: int, steps: int, start: float, end: float) -> float:
    """Cosine annealing from ``start`` (k = 0) to ``end`` (k = steps)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * k / steps)) / 2.0


def _project_l0(delta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep, per example, the ``k`` largest-magnitude coordinates of ``delta`` (``k`` a ``(N,)`` tensor)."""
    flat = flatten(delta)
    rank = flat.abs().argsort(dim=1, descending=True).argsort(dim=1)
    return (flat * (rank < k[:, None])).reshape(delta.shape)


def _free_gradient(x_adv: torch.Tensor, grad: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``grad`` without the coordinates pinned at the box with the gradient pointing out (they cannot move)."""
    blocked = ((x_adv <= lo) & (grad < 0)) | ((x_adv >= hi) & (grad > 0))
    return grad.masked_fill(blocked, 0.0)


class _SearchState:
    """Per-example state of FMN: the iterate, the radius ``eps_k`` and the smallest adversarial point so far."""

    def __init__(self, x: torch.Tensor, threat: ThreatModel) -> None:
        n = x.shape[0]
        lo, hi = threat.box
        inf = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        self.x, self.threat = x, threat
        self.l0 = threat.norm == "l0"
        self.worst = norm_of(torch.maximum(x - lo, hi - x), threat.norm)  # the largest perturbation the box allows
        self.eps_k = torch.ones(n, dtype=x.dtype, device=x.device) if self.l0 else inf.clone()
        self.best_norm = inf.clone()
        self.best_adv = x.clone()
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.x_adv = x.clone()

    def keep_smallest(self, is_adv: torch.Tensor, delta_norm: torch.Tensor) -> None:
        """Record the iterates that are adversarial and smaller than the best so far."""
        smaller = is_adv & (delta_norm < self.best_norm)
        self.best_norm = torch.where(smaller, delta_norm, self.best_norm)
        self.best_adv = torch.where(per_example(smaller, self.x), self.x_adv, self.best_adv)

    def adapt_radius(
        self, is_adv: torch.Tensor, delta_norm: torch.Tensor, loss: torch.Tensor, free_grad: torch.Tensor, gamma: float
    ) -> None:
        """Shrink ``eps_k`` where adversarial, grow it elsewhere (before a success: the linearised distance)."""
        eps_k, best_norm = self.eps_k, self.best_norm
        if self.l0:  # integer radius: at least one feature fewer / more per step
            eps_k = torch.where(
                is_adv,
                torch.minimum(torch.minimum(eps_k - 1, (eps_k * (1.0 - gamma)).floor()), best_norm),
                torch.maximum(eps_k + 1, (eps_k * (1.0 + gamma)).floor()),
            ).clamp_min(0.0)
        else:
            # Linearised distance to the boundary. Coordinates pinned at the box with the gradient pointing out
            # cannot move, so they are left out of the dual norm (with them the estimate is too short and the
            # iterates creep toward the boundary of a box-saturated input without ever crossing it).
            to_boundary = loss.abs() / norm_of(free_grad, DUAL_NORM[self.threat.norm]).clamp_min(_TINY)
            eps_k = torch.where(
                is_adv,
                torch.minimum(eps_k * (1.0 - gamma), best_norm),
                torch.where(self.found, eps_k * (1.0 + gamma), delta_norm + to_boundary),
            )
        self.eps_k = torch.minimum(eps_k, self.worst)

    def move(self, free_grad: torch.Tensor, alpha: float) -> None:
        """Step ``alpha`` along the l2-normalised free gradient, then project onto the ``eps_k`` ball and the box."""
        # The step uses the same free coordinates: mass put on pinned ones would be clipped away by the box
        # after the ball projection has already rescaled the rest.
        x, threat = self.x, self.threat
        g_norm = flatten(free_grad).norm(dim=1).clamp_min(_TINY)
        step = alpha * free_grad / per_example(g_norm, free_grad)
        if self.l0:
            self.x_adv = threat.clip_box(x + _project_l0(self.x_adv + step - x, self.eps_k)).detach()
        else:
            self.x_adv = threat.project(self.x_adv + step, x, eps=self.eps_k).detach()


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    alpha_init: float,
    alpha_final: float,
    gamma_init: float,
    gamma_final: float,
) -> AttackOutput:
    lo, hi = threat.box
    state = _SearchState(x, threat)
    trace = torch.empty(steps, device=x.device)
    for k in range(steps):
        alpha = _cosine(k, steps, alpha_init, alpha_final)
        gamma = _cosine(k, steps, gamma_init, gamma_final)
        delta_norm = threat.distance(state.x_adv, x)
        # Logit difference toward the goal: max_{j != y} z_j - z_y (untargeted), z_t - max_{j != t} z_j (targeted).
        loss, grad, logits = loss_and_grad(model, state.x_adv, labels, targeted, margin)
        if k == 0:
            warn_once_zero_grad(grad, "fmn")
        trace[k] = loss.mean()
        is_adv = is_success(logits, labels, targeted)
        state.keep_smallest(is_adv, delta_norm)
        state.found |= is_adv
        free_grad = _free_gradient(state.x_adv, grad, lo, hi)
        state.adapt_radius(is_adv, delta_norm, loss, free_grad, gamma)
        state.move(free_grad, alpha)

    # The last iterate has not been evaluated yet: one more forward pass to see whether it is smaller.
    with torch.no_grad():
        is_adv = is_success(model(state.x_adv), labels, targeted)
    state.keep_smallest(is_adv, threat.distance(state.x_adv, x))
    return AttackOutput(state.best_adv, loss_trace=trace, info={"min_distance": state.best_norm.detach()})


@register_attack(
    "FMN", norms=("linf", "l2", "l1", "l0"), minimum_norm=True, paper="Pintor et al. 2021, arXiv:2102.12827"
)
def fmn(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 100,
    alpha_init: PositiveFloat = 1.0,
    alpha_final: NonNegativeFloat | None = None,
    gamma_init: Rate = 0.05,
    gamma_final: Rate = 0.001,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """Fast Minimum-Norm attack: the smallest perturbation (in the threat norm) that reaches the goal.

    At step ``k`` FMN moves ``alpha_k`` along the l2-normalised gradient of the logit difference, then projects
    onto the ball of radius ``eps_k`` (and the box). ``eps_k`` shrinks to ``min(eps_k (1 - gamma_k), best)``
    while the iterate is adversarial, grows to ``eps_k (1 + gamma_k)`` when it is not (after a first success),
    and before any success is set to ``|delta| + |f| / |grad f|_dual``, the linearised distance to the
    boundary. ``alpha_k`` and ``gamma_k`` decay by cosine annealing. Per example the smallest adversarial
    perturbation found is kept. For l0 the radius counts changed features: it starts at 1 and moves by
    ``floor(eps_k (1 -+ gamma_k))`` but at least one feature per step, and the projection keeps the ``eps_k``
    largest changes.

    One change to the paper's algorithm: coordinates pinned at the box with the gradient pointing outward
    are left out of the gradient, both for the step and for the dual norm of the boundary estimate. With
    them (the reference code), on inputs with many saturated pixels (digits, MNIST) the ball projection
    rescales the step, the box then clips part of it away, and the iterates creep toward the boundary
    without crossing it; without them the algorithm is unchanged wherever the box is inactive.

    FMN ignores ``threat.eps`` while it searches: it finds the minimal perturbation, and the framework then
    projects it onto the threat model's ball. An example whose minimal distance exceeds eps is therefore
    reported as not successful (its point is shrunk to the ball). The raw minimal distances, ``inf`` where
    no adversarial point was found, are in ``result.info["min_distance"]``: robust accuracy at any radius
    ``r`` is ``(min_distance > r).mean()``, so one run gives the whole robust-accuracy-vs-eps curve.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``), eps (the radius of the final projection) and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        steps: optimisation steps (100, Foolbox's default; the paper's experiments use up to 1000).
        alpha_init: initial step size (1.0, in raw input units, along the l2-normalised gradient).
        alpha_final: final step size (default ``alpha_init / 100``).
        gamma_init: initial rate at which ``eps_k`` shrinks or grows (0.05), in ``[0, 1)``.
        gamma_final: final rate after cosine annealing (0.001).
        generator: unused (FMN is deterministic); accepted for a uniform interface.

    Returns:
        AttackResult; ``info["min_distance"]`` holds the per-example minimal distances.

    Raises:
        ValueError: on an unsupported norm, bad settings or bad input.

    References:
        Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
        Constraints", arXiv:2102.12827.

    Examples:
        >>> result = fmn(model, x, y, ThreatModel("l2", 1.0), steps=100)
        >>> curve = [(result.info["min_distance"] > r).float().mean() for r in (0.5, 1.0, 1.5)]
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, steps=steps, alpha_init=alpha_init,
        alpha_final=alpha_init * ALPHA_FINAL_FRACTION if alpha_final is None else alpha_final, gamma_init=gamma_init,
        gamma_final=gamma_final,
    )  # fmt: skip


FMN = fmn.config
