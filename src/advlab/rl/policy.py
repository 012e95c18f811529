"""The policy network (an actor with a critic head), its safetensors file, and the view of it in observation-std units."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from advlab import io

POLICY_FILE = "policy.safetensors"
"""The file a policy is saved to inside its folder (weights, the observation scale, and the settings as metadata)."""


class Policy(nn.Module):
    """A small actor-critic MLP for a discrete-action task: logits over actions, and a value head for timing attacks.

    Args:
        obs_dim: length of an observation.
        n_actions: number of discrete actions.
        hidden: width of the two hidden tanh layers.
        env: the gymnasium id the policy was trained on (kept in its file).

    Attributes:
        obs_scale: per-dimension standard deviation of the observations the trained policy visits (ones until
            :func:`~advlab.rl.train.train_policy` measures it); attack budgets are in these units.

    Examples:
        >>> policy = Policy(4, 2)
        >>> policy(torch.zeros(1, 4)).shape
        torch.Size([1, 2])
    """

    obs_scale: torch.Tensor

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64, env: str = "") -> None:
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden, self.env = obs_dim, n_actions, hidden, env
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        self.register_buffer("obs_scale", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Action logits of observations ``(N, obs_dim)``."""
        return self.actor(self.trunk(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic's value estimate ``(N,)`` of observations ``(N, obs_dim)``."""
        return self.critic(self.trunk(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Greedy actions ``(N,)`` (the evaluated policy is deterministic: the most preferred action)."""
        with torch.no_grad():
            return self(obs).argmax(dim=-1)


class InScaleUnits(nn.Module):
    """A policy read in units of its observation scale: ``forward(z) = policy(z * obs_scale)``.

    Attacking this module with an L∞ budget ``eps`` moves each observation dimension by at most ``eps`` times that
    dimension's standard deviation over visited states, so one eps means the same on every dimension.

    Args:
        policy: the policy (its ``obs_scale`` is read, not copied).

    Examples:
        >>> scaled = InScaleUnits(policy)
        >>> scaled(obs / policy.obs_scale)  # the same logits as policy(obs)
    """

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Action logits of scaled observations ``z`` ``(N, obs_dim)``."""
        return self.policy(z * self.policy.obs_scale)


def save_policy(policy: Policy, directory: str | Path, extra: dict[str, object] | None = None) -> Path:
    """Atomically save a policy as ``DIR/policy.safetensors`` (weights + settings in the file's metadata).

    Args:
        policy: the policy to save.
        directory: the folder (created if absent).
        extra: JSON-friendly facts about training (returns, iterations, seed) stored beside the settings.

    Examples:
        >>> save_policy(policy, "runs/cartpole")
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    settings = {"obs_dim": policy.obs_dim, "n_actions": policy.n_actions, "hidden": policy.hidden, "env": policy.env}
    meta = {"settings": json.dumps(settings), "training": json.dumps(extra or {}, default=float)}
    return io.save_safetensors(path / POLICY_FILE, policy.state_dict(), metadata=meta)


def load_policy(directory: str | Path) -> tuple[Policy, dict[str, object]]:
    """Load a policy saved by :func:`save_policy`; return it (in eval mode) and its training facts.

    Args:
        directory: the folder holding ``policy.safetensors``.

    Raises:
        FileNotFoundError: when the folder has no policy file.

    Examples:
        >>> policy, training = load_policy("runs/cartpole")
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(directory) / POLICY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"policy: no {POLICY_FILE} in {directory}; train one with 'advlab rl --out DIR'")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    settings = json.loads(meta.get("settings", "{}"))
    policy = Policy(**settings)
    policy.load_state_dict(load_file(str(path)))
    return policy.eval(), json.loads(meta.get("training", "{}"))
