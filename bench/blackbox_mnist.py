"""Papernot et al. 2017 practical black-box attack on an MNIST CNN oracle (labels only).

Setting of the paper (arXiv:1602.02697, section 4.1): the attacker holds 150 MNIST test images as the seed set,
trains a substitute (FC200-FC200, 10 epochs per round, SGD lr 1e-2 momentum 0.9, batch 128 as in the
reference code) for 6 augmentation rounds with
lambda = 0.1 (periodic sign flip, tau = 3), then crafts FGSM examples at eps = 0.3 on the substitute and sends
them to the oracle. We report per round: substitute accuracy, agreement with the oracle and transfer success on
1000 other test images, and the cumulative training queries; a second run adds reservoir sampling
(sigma = 3, kappa = 400, section 6).

The oracle is a wong-cnn trained here for 2 epochs on the 60k MNIST training images (cached in --out).
The library's defaults are no longer the paper's; this script passes ``PAPER_SETTINGS``. For the defaults against
every zoo MNIST architecture over HTTP, see bench/blackbox_zoo.py.

Usage:
    nice python bench/blackbox_mnist.py                 # writes bench/out/blackbox_mnist/{result.json,rounds.png}
    nice python bench/blackbox_mnist.py --rounds 3 --n-eval 500
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch


def target_model(folder: Path, epochs: int, seed: int):
    """Load the cached oracle CNN, or train it (standard training, Adam 1e-3, batch 128)."""
    from advlab.data import load_dataset
    from advlab.defenses import StandardTraining
    from advlab.zoo import build_classifier, load_model, save_model

    if (folder / "card.json").exists():
        return load_model(folder)
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    clf = build_classifier("wong-cnn", (1, 28, 28), 10, mean=[0.1307], std=[0.3081], seed=seed)
    StandardTraining(epochs=epochs, lr=1e-3, seed=seed, progress=False).fit(clf, train)
    clf.eval()
    acc = float((clf.predict(test.x) == test.y).float().mean())
    save_model(clf, folder, dataset="mnist", accuracy={"test": acc}, seed=seed)
    return load_model(folder)


def main() -> None:
    from advlab.blackbox import TorchOracle
    from advlab.blackbox.substitute import PAPER_SETTINGS, papernot_blackbox
    from advlab.cli.blackbox import plot_rounds
    from advlab.data import load_dataset
    from advlab.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/blackbox_mnist")
    ap.add_argument(
        "--target-dir", default="bench/out/blackbox_mnist/target", help="cached oracle CNN (trained if absent)"
    )
    ap.add_argument("--seed-size", type=int, default=150)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--target-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128, help="substitute training batch (the reference code's 128)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a contended machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reservoir", action="store_true", help="skip the reservoir-sampling run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    target = target_model(Path(args.target_dir), args.target_epochs, args.seed)
    test = load_dataset("mnist", "test", n=args.seed_size + args.n_eval)
    x_seed, x_eval, y_eval = test.x[: args.seed_size], test.x[args.seed_size :], test.y[args.seed_size :]
    target_acc = float((target.predict(x_eval) == y_eval).float().mean())
    logging.info(
        "oracle: wong-cnn, accuracy %.2f%% on the %d evaluation images (%.0fs)",
        100 * target_acc,
        len(y_eval),
        time.perf_counter() - t0,
    )

    runs = {"plain": {}, "reservoir": {"sigma": 3, "kappa": 400}}
    if args.no_reservoir:
        runs.pop("reservoir")
    results = {}
    for name, extra in runs.items():
        oracle = TorchOracle(target, mode="labels")
        t1 = time.perf_counter()
        res = papernot_blackbox(
            oracle,
            x_seed,
            "mlp",
            **PAPER_SETTINGS,  # the paper's procedure (the library's defaults differ: bench/blackbox_zoo.py)
            rounds=args.rounds,
            eps=args.eps,
            x_test=x_eval,
            y_test=y_eval,
            seed=args.seed,
            batch_size=args.batch_size,
            **extra,
        )
        results[name] = {**res.to_dict(), "wall_seconds": time.perf_counter() - t1}
        plot_rounds(results[name]["rounds"], out / f"rounds_{name}.png")
        logging.info(
            "%s: transfer success %.1f%%, %d training queries, %.0fs",
            name,
            100 * (res.transfer_success or 0),
            res.queries,
            results[name]["wall_seconds"],
        )

    record = {
        "oracle": {"arch": "wong-cnn", "epochs": args.target_epochs, "eval_accuracy": target_acc},
        "batch_size": args.batch_size,
        "seed_size": args.seed_size,
        "n_eval": args.n_eval,
        "eps": args.eps,
        "runs": results,
        "provenance": provenance(),
    }
    from advlab import io

    io.write_json(out / "result.json", record)
    print(f"oracle accuracy on eval images: {100 * target_acc:.2f}%")
    for name, r in results.items():
        print(f"\n{name} ({r['wall_seconds']:.0f}s)")
        print(
            f"| round | |S_p| | training queries | substitute acc. | agreement | transfer success (eps={args.eps:g}) |"
        )
        print("|---|---|---|---|---|---|")
        for row in r["rounds"]:

            def pct(v):
                return "n/a" if v is None else f"{100 * v:.1f}%"

            print(
                f"| {row['round']} | {row['train_size']} | {row['queries']} | {pct(row['substitute_accuracy'])} | "
                f"{pct(row['agreement'])} | {pct(row['transfer_success'])} |"
            )
    print(json.dumps({k: v["transfer_success"] for k, v in results.items()}))


if __name__ == "__main__":
    main()
