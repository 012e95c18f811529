"""Attacks on a policy's observations (Huang et al. 2017), at every step or at chosen steps (Kos & Song 2017).

Budgets are L∞ radii in units of each observation dimension's standard deviation over the states the trained
policy visits (:attr:`Policy.obs_scale`): CartPole's pole angle moves by hundredths of a radian while its cart
velocity moves by tenths, so one raw eps would be huge on one dimension and nothing on another. An attack with
``eps = 0.1`` may move every dimension by a tenth of its usual spread. Observations are unbounded
(``bounds=(-inf, inf)``).

The gradient attacks are advlab's FGSM and PGD (:func:`advlab.attacks.make_attack`) on the policy read in those
units (:class:`~advlab.rl.policy.InScaleUnits`), untargeted with the policy's own preferred action as the label:
the cross-entropy loss toward that action is ascended, as Huang et al. do. The baseline is random noise of the
same size: a random sign per dimension, a corner of the same L∞ ball (the same L∞ and L2 norm as FGSM's step).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.attacks import make_attack
from advlab.rl.policy import InScaleUnits, Policy
from advlab.rl.rollout import Choose, greedy, run_episodes
from advlab.threat import ThreatModel

METHODS = ("fgsm", "pgd", "random")
"""How an observation is perturbed: advlab's FGSM or PGD, or random signs of the same L∞ size."""
TIMINGS = ("every", "every-N", "value-F", "preference-F")
"""When it is perturbed: every step; every N-th step; the fraction F of steps with the highest critic value (Kos &
Song 2017's value-guided injection); the fraction F with the largest gap between the most and least preferred
action's probability (Lin et al. 2017's strategically-timed attack)."""
UNBOUNDED = (-math.inf, math.inf)
PGD_STEPS = 10
"""PGD iterations per attacked observation."""


@dataclass(frozen=True)
class Timing:
    """When to attack: ``kind`` ``"every"``, ``"every-n"``, ``"value"`` or ``"preference"``, with its number.

    Args:
        kind: the strategy.
        every: N of ``"every-n"`` (attack steps 0, N, 2N, ...).
        fraction: F of ``"value"``/``"preference"``: the share of clean steps whose score passes the threshold.
    """

    kind: str = "every"
    every: int = 1
    fraction: float = 1.0

    @property
    def label(self) -> str:
        """The spelling :func:`parse_timing` reads (``"every"``, ``"every-4"``, ``"value-0.25"``)."""
        if self.kind == "every":
            return "every"
        return f"every-{self.every}" if self.kind == "every-n" else f"{self.kind}-{self.fraction:g}"


def parse_timing(text: str) -> Timing:
    """Read a timing spelled ``every``, ``every-N``, ``value-F`` or ``preference-F`` (N >= 1, 0 < F <= 1).

    Args:
        text: the spelling.

    Raises:
        ValueError: on another spelling, N < 1 or F outside (0, 1].

    Examples:
        >>> parse_timing("value-0.25")
        Timing(kind='value', every=1, fraction=0.25)
    """
    m = re.fullmatch(r"(every|value|preference)(?:-([0-9.]+))?", text.strip())
    if m is None or (m.group(1) != "every" and m.group(2) is None):
        raise ValueError(f"timing: expected one of {', '.join(TIMINGS)}, got {text!r}")
    kind, number = m.group(1), m.group(2)
    if kind == "every":
        if number is None:
            return Timing()
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"timing: N of {text!r} must be an integer >= 1")
        return Timing("every-n", every=int(number))
    fraction = float(number)
    if not 0 < fraction <= 1:
        raise ValueError(f"timing: the fraction of {text!r} must be in (0, 1], got {fraction}")
    return Timing(kind, fraction=fraction)


def preference_gap(policy: Policy, obs: torch.Tensor) -> torch.Tensor:
    """Probability of the most minus the least preferred action ``(N,)`` (Lin et al. 2017's timing score)."""
    with torch.no_grad():
        probs = torch.softmax(policy(obs), dim=-1)
    return probs.amax(dim=-1) - probs.amin(dim=-1)


def timing_score(policy: Policy, obs: torch.Tensor, kind: str) -> torch.Tensor:
    """The score a threshold timing ranks steps by: the critic's value or the preference gap."""
    if kind == "value":
        with torch.no_grad():
            return policy.value(obs)
    return preference_gap(policy, obs)


