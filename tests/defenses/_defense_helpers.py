"""Tiny deterministic data and models for the defense tests (digits 8x8, small MLPs)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

import advlab

_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) in [0, 1] and int64 labels."""
    if "d" not in _CACHE:
        d = load_digits()
        _CACHE["d"] = (torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(d.target))
    x, y = _CACHE["d"]
    return x.clone(), y.clone()


def mlp(seed: int = 0, hidden: int = 32) -> advlab.Classifier:
    """Flatten - Linear(64, hidden) - ReLU - Linear(hidden, 10), initialised from a private generator."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.0))
    return advlab.Classifier(net, num_classes=10, input_shape=(1, 8, 8))


def same_weights(a: torch.nn.Module, b: torch.nn.Module, exact: bool = True) -> None:
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        if exact:
            assert torch.equal(pa, pb), na
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
