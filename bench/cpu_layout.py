"""Channels-last kernels on CPU: what a forward (with and without input gradient) costs in each memory layout.

``advlab.models.CPU_CHANNELS_LAST``: attack mode holds a CPU network's 4-D kernels channels-last. This script times,
per architecture, a forward with the input gradient (what a gradient attack's step costs) and a gradient-free
forward (what a score-based attack's query costs) with the kernels in the module's own layout and channels-last (``Classifier.cpu_layout``, what attack mode does),
the two interleaved over ``--rounds`` rounds (median of ``--reps`` calls per round, median over rounds), in eval
mode with parameter gradients off, as attacks run. The networks: the zoo's Madry MNIST CNN, Wong CNN, CIFAR CNN
and PreAct ResNet-18, a small batch-norm CNN and a depthwise-separable one (defined below, seed 0).

Usage:
    PYTHONPATH=src .venv/bin/python bench/cpu_layout.py --threads 1 --batch 100 --out bench/out/cpu_layout_t1.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab import Classifier

ARCHS = ("madry-cnn", "wong-cnn", "cifar-cnn", "preact-resnet18", "bn-cnn", "depthwise-cnn")


def bn_cnn() -> nn.Module:
    """Two 3x3 conv-BN-ReLU blocks, a third after pooling, dropout and a two-layer head (CIFAR-sized input)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def depthwise_cnn() -> nn.Module:
    """MobileNet-style depthwise-separable blocks (a depthwise 3x3, a pointwise 1x1) with batch norm."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Conv2d(64, 128, 1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def build(arch: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if arch == "bn-cnn":
        return bn_cnn(), (3, 32, 32)
    if arch == "depthwise-cnn":
        return depthwise_cnn(), (3, 32, 32)
    from advlab import zoo

    shape = (1, 28, 28) if arch in ("madry-cnn", "wong-cnn") else (3, 32, 32)
    return zoo.create(arch, input_shape=shape, num_classes=10, seed=0), shape


def median_time(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_arch(arch: str, a: argparse.Namespace) -> dict:
    net, shape = build(arch)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, *shape, generator=g)
    y = torch.randint(0, 10, (a.batch,), generator=g)

    def grad_step() -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(net(xg), y, reduction="sum"), xg)[0]

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    times: dict[str, list[float]] = {k: [] for k in ("grad_own", "grad_cl", "fwd_own", "fwd_cl")}
    clf = Classifier(net, num_classes=10)  # its cpu_layout() is what attack mode does to the kernels
    for _ in range(a.rounds):
        for layout in ("own", "cl"):
            with clf.cpu_layout() if layout == "cl" else contextlib.nullcontext():
                times[f"grad_{layout}"].append(median_time(grad_step, a.reps))
                times[f"fwd_{layout}"].append(median_time(forward, a.reps))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "arch": arch,
        "ms_per_image": {k: 1e3 * v / a.batch for k, v in med.items()},
        "grad_ratio_cl_to_own": med["grad_cl"] / med["grad_own"],
        "forward_ratio_cl_to_own": med["fwd_cl"] / med["fwd_own"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    print(f"batch {a.batch}, {a.threads} thread(s), {a.rounds} rounds of {a.reps} calls; channels-last / own layout")
    print("| arch | forward + input gradient | gradient-free forward |\n|---|---|---|")
    for arch in a.archs.split(","):
        row = time_arch(arch, a)
        rows.append(row)
        print(f"| {arch} | {row['grad_ratio_cl_to_own']:.3f} | {row['forward_ratio_cl_to_own']:.3f} |", flush=True)
    if a.out:
        meta = {"torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        record = {"batch": a.batch, "threads": a.threads, "rounds": a.rounds, "reps": a.reps, **meta, "rows": rows}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
