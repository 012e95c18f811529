"""The model-based-optimisation study: standard and adversarially trained surrogates, each optimised with and
without the data-domain constraint, the true score of what was found measured with the known function."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from advlab import validation
from advlab.optimisation.ascent import Trajectory, ascend
from advlab.optimisation.design import DesignProblem
from advlab.optimisation.surrogate import fit_surrogate


@dataclass(frozen=True)
class MBOSettings:
    """Settings of :func:`run_study`.

    Args:
        n: designs sampled from the data domain (the training data).
        starts: the best ``starts`` data designs are the ascent's starting points.
        eps: L∞ radius of the adversarially trained surrogate (> 0).
        epochs: surrogate training epochs.
        steps: ascent steps.
        lr: ascent's Adam learning rate.
        seed: seeds the data, the surrogates and PGD.
    """

    n: int = 1000
    starts: int = 16
    eps: float = 0.05
    epochs: int = 100
    steps: int = 300
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        validation.check_int("n", self.n, minimum=2)
        validation.check_int("starts", self.starts, minimum=1, maximum=self.n)
        validation.check_float("eps", self.eps, minimum=0.0)
        if not self.eps > 0:
            raise ValueError(f"eps: the robust surrogate needs an L∞ radius > 0, got {self.eps}")
        validation.check_int("epochs", self.epochs, minimum=1)
        validation.check_int("steps", self.steps, minimum=1)
        validation.check_float("lr", self.lr, minimum=0.0)


@dataclass(frozen=True)
class Variant:
    """One surrogate optimised one way: the final mean predicted score, true score, distance out of the domain,
    the best true score among its designs, and the trajectory."""

    surrogate: str
    constraint: str
    predicted: float
    true: float
    out_of_domain: float
    best_true: float
    trajectory: dict[str, list]
    test_mse: float


@dataclass(frozen=True)
class MBOResult:
    """The study's numbers: the problem, the optima, the data's best, and one :class:`Variant` per combination."""

    problem: dict[str, object]
    settings: dict[str, object]
    optimum_value: float
    domain_optimum_value: float
    data_best: float
    start_mean: float
    variants: list[Variant] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)

    def variant(self, surrogate: str, constraint: str) -> Variant:
        """The variant of ``surrogate`` (``"standard"``/``"robust"``) and ``constraint`` (``"none"``/``"domain"``)."""
        for v in self.variants:
            if (v.surrogate, v.constraint) == (surrogate, constraint):
                return v
        raise KeyError(f"no variant {surrogate!r} with constraint {constraint!r}")


def _variant(name: str, constraint: str, trajectory: Trajectory, problem: DesignProblem, mse: float) -> Variant:
    traj = {k: getattr(trajectory, k) for k in ("steps", "predicted", "true", "out_of_domain")}
    best = float(problem.score(trajectory.designs).max())
    return Variant(
        name, constraint, trajectory.predicted[-1], trajectory.true[-1], trajectory.out_of_domain[-1], best, traj, mse
    )


def run_study(problem: DesignProblem | None = None, settings: MBOSettings | None = None) -> MBOResult:
    """Train a standard and an adversarially trained surrogate on domain samples, optimise the best data designs
    for each surrogate's prediction with and without the domain constraint, and measure the true scores.

    Args:
        problem: the design problem (default :class:`DesignProblem()`).
        settings: the study's settings (default :class:`MBOSettings()`).

    Returns:
        MBOResult.

    References:
        Trabucco et al., "Conservative Objective Models for Effective Offline Model-Based Optimization",
        arXiv:2107.06882 (why a surrogate's optimum is out of its data's domain, and a conservative fix).

    Examples:
        >>> result = run_study(DesignProblem(dim=12), MBOSettings(eps=0.05))
        >>> result.variant("standard", "none").predicted > result.variant("standard", "none").true
        True
    """
    problem, settings = problem or DesignProblem(), settings or MBOSettings()
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(settings.seed)
    x = problem.sample(settings.n, gen)
    y = problem.score(x).float()
    x_test = problem.sample(1000, gen)
    starts = x[y.argsort(descending=True)[: settings.starts]]
    result = MBOResult(
        {"dim": problem.dim, "low": problem.low, "high": problem.high, "seed": problem.seed},
        asdict(settings),
        1.0,
        problem.domain_optimum()[1],
        float(y.max()),
        float(problem.score(starts).mean()),
    )
    for name, eps in (("standard", 0.0), ("robust", settings.eps)):
        surrogate = fit_surrogate(x, y, eps=eps, epochs=settings.epochs, seed=settings.seed)
        with torch.no_grad():
            mse = float(((surrogate(x_test) - problem.score(x_test)) ** 2).mean())
        for constraint in ("none", "domain"):
            traj = ascend(
                surrogate, starts, problem, in_domain=constraint == "domain", steps=settings.steps, lr=settings.lr
            )
            result.variants.append(_variant(name, constraint, traj, problem, mse))
    object.__setattr__(result, "seconds", time.perf_counter() - start)
    return result
