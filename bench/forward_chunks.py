"""Cost per image of an eval-mode forward on CPU: one big batch versus advlab's chunks (models.Classifier.chunk_count).

Why it matters: Square (and every score-based attack) spends nearly all its time in forwards of the examples
still being attacked, several hundred at once, and gradient attacks (APGD, PGD, FMN, ...) in forwards and
backwards of such batches. Past a few hundred images the activations of one batch spill out of the CPU caches
and each image of a convolutional network costs up to 2x more (BENCHMARKS.md). ``advlab.Classifier`` therefore
runs eval-mode forwards on CPU in chunks whose largest activation holds about ``advlab.models.CHUNK_ACTIVATION_BYTES``
(``Classifier.chunk_count``); with gradients, the backward pass then runs chunk by chunk too.

For each architecture (random weights: speed does not depend on them) and batch size this times, alternating,
``module(x)`` in one call ("one batch") and ``Classifier(module)(x)`` ("advlab") in eval mode, under
``torch.no_grad`` or, with ``--grad``, followed by the gradient of a summed cross-entropy with respect to the input
(what a gradient attack computes), and prints the median microseconds per image of ``--rounds`` rounds and their
ratio:

    for t in 1 2; do for g in "" --grad; do
        .venv/bin/python bench/forward_chunks.py --threads $t $g --out bench/out/forward_chunks_t$t${g:+_grad}.json
    done; done
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from advlab import models
from advlab.models import Classifier
from advlab.provenance import provenance
from advlab.zoo import create

CASES = [
    ("wong-cnn", (1, 28, 28)),
    ("wong-cnn", (3, 32, 32)),
    ("madry-cnn", (1, 28, 28)),
    ("cifar-cnn", (3, 32, 32)),
    ("preact-resnet18", (3, 32, 32)),
    ("mlp", (1, 28, 28)),
]


def per_image_us(fn, x: torch.Tensor, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / (repeats * x.shape[0]) * 1e6


def with_input_gradient(model):
    """``x -> d(sum CE(model(x), 0)) / dx``: the forward and backward pass of a gradient attack."""

    def run(x: torch.Tensor) -> torch.Tensor:
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long), reduction="sum")
        return torch.autograd.grad(loss, xg)[0]

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="100,250,500", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds; the median is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grad", action="store_true", help="time forward + input gradient instead of no_grad forwards")
    p.add_argument(
        "--chunk-bytes",
        type=int,
        default=None,
        help="override models.CHUNK_ACTIVATION_BYTES (the bytes of the largest activation a chunk holds per thread)",
    )
    p.add_argument("--archs", default=None, help="comma-separated subset of the architectures (default: all)")
    p.add_argument("--out", default="bench/out/forward_chunks.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.chunk_bytes is not None:
        models.CHUNK_ACTIVATION_BYTES = args.chunk_bytes
    archs = None if args.archs is None else set(args.archs.split(","))
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    mode = "forward + input gradient" if args.grad else "gradient-free forward"
    print(f"{mode}; {args.threads} thread(s); median us per image over {args.rounds} rounds")
    print("| arch | input | batch | chunks | one batch | advlab (chunked) | ratio |\n|---|---|---|---|---|---|---|")
    for arch, shape in CASES:
        if archs is not None and arch not in archs:
            continue
        net = create(arch, shape, 10).eval()
        clf = Classifier(net).eval()
        for param in net.parameters():
            param.requires_grad_(False)  # as in an attack: only the input's gradient is taken
        one_fn, advlab_fn = (with_input_gradient(net), with_input_gradient(clf)) if args.grad else (net, clf)
        for batch in batches:
            x = torch.rand((batch, *shape))
            times: dict[str, list[float]] = {"one": [], "advlab": []}
            with torch.set_grad_enabled(args.grad):
                one_fn(x), advlab_fn(x)  # warm-up
                repeats = max(1, round(0.3e6 / (per_image_us(one_fn, x, 1) * batch)))  # about 0.3 s per timing
                for r in range(args.rounds):  # alternating which goes first
                    for name, fn in (("one", one_fn), ("advlab", advlab_fn))[:: 1 if r % 2 == 0 else -1]:
                        times[name].append(per_image_us(fn, x, repeats))
            one, ours = statistics.median(times["one"]), statistics.median(times["advlab"])
            chunks = clf.chunk_count(x)
            rows.append(
                {
                    "arch": arch,
                    "input_shape": list(shape),
                    "batch": batch,
                    "chunks": chunks,
                    "one_batch_us": one,
                    "advlab_us": ours,
                    "ratio": one / ours,
                }
            )
            print(
                f"| {arch} | {'x'.join(map(str, shape))} | {batch} | {chunks} | {one:.1f} | {ours:.1f} | {one / ours:.2f} |",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "chunk_activation_bytes": models.CHUNK_ACTIVATION_BYTES,
                "mode": mode,
                "rows": rows,
                "provenance": provenance(torch_threads=args.threads),
            },
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
