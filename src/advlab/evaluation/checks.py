"""Gradient-masking checks that :func:`advlab.evaluate` runs by default, each with a pass/fail and its meaning.

After Carlini et al., "On Evaluating Adversarial Robustness" (arXiv:1902.06705) and Athalye et al.,
"Obfuscated Gradients Give a False Sense of Security" (arXiv:1802.00420): a robust accuracy is only
trustworthy when the attacks behind it work. Each check probes one way they fail silently.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from advlab.attacks.pgd import pgd
from advlab.attacks.registry import list_attacks
from advlab.attacks.square import Square, square
from advlab.evaluation.eot import seeded
from advlab.evaluation.presets import CascadeEntry
from advlab.evaluation.report import CheckResult
from advlab.losses import cross_entropy
from advlab.models import Classifier
from advlab.oracles import find_oracle
from advlab.rng import ExampleRNG
from advlab.threat import ThreatModel, norm_of

log = logging.getLogger(__name__)

CHECK_EXAMPLES = 100
"""Clean-correct examples the checks run on: those with the smallest example ids (:func:`check_examples`)."""
CHECK_STEPS = 20
"""PGD steps of the baseline check attack; the "more steps" check uses ten times as many."""
MORE_STEPS_FACTOR = 10
LARGE_EPS_FRACTION = 0.5
"""The large-eps check uses half the box width per coordinate for linf (scaled by sqrt(d) for l2, d for l1):
the ball then holds the mid-grey input, reachable from every input, so no classifier can stay accurate."""
LARGE_EPS_MAX_ACCURACY = 0.10
"""Accuracy above this at the large eps fails the check ("about zero")."""
MORE_STEPS_TOLERANCE = 0.02
"""More steps may raise accuracy by at most this fraction (and at least one example) before the check fails."""
ZERO_GRAD_MAX_FRACTION = 0.01
"""Fraction of examples with an all-zero input gradient tolerated."""
BLACKBOX_MAX_FRACTION = 0.01
"""Fraction of the clean-correct examples a black-box attack may break after the white-box ones failed."""
BLACKBOX_QUERY_BUDGET = 1000
"""Queries per example of the Square run of the black-box check when the cascade has no black-box attack."""
CHECK_UNITS = 4
"""Units of work :func:`run_checks` reports to its progress callback: gradients, large eps, more steps, black box."""
RANDOM_TOLERANCE = 1e-6
"""Largest logit difference between two identical calls still counted as deterministic (float noise)."""
GRADIENT_CHECKS = {
    "gradients": "Useful input gradients",
    "large_eps": "Accuracy goes to zero at a large eps",
    "more_steps": "More steps do not help the model",
    "loss_increases": "The attack loss increases",
    "blackbox": "Black-box does not beat white-box",
}
"""The checks after the randomness check, by name and title: each needs the model's input gradients (PGD, or
white-box stages for the black-box attacks to be compared with)."""
NO_GRADIENTS = (
    "the model has no input gradients (an oracle, or a module whose output autograd cannot trace back to its "
    "input), which this check needs; the attacks that ran need none"
)
"""The note of a gradient check skipped on a model without gradients."""


@dataclass
class CheckContext:
    """What the checks need from the evaluation."""

    model: Classifier  # the model attacks see (EOT-wrapped for random models)
    judge: Callable[[torch.Tensor, int], torch.Tensor]  # predictions as reported, given a seed
    x: torch.Tensor  # clean-correct check examples, on the model's device
    y: torch.Tensor
    norm: str
    eps_max: float
    bounds: tuple[float, float]
    seed: int  # a random model's own draws (torch's global generator)
    rng_seed: int  # the evaluation's seed: the checks' attacks draw from per-example streams keyed by it
    ids: torch.Tensor  # the check examples' ids (the keys of their streams)
    n_correct: int
    blackbox_breaks: list[tuple[float, str, int]]  # (eps, attack, examples broken after a white-box stage)
    robust_at_max: torch.Tensor  # bool per check example: survived the whole cascade at eps_max


def check_examples(correct: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The examples the checks run on: the :data:`CHECK_EXAMPLES` clean-correct ones with the smallest ids, in id order.

    A fixed pseudo-random sample of the correct examples (the ids hash their content), the same whatever the order
    of the data or how it is shared out.

    Args:
        correct: bool per example, whether the model classifies it correctly.
        ids: the example ids (:func:`advlab.evaluation.engine.example_ids`).

    Returns:
        Their indices, int64.

    Examples:
        >>> idx = check_examples(pred == y, example_ids(x, y))
    """
    candidates = correct.nonzero().flatten()
    return candidates[ids[candidates].argsort()[:CHECK_EXAMPLES]]


