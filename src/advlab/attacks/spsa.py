"""SPSA (Uesato et al. 2018): gradient-free attack with Rademacher finite differences and Adam, on scores only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks._query import STOP_ERRORS, MaxQueries, QueryCounter, ScoreSearch, run_query_attack
from advlab.attacks.base import AttackOutput, Randomness, draw_per_row
from advlab.attacks.registry import register_attack
from advlab.devices import to_device
from advlab.goals import Goal
from advlab.losses import LossFn, LossSetting, get_loss
from advlab.oracles import Oracle
from advlab.result import AttackResult
from advlab.rng import RNG, ExampleRNG, as_rng
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from advlab.threat import ThreatModel, flatten, per_example

STEP_SIZE_FACTOR = 2.5
"""Default step size ``2.5 * eps / steps``, as for PGD (Uesato et al. use 0.01 at their eps)."""
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def spsa_gradient(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    delta: float,
    n_samples: int,
    generator: torch.Generator | RNG,
    clip: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """SPSA estimate of the gradient of ``f`` at each example of ``x``.

    ``g = mean_k (f(x + delta v_k) - f(x - delta v_k)) / (2 delta) * v_k`` with Rademacher ``v_k`` (``1/v = v``).
    ``f(points, owner)`` maps ``(M, ...)`` points to ``(M,)`` values; ``owner[j]`` is the example point ``j``
    belongs to. With ``clip`` the evaluation points are clipped into the box and the actual step is used.

    Args:
        f: batched function to differentiate.
        x: points, shape ``(N, ...)``.
        delta: finite-difference radius.
        n_samples: function evaluations per example (rounded down to an even number, at least 2).
        generator: source of the Rademacher directions: a ``torch.Generator`` or an RNG of :mod:`advlab.rng`
            (per-example streams: row ``i``'s directions from example ``i``'s stream, one call per estimate).
        clip: optional map into the valid box.

    Returns:
        The estimate, shape ``(N, ...)``.
    """
    n, k = x.shape[0], max(1, n_samples // 2)
    rng = as_rng(generator)
    if isinstance(rng, ExampleRNG):
        v = draw_per_row(rng, (n, k, *x.shape[1:]), "signs", dtype=x.dtype, device=x.device)
    else:
        v = to_device(rng.randint(0, 2, (n, k, *x.shape[1:])), x.device, x.dtype) * 2 - 1
    xe = x.unsqueeze(1)
    plus, minus = xe + delta * v, xe - delta * v
    if clip is not None:
        plus, minus = clip(plus), clip(minus)
    pts = torch.cat([plus, minus], dim=1).reshape(n * 2 * k, *x.shape[1:])
    owner = torch.arange(n, device=x.device).repeat_interleave(2 * k)
    vals = f(pts, owner).reshape(n, 2 * k)
    # the actual (possibly clipped) step along each coordinate: (plus - minus) = 2 delta v where not clipped
    span = (plus - minus).reshape(n, k, -1).abs().clamp_min(1e-12)
    diff = (vals[:, :k] - vals[:, k:]).reshape(n, k, 1)
    vf = v.reshape(n, k, -1)
    g = (diff * vf / span * (span > 1e-12)).mean(1)
    return g.reshape(x.shape)


class _Adam:
    """Adam's moment estimates per example; examples step only while they are active."""

    def __init__(self, x: torch.Tensor) -> None:
        self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)

    def update(self, idx: torch.Tensor, grad: torch.Tensor, t: int) -> torch.Tensor:
        """Adam's bias-corrected update at step ``t`` for examples ``idx``."""
        b1, b2 = ADAM_BETAS
        self.m[idx] = b1 * self.m[idx] + (1 - b1) * grad
        self.v[idx] = b2 * self.v[idx] + (1 - b2) * grad**2
        return (self.m[idx] / (1 - b1**t)) / ((self.v[idx] / (1 - b2**t)).sqrt() + ADAM_EPS)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    delta: float,
    n_samples: int,
    loss_fn: LossFn,
    early_stop: bool,
    generator: RNG,
    counter: QueryCounter,
) -> AttackOutput:
    search = ScoreSearch(counter, x, labels, targeted, loss_fn)
    x_adv = x.clone()
    adam = _Adam(x)
    per_step = 2 * max(1, n_samples // 2) + 1
    try:
        for t in range(1, steps + 1):
            active = counter.can_afford(per_step)
            if early_stop:
                active &= ~search.success
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            xa = x_adv[idx]
            grad = spsa_gradient(
                lambda p, o: search.loss(p, idx[o]),  # noqa: B023 - called within this iteration
                xa,
                delta=delta,
                n_samples=n_samples,
                generator=generator.rows(idx),
                clip=threat.clip_box,
            )
            update = adam.update(idx, grad, t)
            if threat.norm == "l2":  # an Adam-preconditioned direction, scaled to step_size in L2
                update = update / per_example(flatten(update).norm(dim=1).clamp_min(1e-12), update)
            x_new = threat.project(xa + step_size * update, x[idx])
            x_adv[idx] = x_new
            search.visit(x_new, idx)
    except STOP_ERRORS as exc:
        counter.stop(exc)
    return search.output()


@register_attack(
    "SPSA",
    norms=("linf", "l2"),
    needs_gradients=False,
    stochastic=True,
    query_based=True,
    paper="Uesato et al. 2018, arXiv:1802.05666",
)
def spsa(
    model: nn.Module | Oracle,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    steps: PositiveInt = 100,
    step_size: NonNegativeFloat | None = None,
    delta: PositiveFloat = 0.01,
    n_samples: Annotated[int, Range(2)] = 128,
    loss: LossSetting = "margin",
    max_queries: MaxQueries = None,
    early_stop: bool = True,
    generator: Randomness = None,
) -> AttackResult:
    """SPSA: estimate the loss gradient from scores with Rademacher finite differences, step with Adam.

    Each step spends ``n_samples`` queries on the estimate ``mean (f(x+δv) - f(x-δv)) / 2δ · v`` and one on the
    new point; Adam's update (linf) or its L2-normalised direction (l2) of length ``step_size`` is projected
    onto the threat model. The loss is the margin on log-probabilities, which equals the logit margin (the
    paper's loss). Examples stop as soon as they are adversarial (``early_stop``) or out of queries; the
    point with the best loss is returned. Queries are counted per example and an exhausted oracle budget or an
    unreachable target stops the attack with the points found so far (``info["stopped"]``).

    Args:
        model: a module returning logits, a ``Classifier``, or an :class:`~advlab.blackbox.Oracle` in scores mode.
        x: inputs inside ``threat.bounds``, shape ``(N, ...)``.
        y: true labels ``(N,)``.
        threat: ``linf`` or ``l2`` threat model.
        goal: ``None`` (untargeted) or ``Targeted(target)``.
        steps: Adam steps (100).
        step_size: Adam learning rate (linf) or L2 step length; default ``2.5 * eps / steps``, as for PGD (Uesato
            et al. use 0.01 at their eps).
        delta: finite-difference radius (0.01 in the paper, for inputs in [0, 1]).
        n_samples: queries per gradient estimate (128: 64 antithetic Rademacher pairs, at +delta and -delta).
        loss: ``"margin"`` (default), ``"ce"`` or a callable on log-probabilities.
        max_queries: per-example cap on queries, framework's clean and final checks included.
        early_stop: stop an example as soon as it is adversarial.
        generator: seed or ``torch.Generator`` for the Rademacher draws, or an :class:`~advlab.rng.ExampleRNG`
            (each example's draws from its own stream).

    Returns:
        AttackResult with ``queries`` per example and ``info["stopped"]`` (``None``, ``"budget"`` or
        ``"unreachable"``).

    Raises:
        ValueError: on bad settings, a labels-only oracle, or an unsupported norm.

    References:
        Uesato et al., "Adversarial Risk and the Dangers of Evaluating Against Weak Attacks", arXiv:1802.05666.

    Examples:
        >>> oracle = TorchOracle(model, mode="scores", budget=200_000)
        >>> result = spsa(oracle, x, y, ThreatModel("linf", 0.3), steps=100)
        >>> result.queries.float().median()
    """
    if step_size is None:
        step_size = STEP_SIZE_FACTOR * threat.eps / steps
    return run_query_attack(
        _core, model, x, y, threat, goal=goal, name="spsa", max_queries=max_queries, need_scores=True, steps=steps,
        step_size=step_size, delta=delta, n_samples=n_samples, loss_fn=get_loss(loss), early_stop=early_stop,
        generator=as_rng(generator),
    )  # fmt: skip


SPSA = spsa.config
