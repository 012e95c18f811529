"""The embedded demo: train, attack, adversarially train and attack again on scikit-learn's digits, offline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advlab import io, zoo
from advlab.attacks import FGSM, PGD, attack_in_batches
from advlab.data import Dataset, load_dataset
from advlab.defenses import PGDTraining, StandardTraining, Trainer, accuracy
from advlab.models import Classifier
from advlab.provenance import provenance
from advlab.reports.figures import example_grid, plt, save_png
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

EPS_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
"""L∞ radii on the [0, 1] pixel scale of the 8x8 digits (one grey level of the original data is 1/16)."""
TRAIN_EPS = 0.2
ARCH = "mlp"
EPOCHS = 30
TRAIN_STEPS = 7


def _robust_curve(model, x, y, attack, eps_grid, seed) -> list[float]:
    out = []
    for eps in eps_grid:
        res = attack_in_batches(attack, model, x, y, ThreatModel("linf", eps), batch_size=500, seed=seed)
        assert res.logits is not None  # set by the attack boundary
        robust = (res.logits.argmax(1) == y) & (model.predict(x) == y)
        out.append(float(robust.double().mean()))
    return out


def _plot_curves(curves: dict[str, list[float]], eps_grid: list[float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, values in curves.items():
        style = "-" if "adv" in label else "--"
        ax.plot(eps_grid, [100 * v for v in values], style, marker="o", label=label)
    ax.set_xlabel("eps (L∞, pixel scale [0, 1])")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("digits: standard vs PGD-trained MLP")
    fig.tight_layout()
    save_png(fig, path)


def run_demo(
    out: str | Path = "runs/demo", *, seed: int = 0, progress: bool = False, epochs: int = EPOCHS
) -> dict[str, Any]:
    """Train a digits MLP, attack it with FGSM and PGD across eps, PGD-train it, attack again, write a report.

    Writes ``demo.json``, ``robust_accuracy.png``, ``examples_standard.png``, ``examples_adversarial.png``
    and ``summary.md`` into ``out``.

    Returns:
        The JSON record.
    """
    out = Path(out)
    t_start = time.perf_counter()
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    eps_grid = list(EPS_GRID)
    record: dict[str, Any] = {"dataset": "digits", "n_train": len(train), "n_test": len(test), "eps": eps_grid}
    trainers = {
        "standard": StandardTraining(epochs=epochs, lr=3e-3, seed=seed, progress=progress),
        "adversarial": PGDTraining(
            eps=TRAIN_EPS, steps=TRAIN_STEPS, epochs=epochs, lr=3e-3, seed=seed, progress=progress
        ),
    }
    runs = {
        label: _train_and_attack(label, trainer, train, test, eps_grid, seed) for label, trainer in trainers.items()
    }
    record["models"] = {label: run.record for label, run in runs.items()}
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves({k: v for run in runs.values() for k, v in run.curves.items()}, eps_grid, out / "robust_accuracy.png")
    threat = ThreatModel("linf", TRAIN_EPS)
    for label, run in runs.items():
        res = PGD(steps=20)(run.model, test.x[:8], test.y[:8], threat)
        assert res.logits is not None  # set by the attack boundary
        grid = example_grid(
            test.x[:8], res.x_adv, test.y[:8], run.model.predict(test.x[:8]), res.logits.argmax(1), test.classes, None
        )
        io.write_bytes(out / f"examples_{label}.png", grid)
    record["wall_seconds"] = time.perf_counter() - t_start
    record["provenance"] = provenance(seed=seed)
    io.write_json(out / "demo.json", record)
    io.write_text(out / "summary.md", _summary(record))
    return record


@dataclass(frozen=True)
class _Run:
    """One trained model of the demo, its record and its accuracy curves."""

    model: Classifier
    record: dict[str, Any]
    curves: dict[str, list[float]]


def _train_and_attack(
    label: str, trainer: Trainer, train: Dataset, test: Dataset, eps_grid: list[float], seed: int
) -> _Run:
    """Train a fresh MLP with ``trainer``, then measure its accuracy under FGSM and PGD-20 across ``eps_grid``."""
    clf = zoo.build_classifier(
        ARCH, input_shape=train.input_shape, num_classes=train.num_classes, mean=train.mean, std=train.std, seed=seed
    )
    t0 = time.perf_counter()
    log.info("training the %s model (%s)...", label, trainer.name)
    trainer.fit(clf, train, test)
    train_seconds = time.perf_counter() - t0
    fgsm_curve = _robust_curve(clf, test.x, test.y, FGSM(), eps_grid, seed)
    pgd_curve = _robust_curve(clf, test.x, test.y, PGD(steps=20, restarts=2), eps_grid, seed)
    record: dict[str, Any] = {
        "training": trainer.settings(),
        "train_seconds": train_seconds,
        "clean_accuracy": accuracy(clf, test.x, test.y),
        "fgsm_accuracy": fgsm_curve,
        "pgd_accuracy": pgd_curve,
    }
    log.info(
        "  clean %.1f%%, PGD at eps=%.2f: %.1f%%", 100 * record["clean_accuracy"], TRAIN_EPS,
        100 * pgd_curve[eps_grid.index(TRAIN_EPS)],
    )  # fmt: skip
    return _Run(clf, record, {f"{label}: FGSM": fgsm_curve, f"{label}: PGD-20": pgd_curve})


def _summary(record: dict[str, Any]) -> str:
    eps = record["eps"]
    head = "| model | attack | " + " | ".join(f"eps={e:g}" for e in eps) + " |"
    sep = "|" + "---|" * (len(eps) + 2)
    rows = []
    for label, m in record["models"].items():
        for attack, key in (("FGSM", "fgsm_accuracy"), ("PGD-20 (2 restarts)", "pgd_accuracy")):
            rows.append(f"| {label} | {attack} | " + " | ".join(f"{100 * v:.1f}%" for v in m[key]) + " |")
    std, adv = record["models"]["standard"], record["models"]["adversarial"]
    i = eps.index(TRAIN_EPS)
    return "\n".join(
        [
            "# advlab demo: adversarial examples on scikit-learn's digits",
            "",
            f"An MLP trained normally reaches {100 * std['clean_accuracy']:.1f}% test accuracy, but PGD with L∞ "
            f"eps = {TRAIN_EPS} (about three grey levels of the 16-level digits) leaves {100 * std['pgd_accuracy'][i]:.1f}%. "
            f"The same MLP trained with PGD adversarial training (eps = {TRAIN_EPS}) keeps {100 * adv['clean_accuracy']:.1f}% "
            f"clean accuracy and {100 * adv['pgd_accuracy'][i]:.1f}% under the same attack.",
            "",
            f"Accuracy under attack (test set, {record['n_test']} images):",
            "",
            head,
            sep,
            *rows,
            "",
            "Figures: `robust_accuracy.png` (accuracy versus eps), `examples_standard.png` and "
            "`examples_adversarial.png` (originals, perturbations, adversarial examples with predictions).",
            f"Data: `demo.json`. Total time {record['wall_seconds']:.0f} s.",
            "",
        ]
    )
