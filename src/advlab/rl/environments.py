"""The gymnasium classic-control tasks advlab trains and attacks policies on, and the optional import of gymnasium."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from advlab import validation

INSTALL_HINT = "pip install 'advlab[rl]'"
"""The one command that installs the optional reinforcement-learning dependency (gymnasium)."""


class GymnasiumMissing(ImportError):
    """gymnasium, the optional dependency of :mod:`advlab.rl`, is not installed (its message names the fix)."""


@dataclass(frozen=True)
class Task:
    """A supported environment and how a policy is trained on it.

    Args:
        name: the gymnasium id.
        solved: the mean greedy return at which training stops (the task's usual "solved" threshold).
        iterations: the most policy-gradient iterations training runs.
        episodes: episodes collected per iteration.
        lr: Adam's learning rate.
        gamma: discount of the returns the policy gradient weighs actions by.
    """

    name: str
    solved: float
    iterations: int
    episodes: int
    lr: float
    gamma: float = 0.99


TASKS = {
    "CartPole-v1": Task("CartPole-v1", solved=475.0, iterations=150, episodes=8, lr=1e-2),
    "Acrobot-v1": Task("Acrobot-v1", solved=-100.0, iterations=120, episodes=8, lr=1e-2),
}
"""Classic-control tasks that need no download and train on one CPU core in a minute or two (CartPole: balance a
pole, return = steps balanced, at most 500; Acrobot: swing a two-link arm up, return = -steps taken, at most 500)."""


def gymnasium() -> Any:
    """The ``gymnasium`` module, or :class:`GymnasiumMissing` naming ``pip install 'advlab[rl]'``.

    Examples:
        >>> env = gymnasium().make("CartPole-v1")
    """
    try:
        return importlib.import_module("gymnasium")
    except ImportError as exc:
        raise GymnasiumMissing(
            f"advlab.rl needs gymnasium, which is not installed: {INSTALL_HINT} (or pip install gymnasium)"
        ) from exc


def task(name: str) -> Task:
    """The :class:`Task` of a supported environment id; a ``ValueError`` naming the supported ones otherwise.

    Args:
        name: a gymnasium id from :data:`TASKS`.

    Examples:
        >>> task("CartPole-v1").solved
        475.0
    """
    if name not in TASKS:
        raise ValueError(
            f"env: expected one of {', '.join(TASKS)} (classic-control tasks that need no download), got {name!r}."
            f"{validation.did_you_mean(name, TASKS)}"
        )
    return TASKS[name]


def make_env(name: str) -> Any:
    """A new gymnasium environment of a supported task (checks the name first, then that gymnasium is installed).

    Args:
        name: a gymnasium id from :data:`TASKS`.

    Examples:
        >>> env = make_env("CartPole-v1")
        >>> obs, _ = env.reset(seed=0)
    """
    task(name)
    return gymnasium().make(name)
