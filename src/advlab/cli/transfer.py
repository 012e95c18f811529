"""``advlab transfer``: the cross-technique transferability matrix (Papernot et al. 2016) as JSON and a heat map."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from advlab.cli._common import (
    AtMost,
    add_command,
    add_data_options,
    check_output_dir,
    load_cli_model,
    load_split,
    output_dir,
    parse_float_list,
    positive_int,
)

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab transfer --models runs/m1,lr,svm,dt,knn --data mnist --eps 0.3 --out runs/transfer
  advlab transfer --models runs/cnn,runs/mlp,lr --data mnist --eps 0.3 --attack pgd --set steps=10 --out runs/t-pgd
  advlab transfer --models lr,svm,dt,knn,rf --data digits --eps 0.2 --train-n 1000 --ensemble all --out runs/t-digits

Keywords fit a scikit-learn model on the first --train-n training images: lr (logistic regression), svm
(linear SVM), svm-rbf (RBF-kernel SVM), dt (decision tree), rf (random forest), knn (k-nearest neighbours).
Anything else is a model folder written by 'advlab train'. Writes DIR/transfer.json and DIR/transfer.png.
"""

SKLEARN_KEYWORDS = ("lr", "svm", "svm-rbf", "dt", "rf", "knn")


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "transfer",
        "transferability matrix between models of different kinds",
        "Craft adversarial examples on every model (white-box attack for networks, logistic regression and SVMs; "
        "the exact leaf search for decision trees, a heuristic for forests, bisection for kNN) and measure how "
        "often every model misclassifies them (Papernot, McDaniel & Goodfellow 2016, arXiv:1605.07277). An "
        "ensemble of the differentiable models (Liu et al. 2017) is added as a source.",
        EXAMPLES,
    )
    p.add_argument(
        "--models", required=True, help="comma-separated model folders and/or keywords (lr, svm, dt, knn...)"
    )
    add_data_options(p, default="mnist")
    p.add_argument(
        "--n",
        type=positive_int,
        default=AtMost(1000),
        help="test images to craft on (the first N); default: 1000, or all when the data has fewer",
    )
    p.add_argument("--train-n", type=int, default=5000, help="training images used to fit the scikit-learn models")
    p.add_argument("--eps", default="0.3", help="attack radius (fractions like 8/255 allowed)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="threat norm")
    p.add_argument("--attack", default="fgsm", help="white-box attack for differentiable sources")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="attack setting (repeatable)")
    p.add_argument(
        "--ensemble",
        default="loo",
        choices=["loo", "all", "none"],
        help="ensemble source: leave-one-out per target, all differentiable models, or none",
    )
    p.add_argument("--knn-k", type=positive_int, default=3, help="neighbours of the knn keyword model")
    p.add_argument("--dt-depth", type=positive_int, default=None, help="maximum depth of the dt/rf keyword models")
    p.add_argument("--seed", type=int, default=0, help="random seed (model fitting, stochastic attacks)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def fit_keyword(name: str, x: Any, y: Any, *, seed: int = 0, knn_k: int = 3, dt_depth: int | None = None) -> Any:
    """Fit the scikit-learn model a keyword stands for on flat training data."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    models = {
        "lr": lambda: LogisticRegression(max_iter=200),
        "svm": lambda: LinearSVC(C=0.1, random_state=seed),
        "svm-rbf": lambda: SVC(kernel="rbf"),
        "dt": lambda: DecisionTreeClassifier(max_depth=dt_depth, random_state=seed),
        "rf": lambda: RandomForestClassifier(n_estimators=20, max_depth=dt_depth, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=knn_k),
    }
    return models[name]().fit(x, y)


def load_models(
    spec: str,
    data_name: str,
    data_dir: str | None,
    train_n: int,
    *,
    seed: int = 0,
    knn_k: int = 3,
    dt_depth: int | None = None,
    files: argparse.Namespace | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--models`` to ``{name: model}`` and a JSON description of each (``files``: how to read a --data file)."""
    from advlab import validation

    entries = _model_entries(spec)
    models: dict[str, Any] = {}
    info: dict[str, Any] = {}
    train: tuple[Any, Any] | None = None
    for entry in entries:
        key = entry.lower()
        if key in SKLEARN_KEYWORDS and not Path(entry).exists():
            if train is None:
                n_fit = validation.check_int("--train-n", train_n, minimum=10)
                train = _flat_training_data(data_name, data_dir, n_fit, files)
            models[key], info[key] = _fit(key, train, seed=seed, knn_k=knn_k, dt_depth=dt_depth)
            continue
        path = Path(entry)
        name = path.name or entry
        if name in models:
            name = entry
        models[name] = load_cli_model(
            argparse.Namespace(data=data_name), path, option="--models", card_options=False
        ).eval()
        info[name] = {"kind": "advlab", "path": str(path.resolve()), "arch": models[name].card.get("arch")}
    return models, info


def _model_entries(spec: str) -> list[str]:
    """The entries of ``--models``, each an existing folder or a keyword."""
    entries = [s.strip() for s in spec.split(",") if s.strip()]
    if not entries:
        raise ValueError("--models: expected a comma-separated list such as runs/m1,lr,svm,dt,knn")
    if len(set(entries)) != len(entries):
        raise ValueError(f"--models: duplicate entries in {entries}")
    for entry in entries:
        if entry.lower() not in SKLEARN_KEYWORDS and not Path(entry).exists():
            raise FileNotFoundError(
                f"--models: {entry!r} is neither a model folder nor a keyword ({', '.join(SKLEARN_KEYWORDS)})"
            )
    return entries


def _flat_training_data(
    data_name: str, data_dir: str | None, train_n: int, files: argparse.Namespace | None = None
) -> tuple[Any, Any]:
    """The first ``train_n`` training images, flattened, and their labels (numpy) for the scikit-learn models."""
    data = load_split(data_name, "train", data_dir, None, files=files)
    if len(data) < train_n:
        log.info("--train-n: the %s training split has only %d images; using all", data_name, len(data))
    return data.x[:train_n].reshape(min(train_n, len(data)), -1).numpy(), data.y[:train_n].numpy()


def _fit(key: str, train: tuple[Any, Any], **options: Any) -> tuple[Any, dict[str, Any]]:
    """The keyword's scikit-learn model fitted on ``train``, and its JSON description."""
    t0 = time.perf_counter()
    model = fit_keyword(key, train[0], train[1], **options)
    params = {k: v for k, v in model.get_params().items() if isinstance(v, (int, float, str, bool)) or v is None}
    return model, {
        "kind": "scikit-learn",
        "estimator": type(model).__name__,
        "params": params,
        "train_images": len(train[1]),
        "fit_seconds": time.perf_counter() - t0,
    }


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.blackbox.transfer import transfer_matrix
    from advlab.cli.train import parse_settings
    from advlab.provenance import provenance

    check_output_dir(args.out)
    eps_values = parse_float_list(args.eps, "--eps")
    if len(eps_values) != 1:
        raise ValueError(f"--eps: expected one radius, got {eps_values}")
    models, info = load_models(
        args.models, args.data, args.data_dir, args.train_n, seed=args.seed, knn_k=args.knn_k, dt_depth=args.dt_depth,
        files=args,
    )  # fmt: skip
    test = load_split(args.data, "test", args.data_dir, args.n, files=args)
    _check_shapes(models, test, args.data)
    log.info(
        "transfer matrix: %s on %d %s test images, %s eps=%g",
        ", ".join(models),
        args.n,
        args.data,
        args.norm,
        eps_values[0],
    )
    t0 = time.perf_counter()
    tm = transfer_matrix(
        models,
        test.x,
        test.y,
        eps=eps_values[0],
        norm=args.norm,
        attack=args.attack,
        attack_options=parse_settings(args.set),
        ensemble=None if args.ensemble == "none" else args.ensemble,
        seed=args.seed,
    )
    record = {
        **tm.to_dict(),
        "models": info,
        "wall_seconds": time.perf_counter() - t0,
        "data": {"name": args.data, "split": "test", "n": args.n},
        "provenance": provenance(),
    }
    out = output_dir(args.out)
    io.write_json(out / "transfer.json", record)
    _plot(tm, out / "transfer.png")
    _log_matrix(tm)
    log.info("wrote %s and %s", out / "transfer.json", out / "transfer.png")
    return 0


def _check_shapes(models: dict[str, Any], test: Any, data_name: str) -> None:
    for name, model in models.items():
        shape = getattr(model, "input_shape", None)
        if shape is not None and tuple(shape) != tuple(test.x.shape[1:]):
            raise ValueError(
                f"--models: {name} expects inputs of shape {tuple(shape)}, but {data_name} images are "
                f"{tuple(test.x.shape[1:])}"
            )


def _plot(tm: Any, path: Path) -> None:
    """The heat map of ``tm.error``, titled with the attack, norm, eps and number of examples."""
    from advlab.reports.figures import transfer_heatmap

    s = tm.settings
    title = f"transferability, {s.get('attack')} {s.get('norm')} eps={s.get('eps'):g}, n={s.get('n')}"
    transfer_heatmap(tm.error, tm.sources, tm.targets, path, title=title)


def _log_matrix(tm: Any) -> None:
    width = max(len(s) for s in tm.sources)
    log.info("%s  %s", " " * width, "  ".join(f"{t[:8]:>8}" for t in tm.targets))
    for s, row in zip(tm.sources, tm.error):
        log.info("%s  %s", s.ljust(width), "  ".join(f"{100 * v:7.1f}%" for v in row))
