"""Benchmark: defenses on MNIST (and Fashion-MNIST / CIFAR-10 subsets) — clean and PGD robust accuracy, time.

Models are trained with the CLI (``advlab train ... --out runs/NAME``) so the runs are reproducible by hand;
this script trains what is missing, evaluates, and writes ``bench/out/defenses_<part>.json``.

Parts:
    madry      the headline model: PGD-40 with 10 restarts at eps 0.3 on the first ``--n`` MNIST test images
               for runs/mnist-fast-at (fast FGSM) and runs/mnist-standard; ``--standard`` adds advlab.evaluate
               with the "standard" preset (AutoAttack-like).
    table      every defense on MNIST (short runs), PGD-20 at eps 0.1/0.2/0.3 on ``--n`` test images; ``--standard``
               adds advlab.evaluate with the "standard" preset at the same eps on ``--n-standard`` images
               (the detector is measured with its own rejection-aware adaptive attack instead).
    other      fast FGSM / PGD / TRADES on Fashion-MNIST (eps 0.1) and CIFAR-10 subsets (eps 8/255).

Run with ``OMP_NUM_THREADS=1 nice python bench/defenses_mnist.py --part madry --n 1000``.
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
RUNS = ROOT / "runs"
OUT = ROOT / "bench" / "out"
ADVLAB = [sys.executable, "-m", "advlab"]


def train(name: str, args: list[str]) -> Path:
    """``advlab train ... --out runs/name`` unless the folder already holds a model; returns the folder."""
    out = RUNS / name
    if not (out / "card.json").exists():
        cmd = [*ADVLAB, "train", *args, "--quiet", "--out", str(out)]
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return out


def pgd_accuracy(model, x, y, eps: float, *, steps: int, restarts: int, batch: int = 250) -> float:
    """Robust accuracy under PGD (linf, step 2.5 eps / steps, random starts), best of ``restarts``."""
    from advlab.attacks import pgd
    from advlab.threat import ThreatModel

    threat = ThreatModel("linf", eps)
    fooled = 0
    for i in range(0, x.shape[0], batch):
        res = pgd(
            model,
            x[i : i + batch],
            y[i : i + batch],
            threat,
            steps=steps,
            restarts=restarts,
            generator=torch.Generator().manual_seed(i),
        )
        fooled += int(res.success.sum())
    return 1 - fooled / x.shape[0]


def clean_accuracy(model, x, y) -> float:
    from advlab.defenses import accuracy

    return accuracy(model, x, y)


def card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


def part_madry(args) -> dict:
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    test = load_dataset("mnist", split="test")
    x, y = test.x[: args.n], test.y[: args.n]
    runs = {
        "mnist-fast-at": [
            "--data",
            "mnist",
            "--arch",
            "wong-cnn",
            "--defense",
            "fast-fgsm",
            "--epochs",
            "4",
            "--lr",
            "5e-3",
            "--schedule",
            "constant",
            "--batch-size",
            "100",
            "--set",
            "eps=0.3",
            "--set",
            "eps_rampup=0.2",
        ],
        "mnist-fast-at-e8": [
            "--data",
            "mnist",
            "--arch",
            "wong-cnn",
            "--defense",
            "fast-fgsm",
            "--epochs",
            "8",
            "--lr",
            "5e-3",
            "--schedule",
            "constant",
            "--batch-size",
            "100",
            "--set",
            "eps=0.35",
            "--set",
            "eps_rampup=0.25",
        ],
        "mnist-fast-at-e15": [
            "--data",
            "mnist",
            "--arch",
            "wong-cnn",
            "--defense",
            "fast-fgsm",
            "--epochs",
            "15",
            "--lr",
            "5e-3",
            "--schedule",
            "constant",
            "--batch-size",
            "100",
            "--set",
            "eps=0.35",
            "--set",
            "eps_rampup=0.2",
        ],
        "mnist-standard": ["--data", "mnist", "--arch", "wong-cnn", "--epochs", "2", "--batch-size", "100"],
        # the headline model: PGD training (Madry et al.) with 5 steps, cyclic learning rate, eps ramp-up
        "mnist-pgd5": [
            "--data",
            "mnist",
            "--arch",
            "wong-cnn",
            "--defense",
            "pgd",
            "--epochs",
            "12",
            "--lr",
            "5e-3",
            "--schedule",
            "cyclic",
            "--batch-size",
            "100",
            "--set",
            "eps=0.3",
            "--set",
            "steps=5",
            "--set",
            "eps_rampup=0.2",
        ],
    }
    results = {}
    for name in args.only.split(",") if args.only else list(runs):
        cli = runs[name]
        folder = train(name, cli)
        model = load_model(folder)
        c = card(folder)
        t0 = time.perf_counter()
        rob = pgd_accuracy(model, x, y, 0.3, steps=40, restarts=10)
        row = {
            "command": "advlab train " + " ".join(cli) + f" --out runs/{name}",
            "train_seconds": c["training"]["wall_seconds"],
            "clean_test_accuracy": clean_accuracy(model, test.x, test.y),
            "pgd40x10_eps0.3": rob,
            "n_eval": int(x.shape[0]),
            "eval_seconds": time.perf_counter() - t0,
            "history": [
                {k: h.get(k) for k in ("epoch", "val_accuracy", "check_pgd_accuracy", "seconds")}
                for h in c["training"]["history"]
            ],
        }
        if args.standard:
            row.update(standard_row(model, x[: args.n_standard], y[: args.n_standard], (0.3,)))
        results[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    return results


def standard_row(model, x, y, eps_list) -> dict:
    """``advlab.evaluate(..., attacks="standard")`` over ``eps_list``: robust accuracy per eps, checks, time."""
    import advlab

    t0 = time.perf_counter()
    rep = advlab.evaluate(model, (x, y), list(eps_list), norm="linf", attacks="standard", progress=False)
    row = {f"standard_eps{e}": rep.robust_accuracy(e) for e in eps_list}
    row.update(
        {
            "standard_n": int(x.shape[0]),
            "standard_seconds": time.perf_counter() - t0,
            "standard_checks_failed": [c.name for c in rep.failed_checks],
        }
    )
    return row


TABLE = {
    # name: (arch, extra CLI args)
    "standard": ("wong-cnn", []),
    "pgd": ("wong-cnn", ["--set", "eps=0.3", "--set", "steps=10", "--set", "eps_rampup=0.2"]),
    "fast-fgsm": (
        "wong-cnn",
        ["--set", "eps=0.3", "--set", "eps_rampup=0.2", "--lr", "5e-3", "--schedule", "constant"],
    ),
    "goodfellow": ("wong-cnn", ["--set", "eps=0.3", "--set", "eps_rampup=0.2"]),
    "free": ("wong-cnn", ["--set", "eps=0.3", "--set", "m=4", "--set", "eps_rampup=0.2"]),
    "trades": (
        "wong-cnn",
        [
            "--set",
            "eps=0.3",
            "--set",
            "steps=10",
            "--set",
            "step_size=0.075",
            "--set",
            "beta=6",
            "--set",
            "eps_rampup=0.2",
        ],
    ),
    "ensemble-adversarial": ("wong-cnn", ["--set", 'static_models=["runs/mnist-standard"]', "--set", "eps=0.3"]),
    "distillation": ("wong-cnn", ["--set", "temperature=100"]),
    "noise": ("wong-cnn", ["--set", "sigma=0.3"]),
    "denoiser": ("wong-cnn", ["--set", "sigma=0.3", "--set", "eps=0.3", "--set", "hidden=8"]),
    "ensemble": ("wong-cnn", ["--set", "members=3"]),
    "regularization": ("wong-cnn", ["--set", "l1=1e-4"]),
    "dropout": ("wong-cnn", ["--set", "p=0.5"]),
    "rbf": ("rbf", []),
    "detector": ("wong-cnn", ["--set", "eps=0.3", "--set", "steps=5", "--set", "classifier_epochs=1"]),
}


def defended(name: str, folder: Path):
    """The deployed model of a run (composite defenses are rebuilt from their artifacts)."""
    from advlab.zoo import load_model

    if name == "denoiser":
        from advlab.defenses.denoiser import load_denoised

        return load_denoised(folder)
    if name == "ensemble":
        from advlab.defenses.ensemble import load_ensemble

        return load_ensemble(folder)
    if name == "detector":
        from advlab.defenses.detector import load_detected

        return load_detected(folder)
    return load_model(folder)


def part_table(args) -> dict:
    from advlab.data import load_dataset

    test = load_dataset("mnist", split="test")
    x, y = test.x[: args.n], test.y[: args.n]
    names = args.only.split(",") if args.only else list(TABLE)
    results = {}
    for name in names:
        arch, extra = TABLE[name]
        epochs = "3" if name == "detector" else str(args.epochs)
        cli = [
            "--data",
            "mnist",
            "--arch",
            arch,
            "--defense",
            name,
            "--epochs",
            epochs,
            "--batch-size",
            "100",
            "--n-train",
            str(args.n_train),
            *extra,
        ]
        folder = train(f"mnist-table-{name}", cli)
        model = defended(name, folder)
        c = card(folder)
        row = {
            "command": "advlab train " + " ".join(cli) + f" --out runs/mnist-table-{name}",
            "train_seconds": c["training"]["wall_seconds"],
        }
        if name == "detector":
            from advlab.attacks import pgd
            from advlab.defenses.detector import accuracy_with_rejection, adaptive_attack
            from advlab.threat import ThreatModel

            row["clean"] = accuracy_with_rejection(model, test.x[:2000], test.y[:2000])
            for eps in (0.1, 0.2, 0.3):
                threat = ThreatModel("linf", eps)
                plain = pgd(model.module.classifier, x, y, threat, steps=20).x_adv  # attack the classifier alone
                adaptive = adaptive_attack(model, x, y, threat, steps=20, generator=torch.Generator().manual_seed(0))
                row[f"pgd20_eps{eps}"] = accuracy_with_rejection(model, plain, y)
                row[f"adaptive20_eps{eps}"] = accuracy_with_rejection(model, adaptive, y)
        else:
            row["clean"] = clean_accuracy(model, test.x, test.y)
            for eps in (0.1, 0.2, 0.3):
                row[f"pgd20_eps{eps}"] = pgd_accuracy(model, x, y, eps, steps=20, restarts=1)
            if args.standard:
                row.update(standard_row(model, x[: args.n_standard], y[: args.n_standard], (0.1, 0.2, 0.3)))
        results[name] = row
        print(name, json.dumps(row), flush=True)
    return results


OTHER = {
    "fmnist-standard": ["--data", "fashion-mnist", "--arch", "wong-cnn"],
    "fmnist-fast-fgsm": [
        "--data",
        "fashion-mnist",
        "--arch",
        "wong-cnn",
        "--defense",
        "fast-fgsm",
        "--lr",
        "5e-3",
        "--schedule",
        "constant",
        "--set",
        "eps=0.1",
        "--set",
        "eps_rampup=0.2",
    ],
    "fmnist-trades": [
        "--data",
        "fashion-mnist",
        "--arch",
        "wong-cnn",
        "--defense",
        "trades",
        "--set",
        "eps=0.1",
        "--set",
        "steps=5",
        "--set",
        "step_size=0.03",
    ],
    "fmnist-pgd": [
        "--data",
        "fashion-mnist",
        "--arch",
        "wong-cnn",
        "--defense",
        "pgd",
        "--lr",
        "5e-3",
        "--schedule",
        "cyclic",
        "--set",
        "eps=0.1",
        "--set",
        "steps=5",
        "--set",
        "eps_rampup=0.2",
    ],
    "cifar10-standard": ["--data", "cifar10", "--arch", "wong-cnn"],
    "cifar10-pgd": [
        "--data",
        "cifar10",
        "--arch",
        "wong-cnn",
        "--defense",
        "pgd",
        "--lr",
        "5e-3",
        "--schedule",
        "cyclic",
        "--set",
        "eps=0.03137",
        "--set",
        "steps=5",
        "--set",
        "eps_rampup=0.2",
    ],
    "cifar10-fast-fgsm": [
        "--data",
        "cifar10",
        "--arch",
        "wong-cnn",
        "--defense",
        "fast-fgsm",
        "--lr",
        "5e-3",
        "--schedule",
        "constant",
        "--set",
        "eps=0.03137",
        "--set",
        "eps_rampup=0.2",
    ],
}


def part_other(args) -> dict:
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    results = {}
    names = args.only.split(",") if args.only else list(OTHER)
    for name in names:
        cli = [*OTHER[name], "--epochs", str(args.epochs), "--batch-size", "100", "--n-train", str(args.n_train)]
        data = cli[cli.index("--data") + 1]
        eps = 0.1 if data == "fashion-mnist" else 8 / 255
        folder = train(name, cli)
        model = load_model(folder)
        test = load_dataset(data, split="test")
        x, y = test.x[: args.n], test.y[: args.n]
        row = {
            "command": "advlab train " + " ".join(cli) + f" --out runs/{name}",
            "train_seconds": card(folder)["training"]["wall_seconds"],
            "clean": clean_accuracy(model, test.x, test.y),
            "eps": eps,
            "pgd20": pgd_accuracy(model, x, y, eps, steps=20, restarts=1),
            "n_eval": int(x.shape[0]),
        }
        results[name] = row
        print(name, json.dumps(row), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["madry", "table", "other"], required=True)
    p.add_argument("--n", type=int, default=1000, help="test examples attacked")
    p.add_argument("--n-standard", type=int, default=200, help="examples for the 'standard' evaluation preset")
    p.add_argument("--standard", action="store_true", help="also run advlab.evaluate(attacks='standard')")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--only", default="", help="comma-separated subset of the part's runs")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"madry": part_madry, "table": part_table, "other": part_other}[args.part](args)
    path = OUT / f"defenses_{args.part}{'_' + args.only.replace(',', '_') if args.only else ''}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **results}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