def check_rng(ctx: CheckContext, *stage: object, index: torch.Tensor | None = None) -> ExampleRNG:
    """Per-example streams of the check examples (those at ``index``) for the check attack ``stage``."""
    ids = ctx.ids if index is None else ctx.ids[index]
    return ExampleRNG(ctx.rng_seed, ("check", *stage), ids, device=ctx.x.device)


def has_input_gradients(model: Classifier, x: torch.Tensor) -> bool:
    """Whether the output of ``model`` depends on its input through autograd (gradient attacks can run on it).

    An oracle (:func:`~advlab.oracles.as_module`) has none, and costs no query to tell. Any other model gets one
    forward pass on the first example, in attack mode, with the global RNG restored afterwards (a random model's
    later draws are unchanged).

    Args:
        model: the classifier to probe.
        x: a batch of its inputs (only the first example is used).

    Examples:
        >>> has_input_gradients(as_module(oracle), x)
        False
    """
    if find_oracle(model) is not None or x.shape[0] == 0:
        return find_oracle(model) is None
    probe = x[:1].detach().clone().to(model.device).requires_grad_(True)
    with model.attack_mode(warn_train_mode=False), seeded(0, model.device), torch.enable_grad():
        try:
            out = model(probe)
        except RuntimeError:  # e.g. a module calling .numpy() on its input; a broken model fails again here
            with torch.no_grad():
                model(probe.detach())
            return False
    return isinstance(out, torch.Tensor) and out.requires_grad


def gradient_free_attacks(norm: str) -> list[str]:
    """Registered attacks that need no gradients and support ``norm`` (the ones that work on an oracle), sorted."""
    return sorted(list_attacks(norm=norm, needs_gradients=False))


def refuse_score_attacks(entries: tuple[CascadeEntry, ...], norm: str) -> None:
    """Raise before any query when the cascade holds attacks that read scores and the oracle reveals only labels.

    Raises:
        ValueError: naming those attacks and listing the decision-based ones (from the registry's flags).
    """
    bad = [e.label for e in entries if type(e.config).needs_scores]
    if not bad:
        return
    usable = sorted(list_attacks(norm=norm, needs_scores=False))
    hint = (
        f"Attacks that need only labels ({norm}): {', '.join(usable)}; e.g. attacks=[{usable[0]!r}]."
        if usable
        else f"No registered attack works on labels alone for {norm}; choose another norm or an oracle in 'scores' mode."
    )
    raise ValueError(
        f"attacks: the oracle reveals only labels (mode 'labels'), so {', '.join(map(repr, bad))} cannot run on it "
        f"(they read class scores). {hint}"
    )


