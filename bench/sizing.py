"""How much work an evaluation is, per image: the forward and backward passes of ``evaluate`` with a preset.

The cost of a worst-case evaluation is almost all in the model's passes, so an evaluation's time on any machine is
about ``images x (forwards x t_forward + backwards x t_backward)``, with the per-image times of the architecture on
that machine. This script counts the passes: it wraps a saved model in a counter of the rows that go through it
(with gradients: a forward followed by a backward; without: a forward only), runs ``evaluate`` with ``--preset`` on
the first ``--n`` MNIST test images at linf ``--eps`` without the masking checks, and divides by ``--n``; the
checks (on a fixed 100 examples, whatever ``--n``) are counted apart, as a fixed cost. The counts depend on the model's
robustness (a stage attacks only the examples still robust), so measure on a model as robust as the ones to size.

With ``--arch NAME --input-shape C,H,W`` it also times one forward and one forward+backward per image of a zoo
architecture on ``--device`` (batch ``--batch-size``, median of 10), and prints the hours of the evaluation of
``--images`` images: run it on the GPU to size a GPU evaluation.

    ADVLAB_DATA=/work/shared/data .venv/bin/python bench/sizing.py --model runs/mnist-pgd5 --n 200 \\
        --out bench/out/sizing.json
    .venv/bin/python bench/sizing.py --model runs/mnist-pgd5 --n 200 --arch preact-resnet18 --input-shape 3,32,32 \\
        --device cuda --images 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.provenance import provenance
from advlab.zoo import build_classifier, load_model


class Counter(nn.Module):
    """``net``, counting the rows it sees with and without gradients."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.with_grad = 0
        self.without_grad = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.with_grad += x.shape[0]
        else:
            self.without_grad += x.shape[0]
        return self.net(x)


def count_passes(model_dir: str, n: int, eps: float, preset: str) -> dict:
    counted = load_model(model_dir).eval()
    counter = Counter(counted.module).eval()
    counted.module = counter  # the classifier's normalisation stays outside the count
    test = load_dataset("mnist", "test", n=n, download=False)
    t0 = time.perf_counter()
    report = evaluate(counted, (test.x, test.y), eps, attacks=preset, progress=False, checks=False)
    cascade = (counter.with_grad, counter.without_grad)
    evaluate(counted, (test.x, test.y), eps, attacks=preset, progress=False)  # the masking checks: a fixed cost
    return {
        "checks_forward_backward": counter.with_grad - 2 * cascade[0],
        "checks_forward_only": counter.without_grad - 2 * cascade[1],
        "preset": preset,
        "robust_accuracy": report.robust_accuracy(eps),
        "seconds": time.perf_counter() - t0,
        "forward_backward_per_image": cascade[0] / n,
        "forward_only_per_image": cascade[1] / n,
    }


def time_arch(arch: str, shape: tuple[int, ...], device: str, batch: int) -> dict:
    clf = build_classifier(arch, shape, 10, seed=0).to(device).eval()
    x = torch.rand(batch, *shape, device=device)

    def timed(fn) -> float:
        fn()
        out = []
        for _ in range(10):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            out.append((time.perf_counter() - t0) / batch)
        return statistics.median(out)

    def forward() -> None:
        with torch.no_grad():
            clf(x)

    def forward_backward() -> None:
        xr = x.clone().requires_grad_(True)
        clf(xr).sum().backward()

    return {"forward_s": timed(forward), "forward_backward_s": timed(forward_backward)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--presets", nargs="+", default=["fast", "standard"])
    p.add_argument("--arch", default=None)
    p.add_argument("--input-shape", default="3,32,32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    counts = [count_passes(args.model, args.n, args.eps, preset) for preset in args.presets]
    for c in counts:
        print(f"{c['preset']:<9} {c['forward_backward_per_image']:8.1f} forward+backward and "
              f"{c['forward_only_per_image']:8.1f} forward passes per image (robust {100 * c['robust_accuracy']:.1f}%); "
              f"checks: {c['checks_forward_backward']} and {c['checks_forward_only']} in all")  # fmt: skip
    record: dict = {"workload": vars(args), "counts": counts, "provenance": provenance()}
    if args.arch:
        shape = tuple(int(v) for v in args.input_shape.split(","))
        per = time_arch(args.arch, shape, args.device, args.batch_size)
        record["arch_times"] = per
        for c in counts:
            passes_fb = args.images * c["forward_backward_per_image"] + c["checks_forward_backward"]
            passes_f = args.images * c["forward_only_per_image"] + c["checks_forward_only"]
            hours = (passes_fb * per["forward_backward_s"] + passes_f * per["forward_s"]) / 3600
            c["hours"] = hours
            print(f"{c['preset']:<9} {args.arch} on {args.device}: {hours:.2f} h for {args.images} images")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
