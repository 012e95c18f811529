"""The Carlini-Wagner attacks (2017): the L2 attack with binary search over c and the L∞ attack with iterative tau reduction."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.registry import Alias, register_alias, register_attack
from advlab.goals import Goal, is_success
from advlab.losses import margin
from advlab.result import AttackResult
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from advlab.threat import ThreatModel, flatten, per_example

log = logging.getLogger(__name__)

_TANH_SHRINK = 1.0 - 1e-6
"""Inputs on the box edges map to ``atanh(+-(1 - 1e-6))`` instead of infinity (the reference's ``* 1.999999``)."""
_UPPER_UNKNOWN = 1e10
"""The reference code's upper bound on c before any success: "no upper bound found yet"."""
_ABORT_TOLERANCE = 0.9999
"""Early abort when the loss has not decreased by 0.01% over a tenth of the steps (reference code)."""
_LINF_SUCCESS_TOLERANCE = 1e-4
"""The L∞ attack accepts an iterate when its total loss is below ``1e-4 * c`` (reference code)."""
TAU_LEVELS = 256
"""The L∞ attack stops once tau falls below ``(high - low) / 256``: one grey level of an 8-bit image (on an
unbounded box, :attr:`~advlab.threat.ThreatModel.scale` / 256)."""


# ---------------------------------------------------------------------- shared pieces
def _to_tanh(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The change of variables ``w = atanh(2 (x - low) / (high - low) - 1)``, shrunk off the box edges."""
    return torch.atanh(((x - low) / (high - low) * 2.0 - 1.0) * _TANH_SHRINK)


def _from_tanh(w: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x = low + (high - low) (tanh(w) + 1) / 2``: any real ``w`` gives a point of the box."""
    return low + (high - low) * (torch.tanh(w) + 1.0) / 2.0


def _to_w(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The optimisation variables of ``x``: tanh variables on a finite box, ``x`` itself when a side is infinite."""
    if math.isfinite(low) and math.isfinite(high):
        return _to_tanh(x, low, high)
    return x.clone()


def _from_w(w: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The point of the box that ``w`` stands for: :func:`_from_tanh`, or ``w`` clamped to an unbounded box."""
    if math.isfinite(low) and math.isfinite(high):
        return _from_tanh(w, low, high)
    return w.clamp(low, high)


def _reaches_goal(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, confidence: float) -> torch.Tensor:
    """Success with the margin ``confidence`` required: the reference code's ``compare``."""
    if confidence == 0:
        return is_success(logits, labels, targeted)
    onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    shifted = logits - confidence * onehot if targeted else logits + confidence * onehot
    return is_success(shifted, labels, targeted)


class _BatchedAdam:
    """Adam (Kingma & Ba 2015) on a batch of per-example variables, each with its own step count.

    Examples can be restarted independently (the L∞ attack restarts an example whenever it lowers tau).
    The update is TensorFlow's form, which the reference code used:
    ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
    """

    def __init__(self, like: torch.Tensor, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)

    def reset(self, idx: torch.Tensor | None = None) -> None:
        if idx is None:
            self.m.zero_()
            self.v.zero_()
            self.t.zero_()
        else:
            self.m[idx] = 0.0
            self.v[idx] = 0.0
            self.t[idx] = 0.0

    def step(self, w: torch.Tensor, grad: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The updated ``w`` (rows ``idx`` of the batch, or all rows)."""
        if idx is None:
            m = self.m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
            v = self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            self.t += 1
            t = self.t
        else:
            m = self.m[idx] * self.beta1 + (1 - self.beta1) * grad
            v = self.v[idx] * self.beta2 + (1 - self.beta2) * grad * grad
            self.m[idx], self.v[idx] = m, v
            self.t[idx] += 1
            t = self.t[idx]
        lr_t = self.lr * torch.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        return w - per_example(lr_t, w) * m / (v.sqrt() + self.eps)


# ---------------------------------------------------------------------- L2


class _L2Search:
    """The C&W L2 attack on a batch: Adam runs on the tanh variables, the search over ``c``, the best results.

    Per example: the bracket ``[lower, upper]`` of ``c`` (``upper = 1e10`` until some ``c`` succeeds), the
    current ``c``, and the successful iterate with the smallest L2 distance over all runs with its ``c``.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        threat: ThreatModel,
        *,
        confidence: float,
        lr: float,
        initial_const: float,
    ) -> None:
        n, dev, dtype = x.shape[0], x.device, x.dtype
        self.model, self.labels, self.targeted, self.confidence = model, labels, targeted, confidence
        self.low, self.high = threat.box
        self.w0 = _to_w(x, self.low, self.high)
        # x as the tanh variables see it (differs by < 1e-6 of the box)
        self.x0 = _from_w(self.w0, self.low, self.high)
        self.lower = torch.zeros(n, device=dev, dtype=torch.float64)
        self.upper = torch.full((n,), _UPPER_UNKNOWN, device=dev, dtype=torch.float64)
        self.const = torch.full((n,), initial_const, device=dev, dtype=torch.float64)
        self.best_l2 = torch.full((n,), math.inf, device=dev, dtype=dtype)
        self.best_adv = x.clone()
        self.best_const = torch.full((n,), math.nan, device=dev, dtype=torch.float64)
        self.adam = _BatchedAdam(self.w0, lr)

    def retry_smallest_success(self) -> None:
        """The reference's last run ("repeat"): retry each example at the smallest c that worked."""
        self.const = torch.where(self.upper < _UPPER_UNKNOWN, self.upper, self.const)

    def run(self, steps: int, abort_early: bool) -> torch.Tensor:
        """One run of ``steps`` Adam steps from ``x`` at the current ``c``; the smallest successful squared L2
        distance of the run per example (inf where none). Stops early when the loss stalls (``abort_early``)."""
        c = self.const.to(self.x0.dtype)
        w = self.w0.clone()
        self.adam.reset()
        outer_best = torch.full_like(self.best_l2, math.inf)
        prev = math.inf
        check_every = max(steps // 10, 1)
        for i in range(steps):
            loss, grad, x_adv, l2, logits = self._loss_and_grad(w, c)
            with torch.no_grad():
                ok = _reaches_goal(logits, self.labels, self.targeted, self.confidence)
                outer_best = torch.where(ok & (l2 < outer_best), l2, outer_best)
                self._keep_smallest(ok, l2, x_adv)
                if abort_early and i % check_every == 0:
                    total = float(loss.sum())
                    if total > prev * _ABORT_TOLERANCE:
                        break
                    prev = total
                w = self.adam.step(w.detach(), grad)
        return outer_best

    def _loss_and_grad(
        self, w: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, d loss / d w, x_adv, l2, logits)`` of ``|x_adv - x|_2^2 + c f6(x_adv)``, one forward/backward."""
        w.requires_grad_(True)
        x_adv = _from_w(w, self.low, self.high)
        logits = self.model(x_adv)
        l2 = flatten(x_adv - self.x0).pow(2).sum(1)
        f6 = -margin(logits, self.labels, self.targeted, kappa=self.confidence)  # max(max_{i!=t} Z_i - Z_t, -kappa)
        loss = l2 + c * f6
        (grad,) = torch.autograd.grad(loss.sum(), w)
        return loss, grad, x_adv.detach(), l2.detach(), logits.detach()

    def _keep_smallest(self, ok: torch.Tensor, l2: torch.Tensor, x_adv: torch.Tensor) -> None:
        # masked arithmetic rather than `if better.any(): best[better] = ...` (two host syncs per step)
        better = ok & (l2 < self.best_l2)
        self.best_l2 = torch.where(better, l2, self.best_l2)
        self.best_adv = torch.where(per_example(better, x_adv), x_adv, self.best_adv)
        self.best_const = torch.where(better, self.const, self.best_const)

    def update_const(self, outer_best: torch.Tensor) -> torch.Tensor:
        """Bisect ``c`` where a bracket exists, else multiply it by 10; returns which examples the run fooled."""
        found = torch.isfinite(outer_best)
        self.upper = torch.where(found, torch.minimum(self.upper, self.const), self.upper)
        self.lower = torch.where(found, self.lower, torch.maximum(self.lower, self.const))
        self.const = torch.where(self.upper < _UPPER_UNKNOWN, (self.lower + self.upper) / 2, self.const * 10)
        return found


def _core_l2(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    confidence: float,
    binary_search_steps: int,
    steps: int,
    lr: float,
    initial_const: float,
    abort_early: bool,
) -> AttackOutput:
    n = x.shape[0]
    cw = _L2Search(model, x, labels, targeted, threat, confidence=confidence, lr=lr, initial_const=initial_const)
    search_l2 = torch.full((binary_search_steps, n), math.inf, device=x.device, dtype=x.dtype)
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            cw.retry_smallest_success()
        outer_best = cw.run(steps, abort_early)
        search_l2[outer] = outer_best.sqrt()
        found = cw.update_const(outer_best)
        if log.isEnabledFor(logging.DEBUG):  # the count is a host sync: only when it is logged
            log.debug("cw-l2 search step %d: %d/%d successful", outer, int(found.sum()), n)
    return AttackOutput(cw.best_adv, info={"const": cw.best_const, "search_distances": search_l2.T.contiguous()})


@register_attack(
    "CarliniWagnerL2",
    name="cw-l2",
    norms=("l2",),
    minimum_norm=True,
    paper="Carlini & Wagner 2017, arXiv:1608.04644",
    renamed={"learning_rate": "lr"},
)
def carlini_wagner_l2(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    confidence: NonNegativeFloat = 0.0,
    binary_search_steps: PositiveInt = 9,
    steps: PositiveInt = 1000,
    lr: PositiveFloat = 1e-2,
    initial_const: PositiveFloat = 1e-3,
    abort_early: bool = True,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """The Carlini-Wagner L2 attack: minimise ``|delta|_2^2 + c * f6(x + delta)`` with a search over ``c``.

    The box constraint is removed by the change of variables ``x + delta = low + (high - low)(tanh(w) + 1)/2``
    and ``w`` is optimised with Adam; where a side of the box is infinite (standardised features) there is no
    change of variables: Adam runs on ``x + delta`` itself, clamped to the finite side if any. The loss on the logits ``Z`` is the paper's ``f6``:
    ``max(max_{i != t} Z_i - Z_t, -confidence)`` for a target ``t`` (untargeted: ``max(Z_y - max_{i != y} Z_i,
    -confidence)``). For each example, a binary search over ``c`` (``binary_search_steps`` runs of ``steps``
    Adam steps each, Adam restarted each run) halves the interval between the largest failing and the smallest
    successful ``c``; until some ``c`` succeeds it is multiplied by 10. With ``binary_search_steps >= 10`` the
    last run uses the smallest successful ``c`` (as the reference code does). A run stops early when the loss
    has not decreased over a tenth of its steps (``abort_early``). Over all runs and steps, the successful
    iterate with the smallest L2 distance is kept per example; examples never fooled return ``x``.

    C&W is a minimum-norm attack: it ignores ``threat.eps`` while searching, and the framework then projects
    the result onto the eps-ball (give a large eps to get the unconstrained minimum; ``result.distance``).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("l2", eps, bounds)``; any bounds, infinite ones included.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        confidence: the paper's ``kappa``: the logit margin a success must have (0).
        binary_search_steps: runs of the search over ``c`` (9).
        steps: Adam steps per run (1000; the paper's code uses 10000, which reaches nearly the same distances on
            small models at ten times the cost: raise it for final numbers).
        lr: Adam's step size on ``w`` (0.01). Called ``learning_rate`` before advlab 0.2.
        initial_const: the first ``c`` (1e-3).
        abort_early: stop a run once the loss stalls.
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``info["const"]`` is the ``c`` of each example's best result (NaN if none) and
        ``info["search_distances"]`` ``(N, binary_search_steps)`` the smallest successful L2 distance of
        each run (inf where a run found none).

    Raises:
        ValueError: on an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
        arXiv:1608.04644.

    Examples:
        >>> result = carlini_wagner_l2(model, x, y, ThreatModel("l2", 10.0), steps=1000)
        >>> result.distance  # the smallest successful L2 perturbation per example
    """
    return run_attack(
        _core_l2, model, x, y, threat, goal=goal, confidence=confidence, binary_search_steps=binary_search_steps,
        steps=steps, lr=lr, initial_const=initial_const, abort_early=abort_early,
    )  # fmt: skip


CarliniWagnerL2 = carlini_wagner_l2.config


# ---------------------------------------------------------------------- L∞


class _LinfSearch:
    """Per-example state of the C&W L∞ attack: tanh variables, tau, c, Adam state, and the accepted iterate.

    Examples run in lockstep, each at its own stage; :meth:`evaluate` works on the unfinished ones ``idx``.
    """

    def __init__(self, x: torch.Tensor, threat: ThreatModel, *, lr: float, initial_const: float) -> None:
        n, dev, dtype = x.shape[0], x.device, x.dtype
        self.x = x
        self.low, self.high = threat.box
        w0 = _to_w(x, self.low, self.high)
        self.x0 = _from_w(w0, self.low, self.high)
        self.w = w0.clone()
        self.prev = x.clone()  # the last accepted (adversarial) iterate; x until one is found
        # the paper's tau = 1 on [0, 1]
        self.tau = torch.full((n,), float(self.high - self.low), device=dev, dtype=dtype)
        self.const = torch.full((n,), initial_const, device=dev, dtype=torch.float64)
        self.count = torch.zeros(n, dtype=torch.long, device=dev)  # Adam steps at the current c
        self.rounds = torch.zeros(n, dtype=torch.long, device=dev)  # accepted tau reductions
        self.done = torch.zeros(n, dtype=torch.bool, device=dev)
        self.adam = _BatchedAdam(w0, lr)

    def evaluate(
        self, model: nn.Module, idx: torch.Tensor, labels: torch.Tensor, targeted: bool, confidence: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For examples ``idx``: ``(w, x_adv, d loss / d w, accepted)`` (``w`` and ``x_adv`` still attached to the
        graph), one forward/backward of ``c * max(confidence - margin, 0) + sum_i max(|delta_i| - tau, 0)``."""
        wa = self.w[idx].requires_grad_(True)
        xa = _from_w(wa, self.low, self.high)
        logits = model(xa)
        hinge = (confidence - margin(logits, labels, targeted)).clamp_min(0)
        excess = flatten((xa - self.x0[idx]).abs() - per_example(self.tau[idx], xa)).clamp_min(0).sum(1)
        c = self.const[idx].to(xa.dtype)
        loss = c * hinge + excess
        (grad,) = torch.autograd.grad(loss.sum(), wa)
        with torch.no_grad():
            # The reference code's test, and (as there) the prediction must really reach the goal: a hinge
            # below the tolerance can still leave the target a hair behind.
            accept = (loss.detach() < _LINF_SUCCESS_TOLERANCE * c) & _reaches_goal(
                logits.detach(), labels, targeted, confidence
            )
        return wa, xa, grad, accept

    @torch.no_grad()
    def tighten(self, idx: torch.Tensor, x_new: torch.Tensor, decrease_factor: float, tau_stop: float) -> None:
        """Accepted examples ``idx`` (iterates ``x_new``): keep the iterate, set tau below its actual L∞ size, restart
        Adam from it."""
        if not idx.numel():
            return
        actual = flatten(x_new - self.x[idx]).abs().amax(1)
        self.prev[idx] = x_new
        self.tau[idx] = torch.minimum(self.tau[idx], actual) * decrease_factor
        self.done[idx] = self.tau[idx] <= tau_stop
        self.w[idx] = _to_w(x_new, self.low, self.high)
        self.adam.reset(idx)
        self.count[idx] = 0
        self.rounds[idx] += 1

    @torch.no_grad()
    def adam_step(
        self,
        idx: torch.Tensor,
        w: torch.Tensor,
        grad: torch.Tensor,
        *,
        steps: int,
        const_factor: float,
        largest_const: float,
    ) -> None:
        """Examples ``idx`` not accepted yet: one Adam step; after ``steps`` of them at this c, raise c (give up past
        ``largest_const``). Masked arithmetic: no host sync."""
        if not idx.numel():
            return
        self.w[idx] = self.adam.step(w, grad, idx)
        count = self.count[idx] + 1
        raise_c = count >= steps
        const = torch.where(raise_c, self.const[idx] * const_factor, self.const[idx])
        self.const[idx] = const
        self.count[idx] = torch.where(raise_c, torch.zeros_like(count), count)
        self.done[idx] = self.done[idx] | (raise_c & (const >= largest_const))


def _split(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions where ``mask`` holds and where it does not, each in order, for one host sync (the count)."""
    order = torch.argsort((~mask).to(torch.uint8), stable=True)
    count = int(mask.sum())
    return order[:count], order[count:]


def _core_linf(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    confidence: float,
    steps: int,
    lr: float,
    initial_const: float,
    largest_const: float,
    const_factor: float,
    decrease_factor: float,
    tau_min: float | None,
) -> AttackOutput:
    tau_stop = threat.scale / TAU_LEVELS if tau_min is None else tau_min
    cw = _LinfSearch(x, threat, lr=lr, initial_const=initial_const)
    while True:
        idx = (~cw.done).nonzero().flatten()
        if idx.numel() == 0:
            break
        w, x_adv, grad, accept = cw.evaluate(model, idx, labels[idx], targeted, confidence)
        acc, fail = _split(accept)
        cw.tighten(idx[acc], x_adv.detach()[acc], decrease_factor, tau_stop)
        cw.adam_step(
            idx[fail], w.detach()[fail], grad[fail], steps=steps, const_factor=const_factor, largest_const=largest_const
        )
    return AttackOutput(cw.prev, info={"const": cw.const, "tau": cw.tau, "rounds": cw.rounds})


@register_attack(
    "CarliniWagnerLinf",
    name="cw-linf",
    norms=("linf",),
    minimum_norm=True,
    paper="Carlini & Wagner 2017, arXiv:1608.04644",
    renamed={"learning_rate": "lr"},
)
def carlini_wagner_linf(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    confidence: NonNegativeFloat = 0.0,
    steps: PositiveInt = 100,
    lr: PositiveFloat = 5e-3,
    initial_const: PositiveFloat = 1e-5,
    largest_const: PositiveFloat = 20.0,
    const_factor: Annotated[float, Range(1, strict_min=True)] = 2.0,
    decrease_factor: Annotated[float, Range(0, 1, strict_min=True, strict_max=True)] = 0.9,
    tau_min: PositiveFloat | None = None,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """The Carlini-Wagner L∞ attack: iterative reduction of tau with the penalty ``sum_i max(|delta_i| - tau, 0)``.

    The L∞ norm is replaced by the penalty on the coordinates exceeding ``tau``, and the attack minimises
    ``c * max(max_{i != t} Z_i - Z_t + confidence, 0) + sum_i max(|delta_i| - tau, 0)`` over the tanh
    variables ``w`` with Adam (untargeted: ``Z_y - max_{i != y} Z_i``). Per example (paper, Section V-C, and
    the authors' ``li_attack.py``): start with ``tau = high - low`` (the paper's 1 on [0, 1]) and
    ``c = initial_const``; run Adam until the total loss falls below ``1e-4 * c`` and the prediction reaches
    the goal (no coordinate exceeds tau by more than the tolerance); when ``steps`` steps at one ``c`` do not get there, multiply ``c`` by
    ``const_factor`` and go on, giving up once ``c >= largest_const``. On acceptance the iterate becomes the
    result, ``tau`` is set to ``decrease_factor`` times the smaller of tau and the iterate's actual L∞
    distance, and Adam restarts from the iterate (warm start), keeping ``c``. The attack stops when tau
    drops to ``tau_min`` (default ``(high - low) / 256``, one 8-bit grey level). Examples run in lockstep;
    each has its own tau, c, Adam state and stopping point, and finished ones drop out of the batch.

    C&W is a minimum-norm attack: the framework projects the result onto the threat model's eps-ball
    afterwards (give a large eps to get the unconstrained minimum; ``result.distance``).

    Args:
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: ``ThreatModel("linf", eps, bounds)``; any bounds, infinite ones included (tau then starts
            unbounded and ``tau_min`` defaults to 1/256).
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        confidence: the logit margin a success must have (0).
        steps: Adam steps at one ``c`` before ``c`` is raised (100; the reference code uses 1000). Every tau
            round ends with one that fails, which walks ``c`` up to ``largest_const`` (up to 21 doublings), so the
            cost is dominated by ``21 * steps``; on small models 100 steps per ``c`` reach the same distances as
            1000 (digits MLP: mean L∞ 0.075 either way).
        lr: Adam's step size (5e-3, the reference code's). Called ``learning_rate`` before advlab 0.2.
        initial_const: the first ``c`` (1e-5).
        largest_const: give up once ``c`` reaches this (20).
        const_factor: ``c`` multiplier after ``steps`` unsuccessful steps (2).
        decrease_factor: tau multiplier after each success (0.9).
        tau_min: stop once tau is at most this (absolute, in input units); default ``(high - low) / 256``.
        generator: accepted for a uniform interface; the attack is deterministic.

    Returns:
        AttackResult; ``info["tau"]``, ``info["const"]`` and ``info["rounds"]`` (accepted tau reductions)
        per example. Examples never fooled return ``x``.

    Raises:
        ValueError: on an unsupported norm, inputs outside the bounds, bad labels or settings.

    Shape:
        x: ``(N, ...)``; y: ``(N,)``.

    References:
        Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
        arXiv:1608.04644.

    Examples:
        >>> result = carlini_wagner_linf(model, x, y, ThreatModel("linf", 1.0))
        >>> result.distance  # the smallest L∞ perturbation found per example
    """
    if largest_const <= initial_const:
        raise ValueError(f"largest_const: expected a number > initial_const = {initial_const}, got {largest_const}")
    return run_attack(
        _core_linf, model, x, y, threat, goal=goal, confidence=confidence, steps=steps, lr=lr,
        initial_const=initial_const, largest_const=largest_const, const_factor=const_factor,
        decrease_factor=decrease_factor, tau_min=tau_min,
    )  # fmt: skip


CarliniWagnerLinf = carlini_wagner_linf.config

register_alias("cw", Alias({"l2": "cw-l2", "linf": "cw-linf"}, doc="Carlini & Wagner's attack for the norm"))
