"""What the processes of the distributed evaluation tests run (module-level: the processes are forked from a server).

The model is :class:`CentroidNet`: a nearest-class-mean classifier of scikit-learn's 8x8 digits (about 90% accurate),
computed row by row in float64, so that an example's logits do not depend on which other examples share its batch
(CPU matrix products round differently with the batch's size). Its weights are a closed form of the data (class
means, rounded to float32), the same in every process however many threads compute them: each process, and the
``advlab evaluate --model FILE:CentroidNet`` of the command-line tests, builds the same model.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import distributed
from advlab.evaluation import evaluate
from advlab.models import Classifier
from advlab.passes import count_passes

DIE_CODE = 17
"""Exit status of a rank the tests kill."""
TIMEOUT_S = 60
"""Collectives of the tests give up after this (a hung test fails instead of hanging CI)."""

multiprocessing.set_forkserver_preload(["torch", "advlab.evaluation", __name__])


def two(fn: Any, *args: Any) -> list[Any]:
    """``fn(*args)`` in two processes of one gloo group; their results in rank order."""
    return distributed.launch(fn, *args, nproc=2, timeout_s=TIMEOUT_S, start_method="forkserver")


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(d.target)


class CentroidNet(nn.Module):
    """Logits ``-|x - mean_c|^2 / 2`` up to a per-example constant: ``x . mean_c - |mean_c|^2 / 2``, row by row."""

    def __init__(self) -> None:
        super().__init__()
        x, y = digits()
        flat = x.flatten(1).double()
        means = torch.stack([flat[y == c].sum(0) / int((y == c).sum()) for c in range(10)]).float().double()
        self.register_buffer("means", means)
        self.register_buffer("offsets", (means * means).sum(1) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1).double()
        return ((z[:, None, :] * self.means).sum(-1) - self.offsets).float() * 20


class DieAfter(nn.Module):
    """``net``, except that on rank 1 the process exits with :data:`DIE_CODE` at forward pass ``calls``."""

    def __init__(self, net: nn.Module, calls: int) -> None:
        super().__init__()
        self.net, self.calls, self.seen = net, calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        if distributed.rank() == 1 and self.seen >= self.calls:
            os._exit(DIE_CODE)
        return self.net(x)


def light_cascade() -> list[Any]:
    """APGD-CE; APGD-T on the closest 30%, then share by share while a share pays (decided over every rank's
    examples); FMN; a Square whose focus is reached (it ranks every example of its stage); all shortened."""
    from advlab.attacks import make_attack
    from advlab.evaluation import Closest

    return [
        make_attack("apgd-ce", steps=20),
        Closest(make_attack("apgd-t", steps=10, n_target_classes=2), 0.3, extend=0.05),
        make_attack("fmn", steps=20),
        make_attack("square", max_queries=300, restarts=1, focus=0.2, focus_after=100),
    ]


def evaluate_rank(
    n: int, kwargs: dict[str, Any], die_after: int | None = None, seed_by_rank: bool = False, count: bool = False
) -> dict:
    """One rank's :func:`advlab.evaluate` of the first ``n`` digits; its report as a dict, and its world size.

    ``die_after``: rank 1 exits at that forward pass. ``seed_by_rank``: rank r evaluates with ``seed + r``.
    ``count``: the rank's model is wrapped in a pass counter (:func:`advlab.passes.count_passes`), whose passes come
    back as ``"passes"``.
    """
    x, y = digits()
    kwargs = {"attacks": light_cascade(), **kwargs}
    if seed_by_rank:
        kwargs["seed"] = kwargs.get("seed", 0) + distributed.rank()
    net: nn.Module = DieAfter(CentroidNet(), die_after if die_after is not None else 2**62)
    counter = None
    if count:
        net, counter = count_passes(net)
    clf = Classifier(net, num_classes=10, input_shape=(1, 8, 8)).eval()
    report = evaluate(clf, (x[:n], y[:n]), **kwargs)
    out = {"report": report.to_dict(), "rank": distributed.rank(), "size": distributed.world_size()}
    return {**out, "passes": counter.passes().to_dict()} if counter is not None else out


def checkpoint_files(folder: str) -> list[str]:
    """The files under ``folder``, relative to it (what a run left)."""
    root = Path(folder)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
