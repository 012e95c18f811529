"""Benchmark: defensive distillation at T = 100 on MNIST — FGSM (and JSMA when ``advlab.attacks.jsma`` exists)
success drops, while Carlini & Wagner L2 still succeeds.

Trains a standard and a distilled wong-cnn with the CLI (``runs/mnist-distill-standard``,
``runs/mnist-distill-t100``), attacks the first ``--n`` test images that each model classifies correctly, and
writes ``bench/out/distillation.json``. Papernot et al. (arXiv:1511.04508) report the JSMA success rate on MNIST
falling from 91% to 0.45% at T = 100; Carlini & Wagner (arXiv:1608.04644) report 100% success on the distilled
model.

Run with ``OMP_NUM_THREADS=1 nice python bench/distillation.py --epochs 3 --n 200``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train(name: str, cli: list[str]) -> Path:
    out = ROOT / "runs" / name
    if not (out / "card.json").exists():
        subprocess.run(
            [sys.executable, "-m", "advlab", "train", *cli, "--quiet", "--out", str(out)],
            check=True,
            cwd=ROOT,
            env=dict(os.environ),
        )
    return out


def success(attack, model, x, y, threat, batch=100) -> tuple[float, float, float]:
    """(success rate, median distance of successes, seconds)."""
    t0 = time.perf_counter()
    succ, dist = [], []
    for i in range(0, x.shape[0], batch):
        r = attack(model, x[i : i + batch], y[i : i + batch], threat, generator=0)
        succ.append(r.success)
        dist.append(r.distance)
    s, d = torch.cat(succ), torch.cat(dist)
    med = float(d[s].median()) if bool(s.any()) else float("nan")
    return float(s.float().mean()), med, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--temperature", type=float, default=100.0)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-jsma", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from advlab.attacks import ATTACKS
    from advlab.data import load_dataset
    from advlab.goals import Targeted
    from advlab.threat import ThreatModel
    from advlab.zoo import load_model

    common = ["--data", "mnist", "--arch", "wong-cnn", "--epochs", str(args.epochs), "--batch-size", "100"]
    runs = {
        "standard": train("mnist-distill-standard", common),
        f"distilled-T{args.temperature:g}": train(
            f"mnist-distill-t{args.temperature:g}",
            [*common, "--defense", "distillation", "--set", f"temperature={args.temperature}"],
        ),
    }
    test = load_dataset("mnist", split="test")
    results = {}
    for name, folder in runs.items():
        model = load_model(folder)
        card = json.loads((folder / "card.json").read_text())
        with torch.no_grad():
            ok = model.predict(test.x[:2000]) == test.y[:2000]
        x, y = test.x[:2000][ok][: args.n], test.y[:2000][ok][: args.n]
        row = {
            "test_accuracy": card["accuracy"]["test"],
            "train_seconds": card["training"]["wall_seconds"],
            "n_attacked": int(x.shape[0]),
        }
        row["fgsm_linf_0.1"] = success(ATTACKS.get("fgsm")(), model, x, y, ThreatModel("linf", 0.1))
        row["fgsm_linf_0.3"] = success(ATTACKS.get("fgsm")(), model, x, y, ThreatModel("linf", 0.3))
        row["cw-l2_unbounded"] = success(
            ATTACKS.get("cw-l2")(binary_search_steps=5, steps=200), model, x, y, ThreatModel("l2", 100.0)
        )
        if "jsma" in ATTACKS.names():  # targeted (target y + 1), L0 budget gamma = 14.5% of the pixels
            nj = min(args.n_jsma, x.shape[0])
            target = (y[:nj] + 1) % 10
            for jac in ("probs", "logits"):  # JSMA-F (the paper's, through the softmax) and JSMA-Z (logits)
                jsma = ATTACKS.get("jsma")(jacobian=jac)
                t0 = time.perf_counter()
                r = jsma(model, x[:nj], y[:nj], ThreatModel("l0", 114), goal=Targeted(target), generator=0)
                row[f"jsma-{jac}_l0_14.5pct"] = (
                    float(r.success.float().mean()),
                    float(r.distance[r.success].median()) if bool(r.success.any()) else float("nan"),
                    time.perf_counter() - t0,
                )
        results[name] = row
        print(name, json.dumps(row), flush=True)
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "distillation.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
