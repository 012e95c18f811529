"""Chunked CPU forwards with and without the flat head of an ``nn.Sequential`` run once on the whole batch.

``Classifier`` runs eval-mode CPU forwards of convolutional networks in chunks (``models.Classifier.chunk_count``).
In a plain ``nn.Sequential`` the chunks stop at the first layer whose input is flat (after a ``Flatten``) and the
fully connected head runs once on the whole batch (``models.Classifier.call_chunked``). This script times, on the
zoo's Madry MNIST CNN and C&W CIFAR CNN (random weights), a forward (with input gradient, or without gradients) of
one batch three ways, interleaved: the module on the whole batch, advlab with the head chunked too (the rule before,
``models.plain_sequential`` patched to say no), and advlab as it is. Reported: the median time of each, and the two
advlab ways as ratios to the whole batch.

Usage:
    .venv/bin/python bench/sequential_head.py --threads 1 --rounds 20 --out bench/out/sequential_head_t1.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advlab import models, zoo
from advlab.models import Classifier

NETWORKS = {"madry-cnn": (1, 28, 28), "cifar-cnn": (3, 32, 32)}


def step(model, x: torch.Tensor, grad: bool) -> None:
    if not grad:
        with torch.no_grad():
            model(x)
        return
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long), reduction="sum")
    torch.autograd.grad(loss, x)


def time_cell(arch: str, batch: int, grad: bool, rounds: int) -> dict:
    shape = NETWORKS[arch]
    net = zoo.create(arch, input_shape=shape, num_classes=10, seed=0).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    head_whole = Classifier(net).eval()
    head_chunked = Classifier(net).eval()
    plain = models.plain_sequential

    def chunked_head(x: torch.Tensor) -> torch.Tensor:
        models.plain_sequential = lambda _m: False  # the rule before: every layer chunk by chunk
        try:
            return head_chunked(x)
        finally:
            models.plain_sequential = plain

    ways = {"whole batch": net, "head chunked": chunked_head, "head whole": head_whole}
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in ways}
    for model in ways.values():
        step(model, x, grad)
    for _ in range(rounds):
        for name, model in ways.items():
            t0 = time.perf_counter()
            step(model, x, grad)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "arch": arch,
        "batch": batch,
        "grad": grad,
        "chunks": head_whole.chunk_count(x),
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "head_chunked_ratio": med["head chunked"] / med["whole batch"],
        "head_whole_ratio": med["head whole"] / med["whole batch"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batches", default="100,500")
    p.add_argument("--out", default="bench/out/sequential_head.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    print("| arch | batch | gradient | chunks | whole batch (ms) | head chunked / whole | head whole / whole |")
    print("|---|---|---|---|---|---|---|")
    for arch in NETWORKS:
        for batch in (int(b) for b in a.batches.split(",")):
            for grad in (True, False):
                r = time_cell(arch, batch, grad, a.rounds)
                rows.append(r)
                print(
                    f"| {arch} | {batch} | {'yes' if grad else 'no'} | {r['chunks']} | "
                    f"{r['median_ms']['whole batch']:.1f} | {r['head_chunked_ratio']:.3f} | {r['head_whole_ratio']:.3f} |",
                    flush=True,
                )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "rounds": a.rounds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
