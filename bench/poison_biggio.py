"""Biggio et al. 2012 poisoning of SVMs on MNIST 7 vs 1: test error versus the number of inserted attack points.

The paper's setting (Sec. 4.2): two MNIST digits, pixels in [0, 1], a training set of 100 points, a validation set
of 500 the attacker maximises the hinge loss of, and the rest of the test digits to measure error; linear kernel,
C = 1. Here also an RBF kernel (gamma: scikit-learn's "scale" rule). Attack points are inserted one after another
(``advlab.poisoning.biggio_svm``); beside them, random label noise of the same size: the same starting points
(random training rows with the other class's label) without the gradient ascent (``steps=0``). Test error is that
of scikit-learn's SVC retrained on the poisoned set (an independent oracle), averaged over ``--repeats`` draws of
the training and validation sets.

Usage:
    OMP_NUM_THREADS=1 nice python bench/poison_biggio.py      # bench/out/poison_biggio/result.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", type=int, nargs=2, default=[7, 1])
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--step-size", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/out/poison_biggio")
    args = p.parse_args()
    import torch
    from sklearn.svm import SVC

    from advlab import io
    from advlab.data import load_dataset
    from advlab.poisoning import biggio_svm
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    a, b = args.digits
    train, test = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")
    pool = torch.nonzero((train.y == a) | (train.y == b)).flatten()
    keep = (test.y == a) | (test.y == b)
    x_test, y_test = test.x[keep].flatten(1).numpy(), test.y[keep].numpy()
    record: dict = {"settings": vars(args), "n_test": int(keep.sum()), "kernels": {}}
    t0 = time.perf_counter()
    for kernel in ("linear", "rbf"):
        curves: dict[str, list[list[float]]] = {"attack": [], "random": []}
        for r in range(args.repeats):
            order = pool[torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(r))]
            tr, va = order[: args.n_train], order[args.n_train : args.n_train + args.n_val]
            data, val = (train.x[tr], train.y[tr]), (train.x[va], train.y[va])
            for name, steps in (("attack", args.steps), ("random", 0)):
                poisoned = biggio_svm(
                    data, val, n_points=args.points, kernel=kernel, steps=steps, step_size=args.step_size, seed=r
                )
                gamma = poisoned.settings["gamma"]
                n0 = args.n_train
                errors = []
                for k in range(args.points + 1):
                    xs, ys = poisoned.x[: n0 + k].flatten(1).numpy(), poisoned.y[: n0 + k].numpy()
                    svc = SVC(kernel=kernel, C=1.0, gamma=gamma).fit(xs, ys)
                    errors.append(float(1 - svc.score(x_test, y_test)))
                curves[name].append(errors)
                print(kernel, r, name, [round(e, 3) for e in errors], f"{time.perf_counter() - t0:.0f}s", flush=True)
        mean = {k: torch.tensor(v).mean(0).tolist() for k, v in curves.items()}
        record["kernels"][kernel] = {"runs": curves, "mean": mean}
    record["wall_seconds"] = time.perf_counter() - t0
    record["provenance"] = provenance()
    io.write_json(Path(args.out) / "result.json", record)
    print("| kernel | attack points (% of training) | test error, Biggio | test error, random label noise |")
    print("|---|---|---|---|")
    for kernel, entry in record["kernels"].items():
        for k in range(args.points + 1):
            share = 100 * k / (args.n_train + k)
            print(
                f"| {kernel} | {k} ({share:.1f}%) | {entry['mean']['attack'][k]:.3f} | {entry['mean']['random'][k]:.3f} |"
            )


if __name__ == "__main__":
    main()
