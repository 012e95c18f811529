"""Destruction rates of FGSM, BIM and ILLC on MNIST under a simulated print-and-photograph pipeline, with and without EOT.

Kurakin et al. 2016 (arXiv:1607.02533, section 4) photograph printed adversarial images and report the
destruction rate: among images correct when clean and wrong when attacked, the fraction classified correctly
again after the transformation. Here the photo is simulated by advlab.physical's default pipeline
(perspective 0..0.05, rotation +-5 degrees, scale 0.9..1.1, brightness +-0.1, contrast 0.8..1.2, Gaussian blur
sigma 0.5..1.5, Gaussian noise std 0..0.05, real JPEG quality 50..90), drawn independently per image and per
draw. The EOT rows attack the average over --eot transformations of the same distribution (JPEG replaced by its
differentiable DCT approximation inside the attack; the evaluation always uses the real Pillow JPEG).

Model: wong-cnn, 2 epochs of standard training on the 60k MNIST training images (runs/phys-wong).

Usage:
    OMP_NUM_THREADS=1 nice python bench/physical_mnist.py                  # bench/out/physical_mnist/result.json
    OMP_NUM_THREADS=1 nice python bench/physical_mnist.py --n 100 --eot 5  # quicker
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="first N MNIST test images")
    p.add_argument("--eps", default="0.1,0.2")
    p.add_argument("--attacks", default="fgsm,bim,illc")
    p.add_argument("--transform", default="print-photo")
    p.add_argument("--eot", type=int, default=10, help="EOT samples (0: plain only)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/physical_mnist")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from _mnist_models import mnist_model
    from advlab import io
    from advlab.data import load_dataset
    from advlab.physical import measure_destruction
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    model = mnist_model("phys-wong")
    data = load_dataset("mnist", split="test", n=args.n)
    t0 = time.perf_counter()
    report = measure_destruction(
        model,
        data.x,
        data.y,
        args.transform,
        attacks=args.attacks.split(","),
        eps=[float(e) for e in args.eps.split(",")],
        eot_samples=[0] + ([args.eot] if args.eot else []),
        draws=args.draws,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    record = {**report.to_dict(), "n": args.n, "wall_seconds": seconds, "model": model.card, "provenance": provenance()}
    out = Path(args.out)
    io.write_json(out / "result.json", record)
    print(report.table())
    print(f"\nwall time {seconds:.0f}s; wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
