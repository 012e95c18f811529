"""Speed of advlab's PGD against a bare PyTorch loop (the limit) and against torchattacks, Foolbox and ART.

Workload (Madry et al. 2018, MNIST): PGD-40, linf eps = 0.3, step 0.01, one uniform random start, on the
MNIST CNN of Madry et al. (Conv32 5x5 - ReLU - MaxPool - Conv64 5x5 - ReLU - MaxPool - FC1024 - ReLU - FC10),
1000 MNIST test images in batches of 250. Every library attacks the same network (the same torch.nn.Module
object) on the same images in one process; rounds are interleaved, with the order rotated every round, and
the median over rounds is reported (also the median of per-round ratios to the bare loop), so a slow phase of
a shared machine hits every library alike.

What is timed is the attack call over all batches, nothing else (no data loading, no accuracy evaluation).
The bare loop is the same arithmetic as advlab's PGD with nothing around it: random start, then 40 x
(forward, cross-entropy, input gradient, signed step, clamp to the ball and the box). ``bare+checks`` adds to it
what advlab's result holds beyond ``x_adv`` and the peers do not compute: the clean prediction and the prediction
on the returned point, two gradient-free forwards per batch (42 forwards for PGD-40, as advlab's count shows).

The robust accuracy of each library is printed next to its time, so a reader can see they compute the same
thing; advlab and the bare loop draw the same random start from the same seed. advlab attacks a CPU network with its
convolution kernels in channels-last memory format (``advlab.models.CPU_CHANNELS_LAST``), which torch's CPU
convolutions run faster; ``bare-cl`` is the bare loop in that layout (the limit there, and advlab's exact twin), and
``advlab-own-layout`` advlab in the network's own layout (the bare loop's exact twin). Between layouts the gradients
differ by float rounding, so a signed step can differ where a gradient component is near zero.

Weights: random initialisation from a fixed seed by default (the cost of PGD hardly depends on the weights);
``--train-steps N`` trains the network first for N SGD steps on MNIST train (a minute or two on CPU), and
``--model DIR`` loads a model saved by ``advlab train`` / ``advlab.zoo.save_model`` (both are shorthands for one
``--weights`` item). A saved model's normalisation becomes the first layer of the module every library attacks.

The grid of issue 18 (threads 1 and 2, batch 100/250/500, untrained and trained weights) is one command:
``--threads``, ``--batch`` and ``--weights`` take comma-separated lists. Each thread count runs in its own process
(one after the other); inside it every (weights, batch) cell times all libraries side by side, interleaved.
``--weights`` items: ``untrained`` (random initialisation, seed 0), ``steps:N`` (N SGD steps on MNIST train, see
below) or a model folder saved by advlab.

Peers come from a separate venv (bench/setup_peers.sh) that shares this project's torch build:

    bash bench/setup_peers.sh
    nice bench/.peers-venv/bin/python bench/pgd_speed.py --rounds 3 --out bench/out/pgd_speed.json
    PYTHONPATH=src nice bench/.peers-venv/bin/python bench/pgd_speed.py --n 500 --threads 1,2 \
        --batch 100,250,500 --weights untrained,runs/madry-1ep --rounds 3 --out bench/out/pgd_speed_grid.json

With the project venv only (``.venv/bin/python bench/pgd_speed.py``) the peers are reported as not installed.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LIBRARIES = ("advlab", "bare", "bare+checks", "torchattacks", "foolbox", "art")
VARIANTS = ("advlab-whole", "advlab-chunks2x", "bare-unfrozen", "advlab-own-layout", "bare-cl")
"""Not libraries but levers, each timed like one when named in ``--libs``: advlab with its CPU chunks off
(``Classifier.chunked = False``) and with chunks twice the size (``models.CHUNK_ACTIVATION_BYTES`` doubled: what a
chunk sized by the thread count would give at two threads), and the bare loop with the parameters left requiring
gradients (as torchattacks leaves them; the bare loop and advlab switch them off)."""


# ---------------------------------------------------------------------- model and data
def madry_cnn() -> nn.Module:
    """advlab's zoo version when available, else the same architecture inline."""
    try:
        from advlab import zoo

        return zoo.create("madry-cnn", input_shape=(1, 28, 28), num_classes=10, seed=0)
    except (ImportError, AttributeError, ValueError):
        g = torch.Generator().manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.0))
        return net


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str, n: int | None, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as float32 (N, 1, 28, 28) in [0, 1]: advlab.data if present, else the IDX files in DATA_DIR/mnist."""
    try:
        from advlab.data import load_dataset

        ds = load_dataset("mnist", split=split, n=n, data_dir=data_dir, download=False)
        return ds.x, ds.y
    except ImportError:
        pass
    root = Path(data_dir or os.environ.get("ADVLAB_DATA", ".")) / "mnist"
    prefix = "t10k" if split == "test" else "train"
    x = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")[:n]
    y = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")[:n]
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def train_quickly(net: nn.Module, steps: int, data_dir: str | None, batch: int = 128, lr: float = 0.05) -> None:
    x, y = load_mnist("train", None, data_dir)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.eval()


# ---------------------------------------------------------------------- the attacks
def batches(x, y, batch_size):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def run_advlab(net, x, y, a, chunked=True, cpu_channels_last=True):
    from advlab import Classifier, ThreatModel
    from advlab.attacks import pgd

    clf = Classifier(net, num_classes=10, input_shape=(1, 28, 28))
    clf.chunked = clf.chunked and chunked  # the variant advlab-whole switches the CPU chunks off
    clf.cpu_channels_last = cpu_channels_last  # advlab-own-layout: the kernels as the network holds them
    threat = ThreatModel("linf", a.eps)
    g = torch.Generator().manual_seed(a.seed)
    out = [
        pgd(clf, xb, yb, threat, steps=a.steps, step_size=a.step_size, generator=g).x_adv
        for xb, yb in batches(x, y, a.batch)
    ]
    return torch.cat(out)


def bare_batch(net, xb, yb, a, g):
    """PGD's arithmetic on one batch and nothing else: random start from ``g``, then the steps."""
    delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * a.eps
    x_adv = (xb + delta).clamp(0, 1)
    for _ in range(a.steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(net(x_adv), yb, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + a.step_size * grad.sign()
        x_adv = (xb + (x_adv - xb).clamp(-a.eps, a.eps)).clamp(0, 1)
    return x_adv.detach()


def run_advlab_chunks2x(net, x, y, a):
    """advlab with chunks twice the size (batch 100 of the Madry CNN then runs whole, batch 500 in 4 chunks)."""
    from advlab import models

    size = models.CHUNK_ACTIVATION_BYTES
    models.CHUNK_ACTIVATION_BYTES = 2 * size
    try:
        return run_advlab(net, x, y, a)
    finally:
        models.CHUNK_ACTIVATION_BYTES = size


def run_bare(net, x, y, a, checks=False, freeze=True):
    """The limit: PGD's arithmetic and nothing else, drawing the random start as advlab does.

    With ``checks``, also what advlab's result holds beyond ``x_adv``: the clean prediction (``correct``) and the
    prediction on the returned point (``success``), two gradient-free forwards per batch (42 forwards for PGD-40).
    Without ``freeze`` the parameters keep requiring gradients, as torchattacks leaves them (``autograd.grad``
    computes only the input's either way).
    """
    g = torch.Generator().manual_seed(a.seed)
    frozen = list(net.parameters()) if freeze else []
    for p in frozen:
        p.requires_grad_(False)
    out = []
    try:
        for xb, yb in batches(x, y, a.batch):
            if not checks:
                out.append(bare_batch(net, xb, yb, a, g))
                continue
            with torch.no_grad():
                correct = net(xb).argmax(1) == yb
            out.append(bare_batch(net, xb, yb, a, g))
            with torch.no_grad():
                (correct & (net(out[-1]).argmax(1) != yb)).sum()  # success, as advlab's result holds it
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return torch.cat(out)


def run_bare_channels_last(net, x, y, a):
    """The bare loop on the network with its 4-D weights in channels-last memory format (the layout advlab attacks in
    on CPU, ``advlab.models.CPU_CHANNELS_LAST``): the limit in that layout."""
    net.to(memory_format=torch.channels_last)
    try:
        return run_bare(net, x, y, a)
    finally:
        net.to(memory_format=torch.contiguous_format)


def run_torchattacks(net, x, y, a):
    import torchattacks

    atk = torchattacks.PGD(net, eps=a.eps, alpha=a.step_size, steps=a.steps, random_start=True)
    return torch.cat([atk(xb, yb) for xb, yb in batches(x, y, a.batch)])


def run_foolbox(net, x, y, a):
    import foolbox as fb

    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    attack = fb.attacks.LinfPGD(abs_stepsize=a.step_size, steps=a.steps, random_start=True)
    return torch.cat([attack(fmodel, xb, yb, epsilons=a.eps)[1] for xb, yb in batches(x, y, a.batch)])


def run_art(net, x, y, a):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        net,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack = ProjectedGradientDescent(
        clf,
        norm=np.inf,
        eps=a.eps,
        eps_step=a.step_size,
        max_iter=a.steps,
        num_random_init=1,
        batch_size=a.batch,
        verbose=False,
    )
    x_adv = attack.generate(x=x.numpy(), y=y.numpy())
    return torch.from_numpy(x_adv)


RUNNERS = {
    "advlab": run_advlab,
    "bare": run_bare,
    "bare+checks": functools.partial(run_bare, checks=True),
    "torchattacks": run_torchattacks,
    "foolbox": run_foolbox,
    "art": run_art,
    "advlab-whole": functools.partial(run_advlab, chunked=False),
    "advlab-chunks2x": run_advlab_chunks2x,
    "bare-unfrozen": functools.partial(run_bare, freeze=False),
    "advlab-own-layout": functools.partial(run_advlab, cpu_channels_last=False),
    "bare-cl": run_bare_channels_last,
}
IMPORTS = {
    "advlab": "advlab",
    "bare": "torch",
    "bare+checks": "torch",
    "torchattacks": "torchattacks",
    "foolbox": "foolbox",
    "art": "art",
    "advlab-whole": "advlab",
    "advlab-chunks2x": "advlab",
    "bare-unfrozen": "torch",
    "advlab-own-layout": "advlab",
    "bare-cl": "torch",
}


def version_of(lib: str) -> str:
    mod = __import__(IMPORTS[lib])
    return getattr(mod, "__version__", "?")


def accuracy(net, x, y, batch=500) -> float:
    with torch.no_grad():
        pred = torch.cat([net(xb).argmax(1) for xb, _ in batches(x, y, batch)])
    return float((pred == y).float().mean())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="MNIST test images (default 1000)")
    p.add_argument("--batch", default="250", help="batch size, or a comma-separated list (e.g. 100,250,500)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the median is reported")
    p.add_argument(
        "--threads",
        default=str(os.cpu_count()),
        help="torch.set_num_threads (default: all cores); a comma-separated list runs one process per value",
    )
    p.add_argument(
        "--libs",
        default=",".join(LIBRARIES),
        help=f"comma-separated subset of {','.join(LIBRARIES)}; also the variants {','.join(VARIANTS)}",
    )
    p.add_argument(
        "--weights",
        help="comma-separated: untrained, steps:N (N SGD steps on MNIST train) or a model folder saved by advlab",
    )
    p.add_argument("--model", help="a model folder saved by advlab (zoo.save_model); default: Madry CNN")
    p.add_argument("--train-steps", type=int, default=0, help="SGD steps on MNIST train before timing (default 0)")
    p.add_argument(
        "--data-dir", default=os.environ.get("ADVLAB_DATA"), help="folder holding mnist/ (default: $ADVLAB_DATA)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    a.batches = [int(b) for b in a.batch.split(",")]
    a.thread_counts = [int(t) for t in a.threads.split(",")]
    if a.weights is None:
        a.weights = a.model or (f"steps:{a.train_steps}" if a.train_steps else "untrained")
    a.weight_list = [w.strip() for w in a.weights.split(",") if w.strip()]
    a.lib_list = [lib.strip() for lib in a.libs.split(",") if lib.strip()]
    unknown = sorted(set(a.lib_list) - set(LIBRARIES) - set(VARIANTS))
    if unknown:
        p.error(f"--libs: unknown {unknown}; choose from {LIBRARIES + VARIANTS}")
    return a


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: a saved model's normalisation as the first layer of the attacked module."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def load_weights(spec: str, data_dir: str | None) -> nn.Module:
    """The network of one ``--weights`` item, in eval mode."""
    if spec == "untrained":
        net = madry_cnn()
    elif spec.startswith("steps:"):
        net = madry_cnn()
        train_quickly(net, int(spec.split(":", 1)[1]), data_dir)
    else:
        from advlab.zoo import load_model

        clf = load_model(spec)
        net = clf.module
        if clf.has_normalization:  # every library attacks the same module on raw [0, 1] inputs
            net = nn.Sequential(Normalize(clf.mean, clf.std), net)
    return net.eval()


def available_libraries(libs: list[str]) -> tuple[list[str], dict[str, str]]:
    available, skipped = [], {}
    for lib in libs:
        try:
            version_of(lib)
            available.append(lib)
        except Exception as exc:  # not installed in this interpreter: say so and go on
            skipped[lib] = f"{type(exc).__name__}: {exc}"
    return available, skipped


def time_cell(net: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace, libs: list[str]) -> dict:
    """All libraries on one (weights, batch) cell, ``a.rounds`` interleaved rounds with the order rotated."""
    times: dict[str, list[float]] = {lib: [] for lib in libs}
    robust: dict[str, float] = {}
    x_adv_of: dict[str, torch.Tensor] = {}
    forwards: dict[str, float] = {}
    calls = [0]
    # Forwards are counted on the network's first layer, not on the network itself: a hook on the network would
    # change what a library may do with it (advlab runs a plain nn.Sequential layer by layer only without one). What
    # is counted is the examples the layer sees, so a forward run in chunks counts once; "forwards per batch" is
    # that count over the images attacked (advlab's one-example probe of the network adds 0.002 at 500 images).
    first = next(m for m in net.modules() if next(m.children(), None) is None)
    hook = first.register_forward_hook(lambda _m, args, _out: calls.__setitem__(0, calls[0] + args[0].shape[0]))
    for r in range(a.rounds):
        # Rotate the order each round so a machine that speeds up or slows down favours no library.
        for lib in libs[r % len(libs) :] + libs[: r % len(libs)]:
            calls[0] = 0
            t0 = time.perf_counter()
            x_adv = RUNNERS[lib](net, x, y, a)
            times[lib].append(time.perf_counter() - t0)
            if r == 0:
                forwards[lib] = calls[0] / len(x)
                x_adv_of[lib] = x_adv
                linf = float((x_adv - x).abs().amax())
                if linf > a.eps + 1e-5 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
                    print(f"warning: {lib} left the threat model (linf {linf:.4g})", file=sys.stderr)
                robust[lib] = accuracy(net, x_adv, y)
            print(
                f"threads {a.threads} batch {a.batch} round {r + 1}/{a.rounds} {lib:13s} {times[lib][-1]:8.2f} s",
                file=sys.stderr,
                flush=True,
            )
    hook.remove()
    bare = statistics.median(times["bare"]) if "bare" in times else None
    rows = []
    for lib in libs:
        med = statistics.median(times[lib])
        rows.append(
            {
                "library": lib,
                "version": version_of(lib),
                "median_s": med,
                "times_s": times[lib],
                "ratio_to_bare": med / bare if bare else None,
                "robust_accuracy": robust[lib],
                "forwards_per_batch": forwards[lib],
                # Median over rounds of the ratio to the bare loop of the same round: robust to load drifts.
                "paired_ratio_to_bare": statistics.median(t / b for t, b in zip(times[lib], times["bare"]))
                if bare
                else None,
            }
        )
    # advlab attacks in channels-last on CPU, so its twin is the bare loop in that layout; in the module's own layout,
    # the bare loop. Either pair draws the same random start and must give the same x_adv.
    pairs = [("advlab", "bare-cl"), ("advlab-own-layout", "bare"), ("advlab", "bare")]
    diffs = {
        f"{lib} vs {ref}": float((x_adv_of[lib] - x_adv_of[ref]).abs().max())
        for lib, ref in pairs
        if lib in x_adv_of and ref in x_adv_of
    }
    return {
        "batch": a.batch,
        "clean_accuracy": accuracy(net, x, y),
        "max_abs_diff_advlab_vs_bare": diffs.get("advlab vs bare"),
        "max_abs_diff": diffs,
        "results": rows,
    }


def print_cell(cell: dict, a: argparse.Namespace) -> None:
    print(
        f"\nPGD-{a.steps} linf eps={a.eps} step={a.step_size}, {a.n} MNIST test images, batch {cell['batch']}, "
        f"weights {cell['weights']}, {a.rounds} interleaved rounds, {cell['threads']} thread(s); "
        f"clean accuracy {cell['clean_accuracy']:.3f}"
    )
    print(
        "\n| library | version | median s | ratio to bare loop | median per-round ratio | robust accuracy "
        "| forwards / batch | all rounds (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in cell["results"]:
        ratio = f"{row['ratio_to_bare']:.3f}" if row["ratio_to_bare"] else "-"
        paired = f"{row['paired_ratio_to_bare']:.3f}" if row["paired_ratio_to_bare"] else "-"
        rounds = ", ".join(f"{t:.2f}" for t in row["times_s"])
        print(
            f"| {row['library']} | {row['version']} | {row['median_s']:.2f} | {ratio} | {paired} | {row['robust_accuracy']:.3f} "
            f"| {row['forwards_per_batch'] or '-'} | {rounds} |"
        )  # '-': the library calls the layers itself (ART)
    for pair, diff in cell.get("max_abs_diff", {}).items():
        print(f"\nmax |x_adv| difference, {pair}: {diff:.3g}")


def print_grid(cells: list[dict]) -> None:
    """One line per cell: the bare loop's median and every library's median per-round ratio to it."""
    libs = [row["library"] for row in cells[0]["results"] if row["library"] != "bare"]
    print("\nMedian per-round ratio to the bare loop (ratio of medians in brackets)\n")
    print("| threads | weights | batch | bare loop (s) | " + " | ".join(libs) + " |")
    print("|---|---|---|---|" + "---|" * len(libs))
    for cell in cells:
        by = {row["library"]: row for row in cell["results"]}
        ratios = [
            f"{by[lib]['paired_ratio_to_bare']:.3f} ({by[lib]['ratio_to_bare']:.3f})"
            if lib in by and by[lib]["paired_ratio_to_bare"]
            else "-"
            for lib in libs
        ]
        bare = f"{by['bare']['median_s']:.2f}" if "bare" in by else "-"
        print(f"| {cell['threads']} | {cell['weights']} | {cell['batch']} | {bare} | " + " | ".join(ratios) + " |")


def machine(a: argparse.Namespace) -> dict:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "threads": a.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_at_end": list(os.getloadavg()),
    }


def run_threads_in_processes(argv: list[str], a: argparse.Namespace) -> int:
    """One process per thread count, one after the other; their cells merged into one result."""
    cells = []
    for t in a.thread_counts:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "cell.json")
            child = [*strip_options(argv, ("--threads", "--out")), "--threads", str(t), "--out", out]
            subprocess.run([sys.executable, __file__, *child], check=True)
            cells += json.loads(Path(out).read_text())["cells"]
    for cell in cells:
        print_cell(cell, a)
    print_grid(cells)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        result = {"workload": workload(a), "machine": machine(a), "cells": cells}
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in names:
            skip = True
        elif not any(item.startswith(n + "=") for n in names):
            out.append(item)
    return out


def workload(a: argparse.Namespace) -> dict:
    return {
        "attack": "PGD linf",
        "eps": a.eps,
        "step_size": a.step_size,
        "steps": a.steps,
        "random_start": True,
        "n": a.n,
        "batches": a.batches,
        "weights": a.weight_list,
        "threads": a.thread_counts,
        "rounds": a.rounds,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if len(a.thread_counts) > 1:
        return run_threads_in_processes(argv, a)
    a.threads = a.thread_counts[0]
    torch.set_num_threads(a.threads)
    available, skipped = available_libraries(a.lib_list)
    x, y = load_mnist("test", a.n, a.data_dir)
    cells = []
    for spec in a.weight_list:
        net = load_weights(spec, a.data_dir)
        for batch in a.batches:
            a.batch = batch
            cell = time_cell(net, x, y, a, available)
            cell.update(weights=spec, threads=a.threads, load_avg=list(os.getloadavg()))
            cells.append(cell)
            print_cell(cell, a)
    if len(cells) > 1:
        print_grid(cells)
    for lib, why in skipped.items():
        print(f"skipped {lib}: {why}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        result = {"workload": workload(a), "machine": machine(a), "cells": cells, "skipped": skipped}
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
