"""Seeded, batched episodes: every episode of a batch steps together, so one forward (or one attack) serves them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from advlab.rl.environments import make_env

Choose = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``choose(obs, t) -> (actions, attacked)``: actions ``(N,)`` for the observations ``(N, obs_dim)`` of the episodes
still running at their step indices ``t`` ``(N,)``, and which of them were perturbed (bool ``(N,)``)."""


@dataclass(frozen=True)
class Episodes:
    """What a batch of episodes did.

    Args:
        returns: undiscounted return per episode ``(E,)``.
        observations: per episode, the clean observations it visited ``(T_e, obs_dim)``.
        actions: per episode, the actions taken ``(T_e,)``.
        rewards: per episode, the rewards received ``(T_e,)``.
        attacked: steps at which the observation the policy saw was perturbed, over all episodes.
    """

    returns: np.ndarray
    observations: list[torch.Tensor]
    actions: list[torch.Tensor]
    rewards: list[torch.Tensor]
    attacked: int

    @property
    def steps(self) -> int:
        """Steps taken over all episodes."""
        return sum(len(a) for a in self.actions)

    @property
    def attack_frequency(self) -> float:
        """The fraction of steps whose observation was perturbed."""
        return self.attacked / max(self.steps, 1)


def run_episodes(env: str, episodes: int, seed: int, choose: Choose) -> Episodes:
    """Run ``episodes`` episodes of ``env`` together, episode ``i`` reset with seed ``seed + i``.

    Args:
        env: a supported gymnasium id (:data:`~advlab.rl.environments.TASKS`).
        episodes: how many episodes.
        seed: the first episode's reset seed.
        choose: picks the actions of the running episodes (see :data:`Choose`).

    Returns:
        Episodes.

    Examples:
        >>> eps = run_episodes("CartPole-v1", 4, 0, lambda obs, t: (policy.act(obs), torch.zeros(len(obs), dtype=torch.bool)))
        >>> eps.returns.mean()
    """
    envs = [make_env(env) for _ in range(episodes)]
    obs = [torch.as_tensor(e.reset(seed=seed + i)[0], dtype=torch.float32) for i, e in enumerate(envs)]
    trace: list[list[tuple[torch.Tensor, int, float]]] = [[] for _ in envs]
    running = list(range(episodes))
    attacked = 0
    while running:
        t = torch.tensor([len(trace[i]) for i in running])
        actions, hit = choose(torch.stack([obs[i] for i in running]), t)
        attacked += int(hit.sum())
        still = []
        for i, a in zip(running, actions.tolist()):
            nxt, reward, terminated, truncated, _ = envs[i].step(a)
            trace[i].append((obs[i], a, float(reward)))
            obs[i] = torch.as_tensor(nxt, dtype=torch.float32)
            if not (terminated or truncated):
                still.append(i)
        running = still
    for e in envs:
        e.close()
    return Episodes(
        returns=np.array([sum(r for _, _, r in tr) for tr in trace]),
        observations=[torch.stack([o for o, _, _ in tr]) for tr in trace],
        actions=[torch.tensor([a for _, a, _ in tr]) for tr in trace],
        rewards=[torch.tensor([r for _, _, r in tr]) for tr in trace],
        attacked=attacked,
    )


def greedy(policy: torch.nn.Module) -> Choose:
    """The :data:`Choose` of a policy acting greedily on clean observations (nothing attacked)."""

    def choose(obs: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return policy(obs).argmax(dim=-1), torch.zeros(len(obs), dtype=torch.bool)

    return choose
