"""A toy problem with a closed-form robust accuracy, and fake attacks that break known subsets.

Inputs are ``(N, 2)`` in [0, 1]: ``x[:, 0] = 0.5 + margin`` (class 1 iff ``x0 > 0.5``) and ``x[:, 1]`` a tag
that says which fake attack may break the example. Under linf, moving ``x0`` down by eps flips the
prediction iff ``margin < eps``, so "broken at eps" has an exact oracle.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab import Classifier
from advlab.attacks.base import AttackOutput, run_attack
from advlab.attacks.registry import register_attack


class MarginModel(nn.Module):
    """Logits ``[0, 10 (x0 - 0.5)]``."""

    def __init__(self, quantize: bool = False) -> None:
        super().__init__()
        self.quantize = quantize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0]
        if self.quantize:  # non-differentiable: zero gradient almost everywhere
            x0 = torch.round(x0 * 20) / 20
        s = 10 * (x0 - 0.5)
        return torch.stack([torch.zeros_like(s), s], dim=1)


class NoisyMarginModel(MarginModel):
    """The margin model plus Gaussian logit noise drawn at every call (a random defence)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 0.1 * torch.randn_like(out)


def toy_model(quantize: bool = False, noisy: bool = False) -> Classifier:
    net = NoisyMarginModel() if noisy else MarginModel(quantize)
    return Classifier(net, num_classes=2, input_shape=(2,)).eval()


TAGS_A = (0.1, 0.3)
TAGS_B = (0.3, 0.7)
TAG_VALUES = (0.1, 0.3, 0.7, 0.9)


def toy_data(n: int = 40, n_wrong: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, margin)``: margins spread over (0, 0.45) off the eps grid; the last ``n_wrong`` mislabelled."""
    j = torch.arange(n, dtype=torch.float32)
    margin = 0.013 + (j * 0.37) % 0.43  # never equal to 0.05 / 0.15 / 0.3
    tag = torch.tensor(TAG_VALUES)[torch.arange(n) % len(TAG_VALUES)]
    x = torch.stack([0.5 + margin, tag], dim=1)
    y = torch.ones(n, dtype=torch.int64)
    y[n - n_wrong :] = 0
    return x, y, margin


def in_tags(x: torch.Tensor, tags: tuple[float, ...]) -> torch.Tensor:
    return torch.stack([(x[:, 1] - t).abs() < 1e-4 for t in tags]).any(0)


CALLS: dict[str, int] = {}
CRASH = {"after": None}


def _shift_core(model, x, labels, targeted, threat, *, tags):
    CALLS["shift"] = CALLS.get("shift", 0) + 1
    if CRASH["after"] is not None and CALLS["shift"] > CRASH["after"]:
        raise RuntimeError("simulated kill")
    x_adv = x.clone()
    mask = in_tags(x, tags)
    x_adv[mask, 0] -= threat.eps
    return x_adv


def _toy(config: str, name: str, norms: tuple[str, ...] = ("linf",), **flags):
    """Derive a toy attack's config without registering it (the conformance suite must not see it)."""
    return register_attack(
        config, name=name, norms=norms, paper="toy problem of tests/evaluation", register=False, **flags
    )


@_toy("ShiftA", "shift-a")
def shift_a(model, x, y, threat, *, goal=None, generator=None):
    """Moves x0 down by eps on the examples tagged in TAGS_A (optimal there), leaves the others."""
    return run_attack(_shift_core, model, x, y, threat, goal=goal, tags=TAGS_A)


@_toy("ShiftB", "shift-b")
def shift_b(model, x, y, threat, *, goal=None, generator=None):
    """Moves x0 down by eps on the examples tagged in TAGS_B."""
    return run_attack(_shift_core, model, x, y, threat, goal=goal, tags=TAGS_B)


@_toy("L2Only", "l2-only", norms=("l2",))
def l2_only(model, x, y, threat, *, goal=None, generator=None):
    """ShiftA for the l2 norm only."""
    return run_attack(_shift_core, model, x, y, threat, goal=goal, tags=TAGS_A)


ShiftA, ShiftB, L2Only = shift_a.config, shift_b.config, l2_only.config


def _minnorm_core(model, x, labels, targeted, threat):
    CALLS["minnorm"] = CALLS.get("minnorm", 0) + 1
    margin = x[:, 0] - 0.5
    x_adv = x.clone()
    x_adv[:, 0] = 0.5 - 1e-4  # just across the boundary: distance margin + 1e-4
    return AttackOutput(x_adv, info={"min_distance": margin + 1e-4})


@_toy("MinNorm", "toy-minnorm", minimum_norm=True)
def toy_minnorm(model, x, y, threat, *, goal=None, generator=None):
    """The exact minimum-norm attack of the toy problem (distance ``margin + 1e-4``)."""
    return run_attack(_minnorm_core, model, x, y, threat, goal=goal)


MinNorm = toy_minnorm.config