def refuse_gradient_attacks(entries: tuple[CascadeEntry, ...], norm: str) -> None:
    """Raise before any work when the cascade holds gradient attacks and the model has no gradients.

    Raises:
        ValueError: naming the gradient attacks of the cascade and listing the attacks that work on oracles (read
            from the registry's capability flags).
    """
    bad = [e.label for e in entries if type(e.config).needs_gradients]
    if not bad:
        return
    usable = gradient_free_attacks(norm)
    hint = (
        f"Attacks that work on oracles ({norm}): {', '.join(usable)}; e.g. attacks=[{usable[-1]!r}] "
        f"(advlab evaluate --attacks {usable[-1]}); those that need only labels: "
        f"{', '.join(sorted(list_attacks(norm=norm, needs_scores=False))) or 'none'}."
        if usable
        else f"No registered attack works on oracles for {norm}; choose another norm."
    )
    raise ValueError(
        f"attacks: the model has no input gradients (an oracle, which only answers queries, or a module that "
        f"autograd cannot trace), so {', '.join(map(repr, bad))} cannot run on it. {hint}"
    )


def skipped_checks(detail: str) -> list[CheckResult]:
    """The gradient checks (:data:`GRADIENT_CHECKS`) as skipped, each with ``detail`` saying why."""
    return [
        CheckResult(name=name, title=title, status="skipped", value=None, threshold=None, detail=detail, meaning="")
        for name, title in GRADIENT_CHECKS.items()
    ]


def _large_eps(norm: str, bounds: tuple[float, float], x: torch.Tensor) -> float:
    """Half the input box in ``norm``; where the box is unbounded (standardised features), the radius from which
    every check example reaches the middle of the examples' range, feature by feature."""
    d = x[0].numel()
    if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])):
        flat = x.reshape(x.shape[0], -1)
        middle = (flat.amax(0) + flat.amin(0)) / 2
        return float(norm_of(flat - middle, norm).max())
    width = (bounds[1] - bounds[0]) * LARGE_EPS_FRACTION
    return {"linf": width, "l2": width * math.sqrt(d), "l1": width * d}.get(norm, float(d))


