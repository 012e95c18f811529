"""The typed result of :func:`advlab.evaluate`: per-eps robust accuracy, per-stage numbers, masking checks, provenance.

Every number is a float or an int (never a string); :meth:`EvaluationReport.to_dict` gives the JSON form
that ``advlab evaluate`` writes, and :meth:`EvaluationReport.from_dict` reads it back (without the tensors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from advlab.passes import Passes
from advlab.threat import format_eps

CI_METHOD = "wilson"
"""Confidence intervals are Wilson score intervals (95%)."""


@dataclass
class Interval:
    """A confidence interval for a proportion."""

    low: float
    high: float
    level: float = 0.95
    method: str = CI_METHOD


@dataclass
class NormStats:
    """Mean, median and max of a per-example perturbation norm (``None`` when no example was broken)."""

    mean: float | None
    median: float | None
    max: float | None
    count: int = 0


@dataclass
class StageResult:
    """One stage of the cascade: one attack at one eps, run on the examples still robust before it.

    Attributes:
        attack: the attack's label (``"apgd-ce"``, ``"pgd"``...).
        eps: the radius of this stage.
        n_attacked: examples the attack ran on (still robust when the stage started).
        n_broken: of those, how many it broke (verified on the returned point).
        success_rate: ``n_broken / n_attacked`` (``None`` when nothing was left to attack).
        accuracy_after: robust accuracy over all evaluated examples after this stage.
        wall_time_s: seconds spent in this stage (summed over batches and resumed runs).
        queries_median: median model queries over the examples it broke, for query-based attacks.
        queries_mean: mean model queries over every example it ran on, for query-based attacks.
        forward_passes: examples run forward through the model in this stage (:mod:`advlab.passes`): the attack's
            forwards, its boundary's (the clean look, the success check) and the verification of its points; summed
            over batches, resumed runs and processes.
        backward_passes: examples whose gradient went back through the model in this stage.
        forward_per_example: ``forward_passes / n_attacked`` (``None`` when nothing was attacked).
        backward_per_example: ``backward_passes / n_attacked``.
    """

    attack: str
    eps: float
    n_attacked: int
    n_broken: int
    success_rate: float | None
    accuracy_after: float
    wall_time_s: float
    queries_median: float | None = None
    queries_mean: float | None = None
    forward_passes: int = 0
    backward_passes: int = 0
    forward_per_example: float | None = None
    backward_per_example: float | None = None


@dataclass
class EvaluationPasses:
    """What an evaluation spent, in forward and backward passes of the model counted in examples.

    One example through the model once is one forward pass, one example's gradient back through it one backward pass
    (:mod:`advlab.passes`): the unit AutoAttack's and A3's cost comparisons use, which compares across machines.

    Attributes:
        clean: the clean predictions, with the probes before them (one example's input gradient; two calls on up to
            16 examples to tell a random model), made once (a resumed run keeps the first run's).
        attacks: every stage of the cascade at every eps, summed (each stage's own are in :class:`StageResult`).
        checks: the gradient-masking checks, summed.
        checks_by_name: each check's passes (``"gradients"``, ``"large_eps"``, ``"more_steps"``, ``"blackbox"``).
        total: ``clean + attacks + checks``: everything the evaluation spent, over every process.
        forward_per_example: ``total.forward`` over the evaluated examples.
        backward_per_example: ``total.backward`` over the evaluated examples.
    """

    clean: Passes
    attacks: Passes
    checks: Passes
    checks_by_name: dict[str, Passes]
    total: Passes
    forward_per_example: float
    backward_per_example: float

    @classmethod
    def of(cls, *, clean: Passes, attacks: Passes, checks_by_name: dict[str, Passes], n: int) -> EvaluationPasses:
        """The totals of ``clean``, ``attacks`` and the checks, and the per-example figures over ``n`` examples.

        Args:
            clean: the clean pass's.
            attacks: the stages', summed.
            checks_by_name: each check's.
            n: the evaluated examples.
        """
        checks = sum(checks_by_name.values(), Passes())
        total = clean + attacks + checks
        return cls(
            clean=clean,
            attacks=attacks,
            checks=checks,
            checks_by_name=dict(checks_by_name),
            total=total,
            forward_per_example=total.forward / n if n else 0.0,
            backward_per_example=total.backward / n if n else 0.0,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationPasses:
        """Read back the JSON form (:meth:`EvaluationReport.to_dict`)."""
        return cls(
            clean=Passes.of(d["clean"]),
            attacks=Passes.of(d["attacks"]),
            checks=Passes.of(d["checks"]),
            checks_by_name={k: Passes.of(v) for k, v in d.get("checks_by_name", {}).items()},
            total=Passes.of(d["total"]),
            forward_per_example=d["forward_per_example"],
            backward_per_example=d["backward_per_example"],
        )

    def summary(self) -> str:
        """One line: the total forward and backward passes, and per evaluated example.

        Examples:
            >>> report.passes.summary()
            '1,234,000 forward and 250,000 backward passes (1234.0 and 250.0 per example)'
        """
        return (
            f"{self.total.forward:,} forward and {self.total.backward:,} backward passes "
            f"({self.forward_per_example:.1f} and {self.backward_per_example:.1f} per example)"
        )


@dataclass
class EpsResult:
    """Everything measured at one eps."""

    eps: float
    n: int
    clean_accuracy: float
    robust_accuracy: float
    n_robust: int
    ci: Interval
    stages: list[StageResult]
    broken_by: dict[str, int]
    """Examples first broken (over the whole cascade up to this eps) by each attack; ``"clean"`` = misclassified."""
    perturbation: dict[str, NormStats]
    """``{"linf": NormStats, "l2": NormStats}`` over the adversarial examples found within this eps."""


@dataclass
class CheckResult:
    """One gradient-masking check: did it pass, what was measured, and what a failure means.

    ``status`` is ``"pass"``, ``"fail"`` or ``"skipped"`` (with ``passed`` ``True``, ``False``, ``None``).
    """

    name: str
    title: str
    status: str
    value: float | None
    threshold: float | None
    detail: str
    meaning: str

    @property
    def passed(self) -> bool | None:
        return {"pass": True, "fail": False}.get(self.status)


@dataclass
class EvaluationReport:
    """The result of :func:`advlab.evaluate`.

    Attributes:
        model: a short model name (from its card, or the class name).
        norm: the threat model's norm.
        eps: the radii, ascending.
        bounds: the input box.
        n: number of evaluated examples.
        clean_accuracy: accuracy on the unperturbed examples.
        clean_ci: 95% Wilson interval of the clean accuracy.
        results: one :class:`EpsResult` per eps.
        checks: the gradient-masking checks (empty when ``checks=False``).
        attacks: the cascade, in order: ``{"label", "name", "settings", "minimum_norm", "needs_gradients"}``.
        settings: the call's settings (preset, n, batch size, EOT...).
        seed: the base seed of every stage's generator.
        randomized: whether the model's output was random (expectation over transformation was used).
        eot_samples: logits averaged per forward pass for the attacks when ``randomized``.
        wall_time_s: total seconds (summed over resumed runs).
        provenance: versions, git commit, platform, time.
        passes: the forward and backward passes of the model the evaluation spent (clean pass, attacks, checks,
            total); ``None`` in a report written before passes were counted.
        clean_wall_time_s: seconds of the clean pass (with its probes); the longest process's.
        checks_wall_time_s: seconds of the gradient-masking checks.
        model_card: the model's card, when it has one.
        examples: per-example results: ``robust`` (N x len(eps) bools), ``broken_by`` (attack label, ``"clean"``
            for misclassified, ``None`` for robust), ``broken_eps`` (smallest eps broken at), ``label``,
            ``pred_clean``, ``pred_adv``.
        x, x_adv: the evaluated inputs and each example's worst case (the first adversarial example found;
            ``x`` itself where none was found). Tensors on the CPU, not written to JSON.
    """

    model: str
    norm: str
    eps: list[float]
    bounds: tuple[float, float]
    n: int
    clean_accuracy: float
    clean_ci: Interval
    results: list[EpsResult]
    checks: list[CheckResult]
    attacks: list[dict[str, Any]]
    settings: dict[str, Any]
    seed: int
    randomized: bool
    eot_samples: int | None
    wall_time_s: float
    provenance: dict[str, Any]
    model_card: dict[str, Any] | None
    examples: dict[str, list[Any]]
    classes: list[str] | None = None
    passes: EvaluationPasses | None = None
    clean_wall_time_s: float | None = None
    checks_wall_time_s: float | None = None
    x: torch.Tensor | None = field(default=None, repr=False, compare=False)
    x_adv: torch.Tensor | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ convenience
    def robust_accuracy(self, eps: float | None = None) -> float:
        """Robust accuracy at ``eps`` (default: the largest eps)."""
        return self.at(eps).robust_accuracy

    def at(self, eps: float | None = None) -> EpsResult:
        """The :class:`EpsResult` at ``eps`` (default: the largest)."""
        if eps is None:
            return self.results[-1]
        for r in self.results:
            if abs(r.eps - eps) <= 1e-12 * max(1.0, abs(eps)):
                return r
        raise ValueError(f"eps: {eps} was not evaluated; evaluated: {[r.eps for r in self.results]}")

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def headline(self) -> str:
        """One sentence: robust accuracy at the largest eps with its interval."""
        r = self.results[-1]
        sym = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}.get(self.norm, self.norm)
        return (
            f"robust accuracy at {sym} eps = {format_eps(r.eps, self.bounds)} is {100 * r.robust_accuracy:.1f}% "
            f"[{100 * r.ci.low:.1f}, {100 * r.ci.high:.1f}] (95% Wilson, n = {r.n})"
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self, *, include_examples: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (numbers stay numbers); tensors ``x``/``x_adv`` are left out."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("x", "x_adv"):
                continue
            if f.name == "examples" and not include_examples:
                continue
            out[f.name] = _plain(getattr(self, f.name))
        out["headline"] = self.headline()
        out["format"] = "advlab.evaluation/1"
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationReport:
        """Rebuild a report from :meth:`to_dict` output (``x``/``x_adv`` stay ``None``)."""
        results = [
            EpsResult(
                eps=r["eps"],
                n=r["n"],
                clean_accuracy=r["clean_accuracy"],
                robust_accuracy=r["robust_accuracy"],
                n_robust=r["n_robust"],
                ci=Interval(**r["ci"]),
                stages=[StageResult(**s) for s in r["stages"]],
                broken_by=dict(r["broken_by"]),
                perturbation={k: NormStats(**v) for k, v in r["perturbation"].items()},
            )
            for r in d["results"]
        ]
        return cls(
            model=d["model"],
            norm=d["norm"],
            eps=list(d["eps"]),
            bounds=tuple(d["bounds"]),
            n=d["n"],
            clean_accuracy=d["clean_accuracy"],
            clean_ci=Interval(**d["clean_ci"]),
            results=results,
            checks=[CheckResult(**c) for c in d.get("checks", [])],
            attacks=list(d["attacks"]),
            settings=dict(d["settings"]),
            seed=d["seed"],
            randomized=d["randomized"],
            eot_samples=d["eot_samples"],
            wall_time_s=d["wall_time_s"],
            provenance=dict(d["provenance"]),
            model_card=d.get("model_card"),
            examples=dict(d.get("examples", {})),
            classes=d.get("classes"),
            passes=EvaluationPasses.from_dict(d["passes"]) if d.get("passes") else None,
            clean_wall_time_s=d.get("clean_wall_time_s"),
            checks_wall_time_s=d.get("checks_wall_time_s"),
        )


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and tensors to plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar
        return value.item()
    return value
