"""BadNets (Gu et al. 2017) on MNIST, Fashion-MNIST and the CIFAR-10 subset at 1%, 5% and 10% poison rate.

All-to-one towards class 0 with the default trigger (a 3x3 checkerboard in the bottom-right corner), the rows drawn
among the training rows not of class 0 (BackdoorBench's rule; the rate is a share of the whole training set). For
each dataset one model is trained on the clean data and one per poison rate, with the same architecture, settings
and seed (advlab.poisoning.training.Training: StandardTraining, Adam). Reported: clean test accuracy, attack
success rate (triggered test images not of class 0 classified as 0; BackdoorBench's definition) and the
clean-accuracy drop against the clean-trained model, whose attack success is the oracle that the trigger alone does
nothing. Anchor: BackdoorBench, PreAct ResNet-18 on full CIFAR-10 at 10%: 91.3% clean, 95.0% attack success.

CPU, one thread; sizes kept small for a shared 2-core machine (see --n-train, --epochs).

Usage:
    OMP_NUM_THREADS=1 nice python bench/poison_badnets.py                      # all three datasets
    OMP_NUM_THREADS=1 nice python bench/poison_badnets.py --datasets mnist --out bench/out/poison_badnets/mnist
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

SETUPS = {
    # dataset: (arch, n_train, epochs, lr)
    "mnist": ("wong-cnn", 10_000, 3, 1e-3),
    "fashion-mnist": ("wong-cnn", 10_000, 3, 1e-3),
    "cifar10": ("wong-cnn", 5_000, 5, 1e-3),
}
RATES = (0.01, 0.05, 0.10)


def run_dataset(name: str, rates: tuple[float, ...], n_test: int | None, seed: int) -> dict:
    from advlab.data import load_dataset
    from advlab.poisoning.badnets import badnets
    from advlab.poisoning.training import Training, measure

    arch, n_train, epochs, lr = SETUPS[name]
    train = load_dataset(name, "train", n=n_train)
    test = load_dataset(name, "test", n=n_test)
    training = Training(
        tuple(train.input_shape),
        train.num_classes,
        arch=arch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        mean=train.mean,
        std=train.std,
    )
    t0 = time.perf_counter()
    clean = training(train.x, train.y)
    rows = []
    for rate in rates:
        poisoned = badnets(train.x, train.y, rate=rate, target=0, seed=seed)
        t1 = time.perf_counter()
        model = training(poisoned.x, poisoned.y)
        m = measure(model, test.x, test.y, poisoned, baseline=clean)
        rows.append({"rate": rate, **m.to_dict(), "train_seconds": time.perf_counter() - t1})
        logging.info(
            "%s %.0f%%: clean %.2f%% (clean-trained %.2f%%), ASR %.2f%% (clean model %.2f%%)",
            name,
            100 * rate,
            100 * m.clean_accuracy,
            100 * m.baseline_accuracy,
            100 * m.attack_success_rate,
            100 * m.baseline_attack_success_rate,
        )
    return {
        "dataset": name,
        "arch": arch,
        "n_train": len(train),
        "n_test": len(test),
        "epochs": epochs,
        "lr": lr,
        "trigger": poisoned.trigger.name if poisoned.trigger else None,
        "rows": rows,
        "wall_seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion-mnist,cifar10")
    p.add_argument("--rates", default=",".join(map(str, RATES)))
    p.add_argument("--n-test", type=int, default=None, help="first N test images (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/poison_badnets")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from advlab import io
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    rates = tuple(float(r) for r in args.rates.split(","))
    results = {name: run_dataset(name, rates, args.n_test, args.seed) for name in args.datasets.split(",")}
    io.write_json(Path(args.out) / "result.json", {"results": results, "provenance": provenance()})
    print("| dataset | model | rate | clean acc. (clean-trained) | drop (points) | ASR | ASR of the clean model |")
    print("|---|---|---|---|---|---|---|")
    for r in results.values():
        for row in r["rows"]:
            print(
                f"| {r['dataset']} ({r['n_train']} train) | {r['arch']}, {r['epochs']} ep. | {100 * row['rate']:.0f}% "
                f"| {100 * row['clean_accuracy']:.2f}% ({100 * row['baseline_accuracy']:.2f}%) "
                f"| {100 * row['accuracy_drop']:.2f} | {100 * row['attack_success_rate']:.2f}% "
                f"| {100 * row['baseline_attack_success_rate']:.2f}% |"
            )


if __name__ == "__main__":
    main()
