"""Training a policy in place: REINFORCE with the critic as baseline (an advantage actor-critic on whole episodes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from advlab.rl.environments import make_env, task
from advlab.rl.policy import Policy
from advlab.rl.rollout import Choose, Episodes, greedy, run_episodes

log = logging.getLogger(__name__)

ENTROPY_BONUS = 0.01
"""Weight of the policy's entropy in the loss (keeps exploring early on)."""
EVAL_EVERY = 5
"""Iterations between greedy evaluations (which decide when training stops and which weights are kept)."""
EVAL_EPISODES = 8
"""Greedy episodes per evaluation."""
SCALE_EPISODES = 8
"""Greedy episodes whose visited observations give the policy's ``obs_scale``."""
MIN_SCALE = 1e-3
"""Floor of a dimension's observation scale (a dimension that never moves would otherwise get a zero budget)."""


@dataclass
class Training:
    """How training went: the greedy mean return per evaluation, the best one, iterations run, the seed."""

    env: str
    seed: int
    iterations: int = 0
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    best_return: float = float("-inf")

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored in the policy file's metadata)."""
        return {
            "env": self.env,
            "seed": self.seed,
            "iterations": self.iterations,
            "evaluations": self.evaluations,
            "best_return": self.best_return,
        }


def returns_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return from each step to the episode's end, ``G_t = r_t + gamma * G_{t+1}``.

    Args:
        rewards: the rewards of one episode ``(T,)``.
        gamma: the discount.

    Examples:
        >>> returns_to_go(torch.tensor([1.0, 1.0]), 0.5)
        tensor([1.5000, 1.0000])
    """
    out = torch.empty_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def sampling(policy: Policy, generator: torch.Generator) -> Choose:
    """The :data:`Choose` that samples actions from the policy's distribution (training)."""

    def choose(obs: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            probs = torch.softmax(policy(obs), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1), torch.zeros(len(obs), dtype=torch.bool)

    return choose


def policy_loss(policy: Policy, episodes: Episodes, gamma: float) -> torch.Tensor:
    """REINFORCE with the critic as baseline: ``-log pi(a|s) * (G - V(s))`` + Huber(V, G) - entropy bonus."""
    obs = torch.cat(episodes.observations)
    actions = torch.cat(episodes.actions)
    target = torch.cat([returns_to_go(r, gamma) for r in episodes.rewards])
    logits, value = policy(obs), policy.value(obs)
    logp = torch.log_softmax(logits, dim=-1)
    advantage = target - value.detach()
    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    actor = -(logp.gather(1, actions[:, None]).squeeze(1) * advantage).mean()
    entropy = -(logp.exp() * logp).sum(dim=1).mean()
    return actor + F.smooth_l1_loss(value, target) - ENTROPY_BONUS * entropy


def observation_scale(policy: Policy, env: str, seed: int) -> torch.Tensor:
    """Per-dimension standard deviation of the observations the greedy policy visits (floored at MIN_SCALE)."""
    visited = torch.cat(run_episodes(env, SCALE_EPISODES, seed, greedy(policy)).observations)
    return visited.std(dim=0).clamp_min(MIN_SCALE)


def initialise(policy: Policy, generator: torch.Generator) -> None:
    """Seeded LeCun-normal weights and zero biases (from ``generator``, so the global RNG is never touched)."""
    with torch.no_grad():
        for p in policy.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[1] ** 0.5)
            else:
                p.zero_()


def train_policy(
    env: str, *, seed: int = 0, hidden: int = 64, iterations: int | None = None
) -> tuple[Policy, Training]:
    """Train a :class:`Policy` on a supported task until its greedy return reaches the task's "solved" level.

    Every iteration samples a batch of seeded episodes, then takes one Adam step on :func:`policy_loss`. Every
    :data:`EVAL_EVERY` iterations the greedy policy is evaluated on fixed seeds; the best weights are kept. At the
    end the policy's ``obs_scale`` is measured on the observations it visits.

    Args:
        env: a supported gymnasium id (``"CartPole-v1"`` or ``"Acrobot-v1"``).
        seed: seeds the weights, the action sampling and the episodes.
        hidden: width of the hidden layers.
        iterations: the most iterations (default: the task's).

    Returns:
        The trained policy (eval mode) and a :class:`Training` record.

    Raises:
        ValueError: on an unsupported env. advlab.rl.environments.GymnasiumMissing: without gymnasium.

    Examples:
        >>> policy, training = train_policy("CartPole-v1", seed=0)
        >>> training.best_return
        500.0
    """
    spec = task(env)
    probe = make_env(env)
    gen = torch.Generator().manual_seed(seed)
    policy = Policy(probe.observation_space.shape[0], int(probe.action_space.n), hidden, env)
    probe.close()
    initialise(policy, gen)
    optimiser = torch.optim.Adam(policy.parameters(), lr=spec.lr)
    record, best = Training(env, seed), None
    for it in range(iterations if iterations is not None else spec.iterations):
        episodes = run_episodes(env, spec.episodes, seed * 100_003 + it * spec.episodes, sampling(policy, gen))
        optimiser.zero_grad()
        policy_loss(policy, episodes, spec.gamma).backward()
        optimiser.step()
        record.iterations = it + 1
        if (it + 1) % EVAL_EVERY == 0:
            score = float(np.mean(run_episodes(env, EVAL_EPISODES, 10**6 + seed, greedy(policy)).returns))
            record.evaluations.append((it + 1, score))
            log.debug("%s iteration %d: greedy return %.1f", env, it + 1, score)
            if score > record.best_return:
                record.best_return, best = score, {k: v.clone() for k, v in policy.state_dict().items()}
            if score >= spec.solved:
                break
    if best is not None:
        policy.load_state_dict(best)
    policy.eval()
    policy.obs_scale.copy_(observation_scale(policy, env, 2 * 10**6 + seed))
    return policy, record