def _pgd_accuracy(ctx: CheckContext, eps: float, steps: int, loss: str = "ce") -> tuple[float, torch.Tensor | None]:
    threat = ThreatModel(ctx.norm, eps, ctx.bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-gradient warnings are reported by the gradient check
        rng = check_rng(ctx, "pgd", eps, steps, loss)
        res = pgd(ctx.model, ctx.x, ctx.y, threat, steps=steps, loss=loss, generator=rng)
    pred = ctx.judge(torch.as_tensor(res.x_adv), ctx.seed)
    return float((pred == ctx.y).float().mean()), res.loss_trace


def check_randomness(max_change: float, eot_samples: int | None) -> CheckResult:
    """The model's output must not change between two identical calls."""
    random = max_change > RANDOM_TOLERANCE
    return CheckResult(
        name="randomness",
        title="Deterministic output",
        status="fail" if random else "pass",
        value=max_change,
        threshold=RANDOM_TOLERANCE,
        detail=(
            f"two identical calls differ by up to {max_change:.3g} in the logits; "
            + (
                f"attacks used expectation over transformation with {eot_samples} samples"
                if eot_samples
                else "the attacks saw the noisy answers (an oracle is not averaged)"
            )
        )
        if random
        else "two identical calls give the same logits",
        meaning="A random model (dropout at test time, noise layers) turns gradients into noise; single-sample "
        "attacks overestimate its robustness. The evaluation averaged the logits over several draws (EOT, "
        "Athalye et al. 2018) for the attacks and reports accuracy with the randomness on.",
    )


def check_gradients(ctx: CheckContext) -> CheckResult:
    """Input gradients of the loss must be finite and not all zero."""
    x = ctx.x.detach().requires_grad_(True)
    logits = ctx.model(x)
    (grad,) = torch.autograd.grad(cross_entropy(logits, ctx.y, False).sum(), x)
    flat = grad.reshape(grad.shape[0], -1)
    nonfinite = float((~torch.isfinite(flat)).any(1).float().mean())
    zero = float((flat == 0).all(1).float().mean())
    bad = nonfinite > 0 or zero > ZERO_GRAD_MAX_FRACTION
    return CheckResult(
        name="gradients",
        title="Useful input gradients",
        status="fail" if bad else "pass",
        value=max(zero, nonfinite),
        threshold=ZERO_GRAD_MAX_FRACTION,
        detail=f"{100 * zero:.1f}% of examples have an all-zero input gradient, {100 * nonfinite:.1f}% a non-finite one",
        meaning="Zero or non-finite gradients (a non-differentiable layer such as rounding/quantisation, a saturated "
        "softmax, a final softmax followed by log) stop gradient attacks without making the model robust. "
        "Use BPDA or a differentiable surrogate, black-box attacks, or remove the masking layer.",
    )


def settled_by_cascade(ctx: CheckContext, eps: float) -> bool:
    """Whether the cascade already broke every check example at an eps at most ``eps``.

    Then every check example has an adversarial point inside the ball of radius ``eps`` (its worst case at
    ``eps_max``): accuracy there is 0, the attacks demonstrably work on every example, and the evaluation's robust
    accuracy of these examples cannot be overstated. The checks that only ask this (large eps, more steps) need no
    attack of their own: on a model that nothing resists they would cost ten times the cascade.

    Args:
        ctx: what the checks need from the evaluation.
        eps: the radius the check attacks at.
    """
    return ctx.x.shape[0] > 0 and not bool(ctx.robust_at_max.any()) and eps >= ctx.eps_max


def check_large_eps(ctx: CheckContext) -> CheckResult:
    """At a huge eps accuracy must fall to about zero (it has, when the cascade broke every check example)."""
    eps = _large_eps(ctx.norm, ctx.bounds, ctx.x)
    bounded = math.isfinite(ctx.bounds[0]) and math.isfinite(ctx.bounds[1])
    where = "half the input box" if bounded else "every example reaches the middle of the data, margin loss"
    if settled_by_cascade(ctx, eps):
        return _large_eps_result(0.0, f"the cascade broke all {ctx.x.shape[0]} examples at eps = {ctx.eps_max:g}, "
                                 f"inside the ball of eps = {eps:.4g} ({where}): accuracy 0 there, no PGD needed")  # fmt: skip
    # Unbounded, the ball reaches far from the data, where a ReLU network's softmax saturates (p = 1 in float32: a
    # zero cross-entropy gradient without any masking); the margin loss does not saturate.
    loss = "ce" if bounded else "margin"
    acc, _ = _pgd_accuracy(ctx, eps, CHECK_STEPS, loss)
    detail = (
        f"PGD-{CHECK_STEPS} at eps = {eps:.4g} ({where}) leaves {100 * acc:.1f}% accuracy on {ctx.x.shape[0]} examples"
    )
    return _large_eps_result(acc, detail)


def _large_eps_result(acc: float, detail: str) -> CheckResult:
    bad = acc > LARGE_EPS_MAX_ACCURACY
    return CheckResult(
        name="large_eps",
        title="Accuracy goes to zero at a large eps",
        status="fail" if bad else "pass",
        value=acc,
        threshold=LARGE_EPS_MAX_ACCURACY,
        detail=detail,
        meaning="Every input can be moved to the same mid-grey point inside this ball, so no classifier is robust "
        "there. Accuracy well above zero means the attack is not working (masked or obfuscated gradients), "
        "not that the model is robust.",
    )


MORE_STEPS_TITLE = "More steps do not help the model"
LOSS_TITLE = "The attack loss increases"
MORE_STEPS_MEANING = (
    "A stronger attack (more iterations) should never find fewer adversarial examples. If it does, "
    "the optimisation is unstable or the loss surface is masked; robust accuracy is not trustworthy."
)
"""The titles and meaning of the more-steps and loss checks, whether PGD ran or the cascade had settled them."""


def check_more_steps(ctx: CheckContext) -> tuple[CheckResult, CheckResult]:
    """More PGD steps must not raise accuracy; PGD's loss must increase (both settled when the cascade broke every
    check example: no attack can leave more than nothing robust, and the attacks' losses evidently rose)."""
    if settled_by_cascade(ctx, ctx.eps_max):
        return _settled_more_steps(ctx)
    acc_few, _ = _pgd_accuracy(ctx, ctx.eps_max, CHECK_STEPS)
    many = CHECK_STEPS * MORE_STEPS_FACTOR
    acc_many, trace = _pgd_accuracy(ctx, ctx.eps_max, many)
    m = ctx.x.shape[0]
    tol = max(1.0 / m, MORE_STEPS_TOLERANCE)
    steps_bad = acc_many > acc_few + tol + 1e-12
    steps = CheckResult(
        name="more_steps",
        title=MORE_STEPS_TITLE,
        status="fail" if steps_bad else "pass",
        value=acc_many - acc_few,
        threshold=tol,
        detail=f"at eps = {ctx.eps_max:g}: PGD-{CHECK_STEPS} leaves {100 * acc_few:.1f}%, PGD-{many} leaves "
        f"{100 * acc_many:.1f}% on {m} examples",
        meaning=MORE_STEPS_MEANING,
    )
    if trace is None or trace.numel() < 2:
        return steps, _skipped_loss("PGD returned no loss trace")
    first, last = float(trace[0]), float(trace[-1])
    finite = math.isfinite(first) and math.isfinite(last)
    loss_bad = not finite or not last > first + 1e-6 * max(1.0, abs(first))
    loss = CheckResult(
        name="loss_increases",
        title=LOSS_TITLE,
        status="fail" if loss_bad else "pass",
        value=(last - first) if finite else None,
        threshold=0.0,
        detail=f"PGD-{many} mean cross-entropy went from {first:.4g} (first step) to {last:.4g} (last step)",
        meaning="Gradient ascent on the loss must raise it. A flat or falling curve means the gradients carry no "
        "information about the loss (masking, noise, non-differentiable parts) or the step size is wrong.",
    )
    return steps, loss


def _skipped_loss(detail: str) -> CheckResult:
    """The loss-increase check, not run for the reason ``detail`` gives."""
    return CheckResult(
        name="loss_increases", title=LOSS_TITLE, status="skipped", value=None, threshold=None, detail=detail, meaning=""
    )


def _settled_more_steps(ctx: CheckContext) -> tuple[CheckResult, CheckResult]:
    """The "more steps" checks when the cascade broke every check example at ``eps_max`` (no PGD run)."""
    why = f"the cascade broke all {ctx.x.shape[0]} examples at eps = {ctx.eps_max:g}"
    steps = CheckResult(
        name="more_steps",
        title=MORE_STEPS_TITLE,
        status="pass",
        value=0.0,
        threshold=max(1.0 / ctx.x.shape[0], MORE_STEPS_TOLERANCE),
        detail=f"{why}: no attack, however long, leaves fewer robust; PGD not run",
        meaning=MORE_STEPS_MEANING,
    )
    loss = _skipped_loss(f"{why}: the attacks' losses rose to the goal on every one; PGD not run")
    return steps, loss


_BLACKBOX_MEANING = (
    "Square uses no gradients. When it breaks examples that the gradient attacks could not, the "
    "gradients are misleading (masked); the white-box numbers alone would overstate robustness."
)


def _blackbox_result(broke: int | None, limit: int, detail: str) -> CheckResult:
    """The black-box check's result: ``broke`` examples broken against ``limit`` tolerated (``None``: skipped)."""
    return CheckResult(
        name="blackbox",
        title="Black-box does not beat white-box",
        status="skipped" if broke is None else ("fail" if broke > limit else "pass"),
        value=None if broke is None else float(broke),
        threshold=None if broke is None else float(limit),
        detail=detail,
        meaning=_BLACKBOX_MEANING,
    )


def check_blackbox(ctx: CheckContext) -> CheckResult:
    """A black-box attack must not beat the white-box ones.

    The cascade's own black-box stages after a gradient attack are judged when there are any; otherwise Square
    runs on the check examples the cascade left robust at the largest eps.
    """
    if ctx.blackbox_breaks:
        limit = max(1, math.floor(BLACKBOX_MAX_FRACTION * ctx.n_correct))
        eps, attack, broke = max(ctx.blackbox_breaks, key=lambda t: t[2])
        detail = (
            f"{attack} broke {broke} example(s) at eps = {eps:g} that the gradient attacks before it left robust "
            f"(tolerated: {limit})"
        )
        return _blackbox_result(broke, limit, detail)
    if ctx.norm not in Square.norms:
        detail = f"no black-box attack in the cascade, and Square is not available for {ctx.norm}"
        return _blackbox_result(None, 0, detail)
    idx = ctx.robust_at_max.nonzero().flatten()
    if idx.numel() == 0:
        detail = f"the cascade left no check example robust at eps = {ctx.eps_max:g}: nothing for Square to beat"
        return _blackbox_result(None, 0, detail)
    threat = ThreatModel(ctx.norm, ctx.eps_max, ctx.bounds)
    rng = check_rng(ctx, "square", index=idx)
    res = square(ctx.model, ctx.x[idx], ctx.y[idx], threat, max_queries=BLACKBOX_QUERY_BUDGET, generator=rng)
    broke = int((ctx.judge(torch.as_tensor(res.x_adv), ctx.seed) != ctx.y[idx]).sum())
    limit = max(1, math.floor(BLACKBOX_MAX_FRACTION * ctx.x.shape[0]))
    detail = (
        f"Square broke {broke} of the {idx.numel()} check examples the cascade left robust at "
        f"eps = {ctx.eps_max:g} (tolerated: {limit})"
    )
    return _blackbox_result(broke, limit, detail)


CHECK_ORDER = ("gradients", "large_eps", "more_steps", "blackbox")
"""The checks after the randomness check, in report order: the :data:`CHECK_UNITS` units of work."""
COSTLIEST_FIRST = ("blackbox", "more_steps", "large_eps", "gradients")
"""The checks by their cost (Square with :data:`BLACKBOX_QUERY_BUDGET` queries; PGD with 10x the steps; PGD; one
gradient), for sharing them out between processes."""


def run_checks(
    ctx: CheckContext, randomness: CheckResult, progress: Callable[[str], None] | None = None
) -> list[CheckResult]:
    """All checks, in report order. :func:`advlab.evaluate` turns each failure into a ``warnings.warn``.

    Args:
        ctx: what the checks need from the evaluation.
        randomness: the randomness check, measured before the attacks.
        progress: called with a check's name after each of the :data:`CHECK_UNITS` units of work.
    """
    done = run_check_units(ctx, CHECK_ORDER, progress)
    return [randomness, *(c for unit in CHECK_ORDER for c in done[unit])]


def run_check_units(
    ctx: CheckContext, units: Sequence[str], progress: Callable[[str], None] | None = None
) -> dict[str, list[CheckResult]]:
    """The checks ``units`` (names of :data:`CHECK_ORDER`), each with its results (``more_steps`` gives two).

    Each check depends only on ``ctx``, not on the others, so processes can share them out.

    Args:
        ctx: what the checks need from the evaluation.
        units: the checks to run.
        progress: called with a check's name after each.
    """
    run: dict[str, Callable[[CheckContext], list[CheckResult]]] = {
        "gradients": lambda c: [check_gradients(c)],
        "large_eps": lambda c: [check_large_eps(c)],
        "more_steps": lambda c: list(check_more_steps(c)),
        "blackbox": lambda c: [check_blackbox(c)],
    }
    out = {}
    for unit in CHECK_ORDER:
        if unit in units:
            out[unit] = run[unit](ctx)
            if progress is not None:
                progress(unit)
            for c in out[unit]:
                log.debug("check %s: %s (%s)", c.name, c.status, c.detail)
    return out
