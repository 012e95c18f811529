"""What randomness keyed by the example costs: the stochastic attacks with one stream per batch vs one per example.

Workload: a saved MNIST model (``--model``, e.g. the PGD-trained ``runs/mnist-pgd5``) on the first ``--n`` test
images at linf ``--eps``, one batch, ``--threads`` intra-op threads. Each attack runs twice with the same settings:
drawing from a seeded ``torch.Generator`` (one stream for the batch: :class:`~advlab.rng.GeneratorRNG`, what 0.1 did)
and from an :class:`~advlab.rng.ExampleRNG` (each example its own Philox stream, what ``evaluate`` now uses). The
attacks are the stochastic ones of the ``standard`` cascade and PGD: PGD-40 with a random start, APGD-CE (100 steps,
random start), Square (``--queries``). Rounds are interleaved (the two modes alternate which goes first) and the
median of ``--rounds`` is reported with the ratio keyed / batch. Robust accuracy is reported for both modes: other
draws of the same distributions, so it may differ by an example or two.

    ADVLAB_DATA=/work/shared/data .venv/bin/python bench/keyed_rng.py --model runs/mnist-pgd5 --n 500 \\
        --rounds 3 --out bench/out/keyed_rng.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.attacks import make_attack
from advlab.data import load_dataset
from advlab.provenance import provenance
from advlab.rng import ExampleRNG
from advlab.threat import ThreatModel
from advlab.zoo import load_model


def attacks(queries: int) -> dict:
    return {
        "PGD-40": make_attack("pgd", steps=40),
        "APGD-CE": make_attack("apgd-ce", steps=100),
        f"Square-{queries}": make_attack("square", max_queries=queries),
    }


def one_run(attack, model, x, y, threat, mode: str) -> tuple[float, float]:
    """Seconds and robust accuracy of one run drawing from a batch stream or per-example streams."""
    gen = torch.Generator().manual_seed(0) if mode == "batch" else ExampleRNG(0, "bench", torch.arange(x.shape[0]))
    t0 = time.perf_counter()
    r = attack(model, x, y, threat, generator=gen)
    seconds = time.perf_counter() - t0
    return seconds, float((~r.success).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    test = load_dataset("mnist", "test", n=args.n, download=False)
    x, y, threat = test.x, test.y, ThreatModel("linf", args.eps)
    runs: dict = {name: {"batch": [], "keyed": []} for name in attacks(args.queries)}
    robust: dict = {name: {} for name in runs}
    for r in range(args.rounds):
        for name, attack in attacks(args.queries).items():
            for mode in ("batch", "keyed") if r % 2 == 0 else ("keyed", "batch"):
                seconds, rob = one_run(attack, model, x, y, threat, mode)
                runs[name][mode].append(seconds)
                robust[name][mode] = rob
                print(f"round {r + 1}  {name:<12} {mode:<6} {seconds:7.2f} s  robust {100 * rob:.1f}%")
    figures = {
        name: {
            "batch_s": statistics.median(t["batch"]),
            "keyed_s": statistics.median(t["keyed"]),
            "ratio_keyed_over_batch": statistics.median(t["keyed"]) / statistics.median(t["batch"]),
            "robust": robust[name],
            "runs": t,
        }
        for name, t in runs.items()
    }
    for name, f in figures.items():
        print(f"{name:<12} batch {f['batch_s']:.2f} s  keyed {f['keyed_s']:.2f} s  x{f['ratio_keyed_over_batch']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        record = {"workload": vars(args), "figures": figures, "provenance": provenance()}
        Path(args.out).write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
