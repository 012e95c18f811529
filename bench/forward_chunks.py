"""Cost per image of a gradient-free forward on CPU: one big batch versus advlab's chunks of CPU_FORWARD_CHUNK.

Why it matters: Square (and every score-based attack) spends nearly all its time in forwards of the examples
still being attacked, several hundred at once. Past a few hundred images the activations of one batch spill
out of the CPU caches and each image of a convolutional network costs up to 2x more (BENCHMARKS.md).
``advlab.Classifier`` therefore runs gradient-free eval-mode forwards on CPU in chunks
(``advlab.models.CPU_FORWARD_CHUNK``).

For each architecture (random weights: speed does not depend on them) and batch size this times, alternating,
``module(x)`` in one call ("one batch") and ``Classifier(module)(x)`` ("advlab"), under ``torch.no_grad`` in
eval mode, and prints the median microseconds per image of ``--rounds`` rounds and their ratio:

    OMP_NUM_THREADS=1 .venv/bin/python bench/forward_chunks.py --threads 1 --out bench/out/forward_chunks.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from advlab.models import CPU_FORWARD_CHUNK, Classifier
from advlab.provenance import provenance
from advlab.zoo import create

CASES = [("wong-cnn", (1, 28, 28)), ("wong-cnn", (3, 32, 32)), ("madry-cnn", (1, 28, 28)), ("cifar-cnn", (3, 32, 32)),
         ("mlp", (1, 28, 28))]


def per_image_us(fn, x: torch.Tensor, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / (repeats * x.shape[0]) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="128,256,512,1024", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds; the median is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench/out/forward_chunks.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    print(f"chunk {CPU_FORWARD_CHUNK}, {args.threads} thread(s); median us per image over {args.rounds} rounds")
    print("| arch | input | batch | one batch | advlab (chunked) | ratio |\n|---|---|---|---|---|---|")
    for arch, shape in CASES:
        net = create(arch, shape, 10).eval()
        clf = Classifier(net).eval()
        for batch in batches:
            x = torch.rand((batch, *shape))
            repeats = max(1, 2048 // batch)
            times: dict[str, list[float]] = {"one": [], "advlab": []}
            with torch.no_grad():
                net(x), clf(x)  # warm-up
                for _ in range(args.rounds):
                    times["one"].append(per_image_us(net, x, repeats))
                    times["advlab"].append(per_image_us(clf, x, repeats))
            one, ours = statistics.median(times["one"]), statistics.median(times["advlab"])
            rows.append({"arch": arch, "input_shape": list(shape), "batch": batch, "one_batch_us": one,
                         "advlab_us": ours, "ratio": one / ours})
            print(f"| {arch} | {'x'.join(map(str, shape))} | {batch} | {one:.1f} | {ours:.1f} | {one / ours:.2f} |",
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"chunk": CPU_FORWARD_CHUNK, "rows": rows,
                               "provenance": provenance(torch_threads=args.threads)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
