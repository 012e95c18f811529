"""Reinforcement-learning policies under observation attacks (Huang et al. 2017; Kos & Song 2017).

gymnasium is an optional dependency (``pip install 'advlab[rl]'``): this package imports without it, and the
functions that need an environment raise :class:`~advlab.rl.environments.GymnasiumMissing` naming the fix.

Examples:
    >>> from advlab.rl import train_policy, sweep
    >>> policy, _ = train_policy("CartPole-v1", seed=0)
    >>> sweep(policy, [0.0, 0.1, 0.2], methods=("fgsm", "random")).curve("fgsm").mean_return
"""

from advlab.rl.attack import METHODS, TIMINGS, Adversary, Timing, calibrate, mean_return, parse_timing
from advlab.rl.environments import INSTALL_HINT, TASKS, GymnasiumMissing, gymnasium, make_env, task
from advlab.rl.policy import InScaleUnits, Policy, load_policy, save_policy
from advlab.rl.rollout import Episodes, greedy, run_episodes
from advlab.rl.sweep import Curve, RLSweep, sweep
from advlab.rl.train import Training, train_policy

__all__ = [
    "INSTALL_HINT",
    "METHODS",
    "TASKS",
    "TIMINGS",
    "Adversary",
    "Curve",
    "Episodes",
    "GymnasiumMissing",
    "InScaleUnits",
    "Policy",
    "RLSweep",
    "Timing",
    "Training",
    "calibrate",
    "greedy",
    "gymnasium",
    "load_policy",
    "make_env",
    "mean_return",
    "parse_timing",
    "run_episodes",
    "save_policy",
    "sweep",
    "task",
    "train_policy",
]
