"""Query-attack benchmark: success rate and median queries at fixed per-example budgets on an MNIST CNN.

Every attack runs once per example with the largest budget as its per-example cap (``max_queries``); the success
rate at a smaller budget B counts the examples that first reached their goal inside the eps-ball within B queries
(``info["queries_to_success"]`` for the advlab query attacks, ``queries`` on success for Square, which stops
per example once fooled). Score-based attacks (Square, SPSA, NES) run at linf eps; decision-based attacks
(Boundary, HopSkipJump) are minimum-norm attacks and count as successful once their perturbation is within eps
(L2, and linf for HopSkipJump). Queries include the framework's clean pass and final check.

Usage:
    python bench/query_attacks.py                      # trains a small CNN on 20k MNIST images first
    python bench/query_attacks.py --model runs/m1 --n 100 --budgets 1000,5000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import ATTACKS, boundary, hopskipjump, nes, spsa
from advlab.blackbox import TorchOracle


def train_cnn(n_train: int, epochs: int, seed: int) -> nn.Module:
    from advlab.data import load_dataset
    from advlab.zoo import build_classifier

    data = load_dataset("mnist", "train", n=n_train)
    clf = build_classifier("wong-cnn", input_shape=(1, 28, 28), num_classes=10, seed=seed)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    clf.train()
    for _ in range(epochs):
        perm = torch.randperm(data.x.shape[0], generator=g)
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(clf(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return clf.eval()


def summarise(first: torch.Tensor, budgets: list[int]) -> dict:
    """Success rate and median queries (over successes) at each budget, from per-example first-success counts."""
    out = {}
    for b in budgets:
        ok = (first >= 0) & (first <= b)
        out[str(b)] = {
            "success_rate": float(ok.float().mean()),
            "median_queries": float(first[ok].float().median()) if bool(ok.any()) else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder saved by advlab (default: train a wong-cnn on MNIST)")
    p.add_argument("--n", type=int, default=100, help="test images (the first ones the model classifies correctly)")
    p.add_argument("--budgets", default="1000,5000", help="per-example query budgets")
    p.add_argument("--attacks", default="square,spsa,nes,boundary,hopskipjump-l2,hopskipjump-linf")
    p.add_argument("--eps-linf", type=float, default=0.3)
    p.add_argument("--eps-l2", type=float, default=2.0)
    p.add_argument("--train-n", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--save", help="save the trained model to this folder (reuse it with --model)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/query_attacks.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    cap = budgets[-1]

    from advlab.data import load_dataset

    t0 = time.time()
    if args.model:
        from advlab.zoo import load_model

        model = load_model(args.model)
    else:
        model = train_cnn(args.train_n, args.epochs, args.seed)
        if args.save:
            from advlab.zoo import save_model

            save_model(
                model, args.save, dataset="mnist", training={"epochs": args.epochs, "n": args.train_n}, seed=args.seed
            )
    train_s = time.time() - t0
    test = load_dataset("mnist", "test", n=2000)
    with torch.no_grad():
        pred = torch.cat([model(test.x[i : i + 500]).argmax(1) for i in range(0, 2000, 500)])
    clean_acc = float((pred == test.y).float().mean())
    ok = (pred == test.y).nonzero().flatten()[: args.n]
    x, y = test.x[ok], test.y[ok]
    print(
        f"model: clean accuracy {clean_acc:.4f} on 2000 test images; attacking {len(y)} ({train_s:.0f} s to get it)",
        file=sys.stderr,
    )

    linf, l2 = ThreatModel("linf", args.eps_linf), ThreatModel("l2", args.eps_l2)
    rows = {}
    for name in args.attacks.split(","):
        oracle = TorchOracle(model, mode="scores", batch_size=4096)
        start = time.time()
        if name == "square":
            if "square" not in ATTACKS.names():
                print("square: not registered, skipped", file=sys.stderr)
                continue
            res = ATTACKS.get("square")(max_queries=cap)(model, x, y, linf, generator=args.seed)
            q = torch.as_tensor(res.queries)
            first = torch.where(torch.as_tensor(res.success), q, torch.full_like(q, -1))
            threat, spent = linf, int(q.sum())
        else:
            if name == "spsa":
                threat, kw = linf, {"steps": math.ceil(cap / 129)}
                res = spsa(oracle, x, y, threat, max_queries=cap, generator=args.seed, **kw)
            elif name == "nes":
                threat, kw = linf, {"steps": math.ceil(cap / 51)}
                res = nes(oracle, x, y, threat, max_queries=cap, generator=args.seed, **kw)
            elif name == "boundary":
                threat = l2
                res = boundary(oracle, x, y, threat, max_queries=cap, steps=cap // 2, generator=args.seed)
            elif name.startswith("hopskipjump"):
                threat = l2 if name.endswith("l2") else linf
                res = hopskipjump(oracle, x, y, threat, max_queries=cap, steps=1000, generator=args.seed)
            else:
                raise SystemExit(f"unknown attack {name!r}")
            first = res.info["queries_to_success"]
            spent = oracle.queries
            assert int(res.queries.sum()) == spent and int(res.queries.max()) <= cap
        wall = time.time() - start
        row = {
            "norm": threat.norm,
            "eps": threat.eps,
            "wall_s": round(wall, 1),
            "queries_total": spent,
            "queries_per_s": round(spent / max(wall, 1e-9)),
            "final_success_rate": float(torch.as_tensor(res.success).float().mean()),
            "budgets": summarise(first.cpu(), budgets),
        }
        if ATTACKS.get(name.split("-")[0]).minimum_norm:
            row["median_min_distance"] = float(res.info["min_distance"].median())
        rows[name] = row
        line = "  ".join(
            f"B={b}: {v['success_rate']:.2f} (median {v['median_queries']})" for b, v in row["budgets"].items()
        )
        print(f"{name:<18} {threat.norm} eps={threat.eps:g}  {line}  [{wall:.0f} s]", file=sys.stderr)

    report = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "model": args.model or f"wong-cnn trained {args.epochs} epoch(s) on {args.train_n} MNIST images",
        "clean_accuracy_2000": clean_acc,
        "n": len(y),
        "budgets": budgets,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from advlab.io import write_json

    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
