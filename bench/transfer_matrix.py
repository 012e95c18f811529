"""Cross-technique transferability matrix on MNIST (Papernot, McDaniel & Goodfellow 2016, arXiv:1605.07277).

Models: DNN (wong-cnn, 2 epochs on all 60k training images; shared with bench/blackbox_mnist.py), logistic
regression, linear SVM, decision tree and 3-NN fitted on the first --train-n training images (5000 by default, so
the run takes minutes on a contended 2-core machine), plus Liu et al.'s leave-one-out ensemble of the
differentiable models. Sources craft at linf eps = 0.3 on the first --n test images: FGSM for DNN/LR/SVM/ensemble
(as in the paper), the exact leaf search for the tree, bisection toward other-class training points for kNN
(minimal perturbations projected onto the eps-ball). Also reports, for kNN, its own attack's minimal linf
distances next to transfer from the differentiable substitutes.

Usage:
    nice python bench/transfer_matrix.py                     # writes bench/out/transfer_matrix/{transfer.json,.png}
    nice python bench/transfer_matrix.py --n 200 --train-n 2000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from advlab import io
    from advlab.blackbox import transfer_matrix
    from advlab.cli.transfer import fit_keyword
    from advlab.data import load_dataset
    from advlab.nonneural import knn_attack, tree_attack
    from advlab.provenance import provenance
    from advlab.reports.figures import transfer_heatmap
    from blackbox_mnist import target_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/transfer_matrix")
    ap.add_argument("--dnn", default="bench/out/blackbox_mnist/target", help="cached/trained CNN folder")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--train-n", type=int, default=5000)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a contended machine)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    models = {"dnn": target_model(Path(args.dnn), 2, args.seed)}
    train = load_dataset("mnist", "train", n=args.train_n)
    xf, yf = train.x.reshape(len(train.x), -1).numpy(), train.y.numpy()
    fit_seconds = {}
    for key in ("lr", "svm", "dt", "knn"):
        t1 = time.perf_counter()
        models[key] = fit_keyword(key, xf, yf, seed=args.seed)
        fit_seconds[key] = time.perf_counter() - t1
        logging.info("fitted %s in %.1fs", key, fit_seconds[key])
    test = load_dataset("mnist", "test", n=args.n)
    t2 = time.perf_counter()
    tm = transfer_matrix(
        models, test.x, test.y, eps=args.eps, norm="linf", attack="fgsm", ensemble="loo", seed=args.seed
    )
    matrix_seconds = time.perf_counter() - t2
    transfer_heatmap(
        tm.error,
        tm.sources,
        tm.targets,
        out / "transfer.png",
        title=f"MNIST transferability, linf eps={args.eps:g}, n={args.n} (FGSM / tree / kNN attacks)",
    )

    # kNN: its own minimal attack vs transfer from the differentiable models at eps
    knn_own = knn_attack(models["knn"], test.x, test.y, norm="linf")
    dt_own = tree_attack(models["dt"], test.x, test.y, norm="linf")
    knn_cmp = {
        "own_attack_median_linf": float(np.median(knn_own.distance[np.isfinite(knn_own.distance)])),
        "own_attack_success_within_eps": float((knn_own.distance <= args.eps).mean()),
        "transfer_error_at_eps": {s: tm.rate(s, "knn") for s in tm.sources},
    }
    dt_cmp = {
        "exact_median_linf": float(np.median(dt_own.distance[np.isfinite(dt_own.distance)])),
        "exact_success_within_eps": float((dt_own.distance <= args.eps).mean()),
    }
    # Karpathy's demo on the MNIST logistic regression: push every image toward "3" along the class templates
    from advlab.nonneural import fool_linear, from_sklearn, plot_linear_fooling

    lr_clf = from_sklearn(models["lr"], input_shape=(1, 28, 28))
    fooled = fool_linear(lr_clf, test.x[:10], test.y[:10], target=3, eps=0.2, direction="margin")
    plot_linear_fooling(fooled, test.x[:10], out / "linear_templates.png", max_examples=10)
    karpathy = {"eps": 0.2, "target": 3, "success": float(fooled.success.float().mean())}

    record = {
        **tm.to_dict(),
        "karpathy_linear_demo": karpathy,
        "train_n": args.train_n,
        "fit_seconds": fit_seconds,
        "matrix_seconds": matrix_seconds,
        "knn_own_vs_transfer": knn_cmp,
        "dt_exact": dt_cmp,
        "total_seconds": time.perf_counter() - t0,
        "provenance": provenance(),
    }
    io.write_json(out / "transfer.json", record)

    print(
        f"clean accuracy on the {args.n} test images: "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in tm.clean_accuracy.items())
    )
    print("\n| source \\ target | " + " | ".join(tm.targets) + " |")
    print("|---|" + "---|" * len(tm.targets))
    for s, row in zip(tm.sources, tm.error):
        print(f"| {s} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    print(
        f"\nkNN own attack: median minimal linf {knn_cmp['own_attack_median_linf']:.3f}, "
        f"{100 * knn_cmp['own_attack_success_within_eps']:.1f}% within eps"
    )
    print(
        f"DT exact attack: median minimal linf {dt_cmp['exact_median_linf']:.3f}, "
        f"{100 * dt_cmp['exact_success_within_eps']:.1f}% within eps"
    )
    print(f"Karpathy linear demo (LR, eps 0.2 toward '3'): {100 * karpathy['success']:.0f}% of 10 images")
    print(f"matrix {matrix_seconds:.0f}s, total {record['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
