"""Mean episode return versus eps for each attack and timing, over the same seeded episodes: the RL report's data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from advlab import validation
from advlab.rl.attack import METHODS, Adversary, Timing, calibrate, mean_return
from advlab.rl.policy import Policy

CALIBRATION_SEED = 10**7
"""First seed of the clean episodes that set a threshold timing's score threshold (apart from the attacked ones)."""


@dataclass(frozen=True)
class Curve:
    """Return versus eps for one attack method and timing.

    Args:
        method: ``"fgsm"``, ``"pgd"`` or ``"random"``.
        timing: the timing's label (``"every"``, ``"every-4"``, ``"value-0.25"``...).
        eps: the budgets (units of the observation scale).
        mean_return: mean return per eps.
        std_return: standard deviation of the return over episodes per eps.
        attack_frequency: the measured fraction of steps attacked per eps.
    """

    method: str
    timing: str
    eps: list[float]
    mean_return: list[float] = field(default_factory=list)
    std_return: list[float] = field(default_factory=list)
    attack_frequency: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class RLSweep:
    """The result of :func:`sweep`: the clean return and one :class:`Curve` per (method, timing)."""

    env: str
    episodes: int
    seed: int
    clean_return: float
    clean_std: float
    obs_scale: list[float]
    curves: list[Curve]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)

    def curve(self, method: str, timing: str = "every") -> Curve:
        """The curve of ``method`` with ``timing`` (a ``KeyError`` if it was not run)."""
        for c in self.curves:
            if c.method == method and c.timing == timing:
                return c
        raise KeyError(f"no curve for method {method!r} with timing {timing!r}")


def check_eps(eps: Sequence[float]) -> list[float]:
    """The budgets as floats, refusing an empty list and eps < 0 with a message naming the fix."""
    values = [float(e) for e in eps]
    if not values:
        raise ValueError("eps: expected at least one budget, got none")
    bad = [e for e in values if not e >= 0]
    if bad:
        raise ValueError(f"eps: budgets are L∞ radii in units of the observation scale and must be >= 0, got {bad}")
    return values


def sweep(
    policy: Policy,
    eps: Sequence[float],
    *,
    methods: Sequence[str] = ("fgsm", "random"),
    timings: Sequence[Timing] = (Timing(),),
    episodes: int = 10,
    seed: int = 0,
) -> RLSweep:
    """Mean return of ``policy`` on its task under each method, timing and eps, over the same seeded episodes.

    Every combination plays the episodes seeded ``seed, seed + 1, ...``, so differences are the attack's, not the
    episodes'. A ``"value"``/``"preference"`` timing's threshold is calibrated once on separate clean episodes.

    Args:
        policy: a trained policy (its ``env`` names the task; its ``obs_scale`` the units of eps).
        eps: L∞ budgets in units of the observation scale (each >= 0).
        methods: any of ``"fgsm"``, ``"pgd"``, ``"random"``.
        timings: when to attack (see :func:`~advlab.rl.attack.parse_timing`).
        episodes: episodes per point.
        seed: the first episode's seed (and the attacks' seed).

    Returns:
        RLSweep.

    Raises:
        ValueError: on eps < 0, an unknown method, episodes < 1.

    References:
        Huang et al., "Adversarial Attacks on Neural Network Policies", arXiv:1702.02284.
        Kos & Song, "Delving into adversarial attacks on deep policies", arXiv:1705.06452.

    Examples:
        >>> result = sweep(policy, [0.0, 0.1, 0.2], methods=("fgsm", "random"), episodes=10)
        >>> result.curve("fgsm").mean_return
    """
    budgets = check_eps(eps)
    for m in methods:
        validation.check_choice("methods", m, METHODS)
    validation.check_int("episodes", episodes, minimum=1)
    start = time.perf_counter()
    clean, clean_std, _ = mean_return(policy, policy.env, None, episodes, seed)
    curves = []
    for timing in timings:
        threshold = calibrate(policy, policy.env, timing, CALIBRATION_SEED + seed)
        for method in methods:
            curve = Curve(method, timing.label, budgets)
            for e in budgets:
                adversary = Adversary(policy, method, e, timing, threshold, seed=seed)
                mean, std, freq = mean_return(policy, policy.env, adversary, episodes, seed)
                curve.mean_return.append(mean)
                curve.std_return.append(std)
                curve.attack_frequency.append(freq)
            curves.append(curve)
    return RLSweep(
        policy.env, episodes, seed, clean, clean_std, policy.obs_scale.tolist(), curves, time.perf_counter() - start
    )