def calibrate(policy: Policy, env: str, timing: Timing, seed: int, episodes: int = 4) -> float:
    """The score threshold above which a fraction ``timing.fraction`` of clean greedy steps lies (-inf for others).

    Args:
        policy: the attacked policy.
        env: its task.
        timing: a ``"value"`` or ``"preference"`` timing (any other gives ``-inf``).
        seed: the first seed of the clean episodes the threshold is measured on.
        episodes: how many clean episodes.
    """
    if timing.kind not in ("value", "preference"):
        return -math.inf
    visited = torch.cat(run_episodes(env, episodes, seed, greedy(policy)).observations)
    return float(torch.quantile(timing_score(policy, visited, timing.kind), 1 - timing.fraction))


class Adversary:
    """Perturbs the observations a policy sees with ``method`` at budget ``eps`` at the steps ``timing`` picks.

    Args:
        policy: the attacked policy (its ``obs_scale`` sets the units of eps).
        method: ``"fgsm"``, ``"pgd"`` or ``"random"``.
        eps: L∞ radius in units of ``obs_scale`` (>= 0).
        timing: when to attack.
        threshold: the score threshold of a ``"value"``/``"preference"`` timing (see :func:`calibrate`).
        seed: seeds PGD's random start and the random signs.
        loss: the loss FGSM/PGD ascend (``"ce"``, Huang et al.'s cross-entropy toward the preferred action).

    Examples:
        >>> adversary = Adversary(policy, "fgsm", 0.1)
        >>> episodes = run_episodes("CartPole-v1", 10, 0, adversary.choose)
    """

    def __init__(
        self,
        policy: Policy,
        method: str = "fgsm",
        eps: float = 0.1,
        timing: Timing | None = None,
        threshold: float = -math.inf,
        seed: int = 0,
        loss: str = "ce",
    ) -> None:
        validation.check_choice("method", method, METHODS)
        self.loss = loss
        self.eps = validation.check_float("eps", eps, minimum=0.0)
        self.policy, self.method, self.timing, self.threshold = policy, method, timing or Timing(), threshold
        self.scaled = InScaleUnits(policy).eval()
        self.generator = torch.Generator().manual_seed(seed)
        self.config = None if method == "random" else make_attack(method, norm="linf", **self._settings())

    def _settings(self) -> dict[str, Any]:
        return {"loss": self.loss, **({"steps": PGD_STEPS} if self.method == "pgd" else {})}

    def when(self, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Which of the observations ``(N, obs_dim)`` at step indices ``t`` to attack (bool ``(N,)``)."""
        if self.timing.kind == "every":
            return torch.ones(len(obs), dtype=torch.bool)
        if self.timing.kind == "every-n":
            return t % self.timing.every == 0
        return timing_score(self.policy, obs, self.timing.kind) >= self.threshold

    def perturb(self, obs: torch.Tensor, preferred: torch.Tensor) -> torch.Tensor:
        """The perturbed observations (raw units) of ``obs`` whose clean preferred actions are ``preferred``."""
        z = obs / self.policy.obs_scale
        if self.config is None:
            signs = torch.randint(0, 2, z.shape, generator=self.generator).to(z.dtype) * 2 - 1
            z_adv = z + self.eps * signs
        else:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
            threat = ThreatModel("linf", self.eps, UNBOUNDED)
            z_adv = torch.as_tensor(self.config(self.scaled, z, preferred, threat, generator=seed).x_adv)
        return z_adv * self.policy.obs_scale

    def choose(self, obs: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The :data:`~advlab.rl.rollout.Choose` of the greedy policy seeing perturbed observations."""
        with torch.no_grad():
            preferred = self.policy(obs).argmax(dim=-1)
        hit = self.when(obs, t) if self.eps > 0 else torch.zeros(len(obs), dtype=torch.bool)
        if not hit.any():
            return preferred, hit
        seen = obs.clone()
        seen[hit] = self.perturb(obs[hit], preferred[hit])
        with torch.no_grad():
            return self.policy(seen).argmax(dim=-1), hit


def mean_return(
    policy: Policy, env: str, adversary: Adversary | None, episodes: int, seed: int
) -> tuple[float, float, float]:
    """Mean and standard deviation of the return over seeded episodes, and the attack frequency.

    Args:
        policy: the policy (acting greedily).
        env: its task.
        adversary: the attack, or ``None`` for clean episodes.
        episodes: how many episodes (seeds ``seed, seed + 1, ...``).
        seed: the first episode's seed.

    Examples:
        >>> mean_return(policy, "CartPole-v1", Adversary(policy, "fgsm", 0.1), 10, 0)
    """
    choose: Choose = greedy(policy) if adversary is None else adversary.choose
    run = run_episodes(env, episodes, seed, choose)
    return float(np.mean(run.returns)), float(np.std(run.returns)), run.attack_frequency
