"""DeepFool (Moosavi-Dezfooli et al. 2016): the untargeted minimum-norm attack that iterates a linearised step to the nearest class boundary, for l2 and linf."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack, warn_once_zero_grad
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.result import AttackResult
from advlab.settings import NonNegativeFloat, PositiveInt, Range
from advlab.threat import ThreatModel, flatten

STEP_MARGIN = 1e-4
"""Each step goes this much (times the box width, :attr:`~advlab.threat.ThreatModel.scale`) past the linearised boundary, as in the authors' code
(``pert + 1e-4``) and Foolbox: without it, iterates that the box clips can approach the boundary only
geometrically and never cross it."""
_TINY = 1e-12  # guards divisions by a gradient-difference norm that may be zero
_DUAL = {"l2": "l2", "linf": "l1"}  # the dual norm q of the attack norm p: 1/p + 1/q = 1


def _candidate_step(
    model: nn.Module, x_adv: torch.Tensor, candidates: torch.Tensor, norm: str, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x_adv`` and the DeepFool step toward the nearest linearised boundary among the candidates.

    ``candidates[:, 0]`` is the class to leave; for every other candidate ``k`` the boundary of the
    linearised classifier is ``f_k + w_k . r = 0`` with ``f_k = z_k - z_0`` and ``w_k = grad z_k - grad z_0``.
    Its distance in the attack norm ``p`` is ``|f_k| / |w_k|_q`` (``q`` the dual norm). One backward pass per
    candidate gives the gradients of the whole batch at once (examples are independent in eval mode).

    The step goes ``margin`` past that boundary (its length is ``dist + margin``).
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    z = logits.gather(1, candidates)  # (n, k)
    k = z.shape[1]
    diffs = []
    for j in range(1, k):
        (g,) = torch.autograd.grad((z[:, j] - z[:, 0]).sum(), x_adv, retain_graph=j < k - 1)
        diffs.append(flatten(g))
    w = torch.stack(diffs, dim=1)  # (n, k - 1, d)
    f = (z[:, 1:] - z[:, :1]).detach()  # (n, k - 1), negative while class 0 wins
    if _DUAL[norm] == "l2":
        w_norm = w.norm(p=2, dim=2)
    else:
        w_norm = w.abs().sum(dim=2)
    dist = f.abs() / (w_norm + _TINY)
    best = dist.argmin(dim=1)
    pert = dist.gather(1, best[:, None]).squeeze(1) + margin  # (n,)
    w_best = w[torch.arange(w.shape[0], device=w.device), best]  # (n, d)
    if norm == "l2":
        wn = w_norm.gather(1, best[:, None])
        step = pert[:, None] * w_best / (wn + _TINY)
    else:
        step = pert[:, None] * w_best.sign()
    return logits.detach(), step.reshape(x_adv.shape)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    candidates: int,
    overshoot: float,
    steps: int,
) -> AttackOutput:
    n = x.shape[0]
    with torch.no_grad():
        clean_logits = model(x)
    k = min(candidates, clean_logits.shape[1])
    # The class to leave first, then the k - 1 other classes the model finds most likely on the clean input.
    others = clean_logits.scatter(1, labels[:, None], float("-inf")).topk(k - 1, dim=1).indices
    classes = torch.cat([labels[:, None], others], dim=1)
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    margin = STEP_MARGIN * threat.scale
    # The examples still on their side of the boundary; each iteration forwards only them, so it learns their number
    # once (one host sync), when it keeps those its step did not fool.
    idx = (~is_success(clean_logits, labels, targeted)).nonzero().flatten()
    for i in range(steps):
        if idx.numel() == 0:
            break
        logits, step = _candidate_step(model, x_adv[idx], classes[idx], threat.norm, margin)
        if i == 0:
            warn_once_zero_grad(step, "deepfool")
        keep = (~is_success(logits, labels[idx], targeted)).nonzero().flatten()
        idx, step = idx[keep], step[keep]
        if idx.numel() == 0:
            break
        r_tot[idx] += step
        x_adv[idx] = threat.clip_box(x[idx] + (1.0 + overshoot) * r_tot[idx])
        iterations[idx] += 1
    return AttackOutput(x_adv, info={"iterations": iterations})


@register_attack(
    "DeepFool",
    norms=("l2", "linf"),
    targeted=False,
    minimum_norm=True,
    paper="Moosavi-Dezfooli et al. 2016, arXiv:1511.04599",
    renamed={"num_classes": "candidates", "max_iter": "steps"},
)
def deepfool(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    candidates: Annotated[int, Range(2)] = 10,
    overshoot: NonNegativeFloat = 0.02,
    steps: PositiveInt = 50,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """DeepFool: repeatedly step to the nearest boundary of the locally linearised classifier.

    Multi-class algorithm (paper, Algorithm 2, and its lp generalisation of Section 3.2). At each iterate
    ``x_i`` and for each candidate class ``k`` (the true class ``y`` plus the ``candidates - 1`` other classes
    with the largest clean logits), ``f_k = z_k - z_y`` and ``w_k = grad(z_k - z_y)``. The nearest linearised
    boundary is ``l = argmin_k |f_k| / |w_k|_q`` (``q`` the dual norm: 2 for l2, 1 for linf) and the step is
    ``r_i = d_l * w_l / |w_l|_2`` (l2) or ``d_l * sign(w_l)`` (linf) with ``d_l = |f_l| / |w_l|_q + 1e-4 (high - low)``
    (the authors' code adds 1e-4 so that every step crosses the linearised boundary). The steps accumulate in
    ``r = sum r_i`` and the next iterate is ``x + (1 + overshoot) r``, clipped into ``threat.bounds`` (the
    paper has no box; the clip is Foolbox's), until the label changes or ``steps`` is reached. All
    examples of the batch are processed together; those already fooled drop out.

    DeepFool is a minimum-norm attack: it ignores ``threat.eps`` while searching, and the framework then
    projects the result onto the eps-ball (give a large eps to get the unconstrained minimum and read
    ``result.distance``). Examples the attack cannot fool within ``steps`` return their last iterate.

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: norm (``"l2"`` or ``"linf"``), eps and bounds.
        goal: ``None`` or ``Untargeted()``; DeepFool is untargeted only.
        candidates: candidate classes per example including the true one, those with the largest clean logits
            (the paper's 10; at most the model's classes). Called ``num_classes`` before advlab 0.2.
        overshoot: the paper's ``eta`` (0.02): the accumulated perturbation is scaled by ``1 + overshoot`` to
            cross the boundary.
        steps: maximum number of linearisation steps (50, the reference implementation's cap; DeepFool usually
            converges in 2-5). Called ``max_iter`` before advlab 0.2.
        generator: accepted for a uniform interface; DeepFool is deterministic.

    Returns:
        AttackResult; ``info["iterations"]`` holds the number of steps each example took.

    Raises:
        ValueError: on a targeted goal, an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural
        networks", CVPR 2016, arXiv:1511.04599.

    Examples:
        >>> result = deepfool(model, x, y, ThreatModel("l2", 10.0))
        >>> result.distance.median()  # the minimal l2 perturbation DeepFool found
    """
    return run_attack(_core, model, x, y, threat, goal=goal, candidates=candidates, overshoot=overshoot, steps=steps)


DeepFool = deepfool.config
