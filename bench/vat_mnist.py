"""Benchmark: semi-supervised VAT on MNIST with 100 labels (10 per class, seeded), the rest unlabelled.

Trains with the CLI (``advlab train --defense vat --labels 100``), then reports the test error of the saved
model and the training time in ``bench/out/vat_mnist.json``. The paper (Miyato et al., arXiv:1704.03976,
Table 2) reports 1.36% test error with 100 labels after 48k iterations on a GPU.

Run with ``OMP_NUM_THREADS=1 nice python bench/vat_mnist.py`` (the defaults are the recorded run: wong-cnn, 30
epochs, eps 2.0, entropy minimisation: 1.76% test error in 527 s on one core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="passes over the unlabelled set")
    p.add_argument("--eps", type=float, default=2.0, help="L2 radius of the virtual adversarial perturbation")
    p.add_argument("--arch", default="wong-cnn")
    p.add_argument(
        "--entmin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the entropy-minimisation term (--no-entmin for plain VAT)",
    )
    p.add_argument("--out", default="runs/mnist-vat100-entmin-e30")
    args = p.parse_args()
    cli = [
        "train",
        "--data",
        "mnist",
        "--arch",
        args.arch,
        "--defense",
        "vat",
        "--labels",
        "100",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        "64",
        "--lr",
        "1e-3",
        "--schedule",
        "cosine",
        "--set",
        f"eps={args.eps}",
        "--set",
        "unlabeled_batch_size=256",
        "--set",
        f"entmin={'true' if args.entmin else 'false'}",
        "--quiet",
        "--out",
        args.out,
    ]
    out = ROOT / args.out
    if not (out / "card.json").exists():
        subprocess.run([sys.executable, "-m", "advlab", *cli], check=True, cwd=ROOT, env=dict(os.environ))
    card = json.loads((out / "card.json").read_text())
    row = {
        "command": "advlab " + " ".join(cli),
        "test_error": 1 - card["accuracy"]["test"],
        "train_seconds": card["training"]["wall_seconds"],
        "iterations": args.epochs * -(-59900 // 256),
        "history": [(h["epoch"], h.get("val_accuracy")) for h in card["training"]["history"]],
    }
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "vat_mnist.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
