"""The Jacobian-based Saliency Map Attack (Papernot et al. 2016): the targeted L0 attack that changes input features two at a time."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack, warn_once_zero_grad
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.result import AttackResult
from advlab.settings import OneOf, Range
from advlab.threat import ThreatModel, flatten

PAIR_SCORES_PER_CHUNK = 1 << 23
"""The pairwise saliency map needs ``d^2`` scores per example; examples are scored in chunks of this many."""


def _best_pairs(
    alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor, increase: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's pairwise saliency map, maximised over the search domain, for every example.

    For features ``p != q`` in the domain, ``A = alpha_p + alpha_q`` (the target's derivative) and
    ``B = beta_p + beta_q`` (the other classes' summed derivative). Increasing features needs ``A > 0`` and
    ``B < 0`` and scores ``A * |B|``; decreasing needs ``A < 0``, ``B > 0`` and scores ``|A| * B``; both are
    ``-A * B`` on the admissible pairs.

    Returns:
        ``(p, q, found)``; ``found`` is False where no pair is admissible.
    """
    m, d = alpha.shape
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=alpha.device)
    chunk = max(1, PAIR_SCORES_PER_CHUNK // (d * d))
    ps, qs, founds = [], [], []
    for s in range(0, m, chunk):
        a, b, dom = alpha[s : s + chunk], beta[s : s + chunk], domain[s : s + chunk]
        pair_a = a[:, :, None] + a[:, None, :]
        pair_b = b[:, :, None] + b[:, None, :]
        ok = dom[:, :, None] & dom[:, None, :] & off_diagonal
        ok &= (pair_a > 0) & (pair_b < 0) if increase else (pair_a < 0) & (pair_b > 0)
        score = torch.where(ok, -pair_a * pair_b, torch.full_like(pair_a, -math.inf)).reshape(a.shape[0], -1)
        best_score, best = score.max(dim=1)
        ps.append(best // d)
        qs.append(best % d)
        founds.append(torch.isfinite(best_score))
    return torch.cat(ps), torch.cat(qs), torch.cat(founds)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    theta: float,
    gamma: float,
    jacobian: str,
) -> AttackOutput:
    n, d = x.shape[0], x[0].numel()
    low, high = threat.box
    budget = math.floor(gamma * d)
    if threat.norm == "l0":
        budget = min(budget, int(threat.eps))
    with torch.no_grad():
        clean = model(x)
    # Untargeted: aim at the class the model finds most likely after the true one; stop at any wrong class.
    target = labels if targeted else clean.scatter(1, labels[:, None], -math.inf).argmax(dim=1)
    increase = theta > 0
    step = theta * threat.scale
    xf = flatten(x).clone()
    domain = xf < high if increase else xf > low  # features that can still move in theta's direction
    active = ~is_success(clean, labels, targeted)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    for i in range(budget // 2):  # two features per iteration
        active &= domain.sum(dim=1) >= 2
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        xa = xf[idx].requires_grad_(True)
        logits = model(xa.view((-1,) + x.shape[1:]))
        out = logits if jacobian == "logits" else logits.softmax(dim=1)
        (alpha,) = torch.autograd.grad(out.gather(1, target[idx, None]).sum(), xa, retain_graph=True)
        (total,) = torch.autograd.grad(out.sum(), xa)
        if i == 0:
            warn_once_zero_grad(alpha, "jsma")
        p, q, found = _best_pairs(alpha, total - alpha, domain[idx], increase)
        move = found & ~is_success(logits.detach(), labels[idx], targeted)
        active[idx[~move]] = False  # reached the goal, or no admissible pair left (the paper's map is empty)
        rows, p, q = idx[move], p[move], q[move]
        for col in (p, q):
            value = threat.clip_box(xf[rows, col] + step)
            xf[rows, col] = value
            # The paper removes a feature from the search domain once it reaches the box (with theta = 1, after one
            # change); where the box is unbounded, after its one change.
            domain[rows, col] &= (value > low) & (value < high) & threat.bounded
        iterations[rows] += 1
    return AttackOutput(xf.view(x.shape), info={"target": target, "iterations": iterations})


@register_attack("JSMA", norms=("l0",), paper="Papernot et al. 2016, arXiv:1511.07528")
def jsma(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    theta: Annotated[float, Range(-1, 1)] = 1.0,
    gamma: Annotated[float, Range(0, 1, strict_min=True)] = 0.145,
    jacobian: Annotated[str, OneOf(("logits", "probs"))] = "logits",
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """JSMA: change the two features with the largest pairwise saliency for the target, until it wins.

    The paper's Algorithm 3 (increasing features, pairwise saliency map), batched. Each iteration computes the
    forward derivative of the target class, ``alpha = dF_t/dx``, and of all other classes together,
    ``beta = sum_{j != t} dF_j/dx`` (two backward passes for the whole batch), picks the pair ``(p, q)`` in the
    search domain maximising ``(alpha_p + alpha_q) * |beta_p + beta_q|`` among pairs with ``alpha_p + alpha_q > 0``
    and ``beta_p + beta_q < 0``, and adds ``theta * (high - low)`` to both (clipped into the box). A feature
    leaves the search domain when it reaches the box (with ``theta = 1`` after one change). On an unbounded box
    (standardised features) the step is ``theta`` times :attr:`~advlab.threat.ThreatModel.scale` (one standard
    deviation) and a feature leaves the domain after its one change. An example stops
    when it reaches the target, when no admissible pair is left, or after ``floor(gamma * d / 2)`` iterations,
    so at most ``gamma * d`` features change (fewer if the l0 ``threat.eps`` is smaller: the budget is
    ``min(gamma * d, eps)``). A negative ``theta`` decreases features (the paper's decreasing variant:
    ``alpha < 0``, ``beta > 0``).

    ``jacobian="logits"`` differentiates the logits ``Z`` (what Carlini & Wagner call JSMA-Z);
    ``"probs"`` differentiates the softmax output (JSMA-F).

    Goals: targeted is the paper's setting. For an untargeted goal the target is the class the model ranks
    highest after the true label on the clean input, and the attack stops as soon as the prediction leaves
    the true label (any wrong class counts).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("l0", eps, bounds)``; eps is the largest number of features that may change.
        goal: ``Targeted(target)`` (the paper's setting), ``LeastLikely()`` or ``None`` (see above).
        theta: change per selected feature as a fraction of the box width, in ``[-1, 1]``, not 0 (1: set the
            feature to its maximum).
        gamma: largest fraction of the features that may change, in ``(0, 1]`` (the paper's Upsilon: 0.145 in
            its MNIST experiments).
        jacobian: ``"logits"`` (JSMA-Z) or ``"probs"`` (JSMA-F).
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``info["target"]`` (the class aimed at) and ``info["iterations"]`` (pairs changed).

    Raises:
        ValueError: on a norm other than ``"l0"``, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Papernot et al., "The Limitations of Deep Learning in Adversarial Settings", EuroS&P 2016,
        arXiv:1511.07528.

    Examples:
        >>> threat = ThreatModel("l0", 20)
        >>> result = jsma(model, x, y, threat, goal=Targeted((y + 1) % 10))
        >>> result.distance  # number of changed features per example
    """
    if theta == 0:
        raise ValueError(
            "theta: expected a non-zero change per feature in [-1, 1], got 0. Use 1 to set features to the maximum."
        )
    return run_attack(_core, model, x, y, threat, goal=goal, theta=theta, gamma=gamma, jacobian=jacobian)


JSMA = jsma.config
