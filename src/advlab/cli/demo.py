"""``advlab demo``: the embedded end-to-end run on scikit-learn's digits (nothing to download)."""

from __future__ import annotations

import argparse
import logging

from advlab.cli._common import add_command, check_output_dir, show_progress

log = logging.getLogger("advlab")


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "demo",
        "train, attack and defend a digits model (offline, < 3 min)",
        "With nothing downloaded: train a small MLP on scikit-learn's 8x8 digits, attack it with FGSM and PGD "
        "across several eps, train it again with PGD adversarial training, attack again, and write a short "
        "report (JSON, PNG figures, Markdown summary).",
        "  advlab demo\n  advlab demo --out /tmp/demo --seed 1\n",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from advlab.demo import run_demo

    check_output_dir(args.out)
    # 60 per-epoch lines would bury the demo's own messages; 'advlab -v demo' shows them.
    trainer_log = logging.getLogger("advlab.defenses.base")
    level = trainer_log.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        trainer_log.setLevel(logging.WARNING)

    # The demo's models are tiny: one thread avoids the synchronisation cost of several.
    torch.set_num_threads(1)

    try:
        record = run_demo(args.out, seed=args.seed, progress=show_progress(args))
    finally:
        trainer_log.setLevel(level)
    out = Path(args.out).resolve()
    print((out / "summary.md").read_text())
    print(
        f"Report written to {out}/ (summary.md, demo.json, robust_accuracy.png, examples_*.png) "
        f"in {record['wall_seconds']:.0f} s."
    )
    return 0
