"""Random models: detecting them, and expectation over transformation (EOT) for attacking them.

A model whose output changes between two identical calls (dropout at test time, noise layers, random
input transformations) gives each gradient a random direction; attacking one sample misjudges its
robustness. EOT (Athalye et al. 2018, arXiv:1802.00420) attacks the average of the logits over several draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from advlab.models import Classifier
from advlab.passes import PassCounter

DEFAULT_EOT_SAMPLES = 10
"""Logit draws averaged per forward pass when a random model is detected and no ``eot_samples`` is given."""


class EOT(nn.Module):
    """Average a random module's logits over ``samples`` draws.

    Args:
        module: the (random) network.
        samples: number of forward passes averaged.

    Examples:
        >>> clf = with_eot(clf, samples=10)
        >>> result = advlab.attacks.pgd(clf, x, y, threat)
    """

    def __init__(self, module: nn.Module, samples: int) -> None:
        super().__init__()
        self.module = module
        self.samples = int(samples)
        self.pass_counter: PassCounter | None = None
        """Counts each draw's forward and backward passes while set (:mod:`advlab.passes`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draws = [self.module(x) for _ in range(self.samples)]
        counter = self.pass_counter
        if counter is not None:
            for out in draws:
                counter.count(x.shape[0], out)
        return torch.stack(draws).mean(0)


def with_eot(clf: Classifier, samples: int) -> Classifier:
    """A :class:`~advlab.models.Classifier` like ``clf`` whose forward pass averages ``samples`` draws."""
    mean = torch.as_tensor(clf.mean).tolist() if clf.has_normalization else None
    std = torch.as_tensor(clf.std).tolist() if clf.has_normalization else None
    out = Classifier(
        EOT(clf.module, samples),
        mean=mean,
        std=std,
        bounds=clf.bounds,
        num_classes=clf.num_classes,
        input_shape=clf.input_shape,
        card=clf.card,
    )
    out.training = clf.training  # the wrapper itself, not the shared module: that keeps its own mode
    out.module.training = clf.module.training
    return out


@contextlib.contextmanager
def seeded(seed: int, device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Run a block with torch's default RNG seeded to ``seed``, restoring its previous state afterwards.

    Used only for random models, whose layers draw from the default RNG: it makes every stage of an
    evaluation reproducible (and resumable) without changing the caller's RNG stream.
    """
    if not enabled:
        yield
        return
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def stage_seed(*parts: int) -> int:
    """A 63-bit seed derived from ``(seed, eps index, attack index, batch index, ...)``, stable across runs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


@torch.no_grad()
def output_changes(clf: Classifier, x: torch.Tensor, seed: int) -> float:
    """Largest absolute difference between the logits of two identical calls on ``x`` (0 for deterministic models)."""
    with seeded(seed, x.device):
        a = clf(x)
        b = clf(x)
    return float((a - b).abs().max())
