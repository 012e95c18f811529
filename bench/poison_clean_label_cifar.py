"""Turner et al. 2019's label-consistent backdoor in the paper's setting, scaled down: the CIFAR-10 subset.

Victims: ``wong-cnn`` trained from scratch (Adam --lr, batch 128, --epochs, random crops with padding 4 and
horizontal flips: ``Training(augment=True)``, the data's normalisation inside the model) on the 5,000 training images
of the CIFAR-10 subset in $ADVLAB_DATA, one victim per seed of --seeds. Poisons: a share (--shares) of the target
class's training images, perturbed by ``advlab.poisoning.clean_label`` (PGD-40 linf, eps of --eps in 1/255) against
an attacker model, then stamped with Turner et al.'s four-corner trigger (``Trigger.corners``) at full amplitude or
at a reduced amplitude (--amplitudes, in 1/255; ``full`` for the black-and-white pattern); labels untouched. Attacker
models (--attackers): ``robust``, the saved PGD-trained wong-cnn (--robust-model, eps 8/255, trained on the same
5,000 images) and ``standard``, a wong-cnn trained on the same images by the victims' recipe (seed 1000). eps 0 is
the plain clean-label baseline (no attacker model). Attack success (``attack_success_rate``): triggered test images
not of the target class classified as the target, with the full-amplitude trigger at test time, as in the paper;
also with the training trigger. For scale, on the same victims: BadNets with the same trigger and as many poisons
(drawn from the other classes, relabelled to the target), and the victims trained on the clean set.

With --defenses the script instead runs every defense (spectral, activations, knn, strip through
``advlab.poisoning.run_defense``, retraining by the same recipe) on one setting (--defense-setting).

Usage:
    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 19 python bench/poison_clean_label_cifar.py \\
        --targets 0 --out bench/out/poison_clean_label_cifar/target0.json
    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 19 python bench/poison_clean_label_cifar.py \\
        --defenses --defense-setting robust,16,1.0,full,0 --out bench/out/poison_clean_label_cifar/defenses.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1,2", help="victim seeds")
    p.add_argument("--targets", default="0,3", help="target classes")
    p.add_argument("--eps", default="0,8,16", help="PGD linf radii in 1/255")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--attackers", default="robust,standard")
    p.add_argument("--robust-model", default="/work/runs/cifar-pgd5")
    p.add_argument("--shares", default="0.5,1.0", help="poisoned shares of the target class")
    p.add_argument("--amplitudes", default="full,32", help="training trigger: full, or an amplitude in 1/255")
    p.add_argument("--no-badnets", dest="badnets", action="store_false", help="skip the BadNets baseline")
    p.add_argument(
        "--no-augment", dest="augment", action="store_false", help="attacker and victims train without crops and flips"
    )
    p.add_argument("--defenses", action="store_true", help="run the defenses on --defense-setting instead")
    p.add_argument(
        "--defense-setting", default="robust,16,1.0,full,0", help="attacker,eps,share,amplitude,target for --defenses"
    )
    p.add_argument(
        "--spectral-factor", type=float, default=1.5, help="--defenses: spectral signatures remove factor * share"
    )
    p.add_argument("--out", default="bench/out/poison_clean_label_cifar/result.json")
    return p.parse_args()


class Bench:
    """The data, the recipe, the attacker models and the triggers, shared by every cell."""

    def __init__(self, args: argparse.Namespace) -> None:
        from advlab.data import load_dataset
        from advlab.poisoning import Trigger
        from advlab.poisoning.training import Training
        from advlab.zoo import load_model

        self.args = args
        self.train, self.test = load_dataset("cifar10", "train"), load_dataset("cifar10", "test")
        shape = tuple(self.train.input_shape)
        self.recipe = Training(
            shape, 10, arch="wong-cnn", epochs=args.epochs, lr=args.lr, augment=args.augment,
            mean=self.train.mean, std=self.train.std,
        )  # fmt: skip
        self.attackers: dict[str, Any] = {}
        names = args.attackers.split(",")
        if "robust" in names:
            self.attackers["robust"] = load_model(args.robust_model).eval()
        if "standard" in names:
            self.attackers["standard"] = self.fit(self.train.x, self.train.y, 1000)
        self.test_trigger = Trigger.corners(shape)
        self.triggers = {
            a: self.test_trigger if a == "full" else Trigger.corners(shape, amplitude=float(a) / 255)
            for a in args.amplitudes.split(",")
        }

    def fit(self, x: Any, y: Any, seed: int) -> Any:
        from dataclasses import replace

        return replace(self.recipe, seed=seed)(x, y)

    def accuracy(self, model: Any, x: Any = None, y: Any = None) -> float:
        from advlab.defenses.base import accuracy

        return accuracy(model, *((self.test.x, self.test.y) if x is None else (x, y)))

    def success(self, model: Any, target: int, trigger: Any = None) -> float:
        from advlab.poisoning import attack_success_rate

        trigger = self.test_trigger if trigger is None else trigger
        return attack_success_rate(model, self.test.x, self.test.y, trigger, target=target)

    def poisons(self, attacker: str, eps: int, share: float, amplitude: str, target: int) -> Any:
        """The clean-label poisoned set of one cell (the rows drawn with seed 0: the same for every eps)."""
        from advlab.poisoning import clean_label

        model = self.attackers.get(attacker, next(iter(self.attackers.values()), None))
        return clean_label(
            model, (self.train.x, self.train.y), target, rate=share, eps=eps / 255, steps=self.args.steps,
            trigger=self.triggers[amplitude], seed=0,
        )  # fmt: skip

    def badnets(self, n_poisons: int, target: int) -> Any:
        """BadNets with the full four-corner trigger: ``n_poisons`` rows of other classes relabelled to ``target``."""
        from advlab.poisoning.badnets import badnets

        x, y = self.train.x, self.train.y
        return badnets(x, y, rate=n_poisons / len(y), target=target, trigger=self.test_trigger, seed=0)


def cells(args: argparse.Namespace) -> list[tuple[str, int, float, str]]:
    """(attacker, eps, share, amplitude) of every clean-label cell; eps 0 once (it needs no attacker model)."""
    out = []
    for share in map(float, args.shares.split(",")):
        for amplitude in args.amplitudes.split(","):
            for eps in map(int, args.eps.split(",")):
                for attacker in ["none"] if eps == 0 else args.attackers.split(","):
                    out.append((attacker, eps, share, amplitude))
    return out


def hardness(bench: Bench, poisoned: Any, clean_victims: list[Any]) -> dict[str, float]:
    """How hard the perturbed poisons (before the trigger) are: accuracy of the attackers and the clean victims."""
    rows, hard = poisoned.indices, poisoned.extra["perturbed"]
    y = bench.train.y[rows]
    out = {f"{name}_attacker_accuracy": bench.accuracy(m, hard, y) for name, m in bench.attackers.items()}
    out["clean_victims_accuracy"] = statistics.mean(bench.accuracy(m, hard, y) for m in clean_victims)
    return out


def fit_figures(bench: Bench, victim: Any, poisoned: Any) -> dict[str, float]:
    """How the victim fits its training set: the clean rows, the poisons as trained, the poisons without trigger."""
    rows, keep = poisoned.indices, ~poisoned.is_poison()
    labels = poisoned.y[rows]
    return {
        "train_accuracy_clean_rows": bench.accuracy(victim, poisoned.x[keep], poisoned.y[keep]),
        "poisons_fit": bench.accuracy(victim, poisoned.x[rows], labels),
        "poisons_fit_without_trigger": bench.accuracy(victim, poisoned.extra["perturbed"], labels),
    }


def run_grid(bench: Bench, record: dict[str, Any]) -> None:
    args, seeds = bench.args, [int(s) for s in bench.args.seeds.split(",")]
    t0 = time.perf_counter()
    clean = [bench.fit(bench.train.x, bench.train.y, s) for s in seeds]
    targets = [int(t) for t in args.targets.split(",")]
    record["clean"] = [
        {"seed": s, "clean_accuracy": bench.accuracy(m), "attack_success": {t: bench.success(m, t) for t in targets}}
        for s, m in zip(seeds, clean, strict=True)
    ]
    print(f"clean victims: {record['clean']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for target in targets:
        for attacker, eps, share, amplitude in cells(args):
            t1 = time.perf_counter()
            poisoned = bench.poisons(attacker, eps, share, amplitude, target)
            row: dict[str, Any] = {"attack": "clean_label", "attacker": attacker, "eps": eps, "share": share}
            row.update(amplitude=amplitude, target=target, n_poisons=poisoned.n_poisons)
            row["hardness"] = hardness(bench, poisoned, clean)
            row["victims"] = victims(bench, poisoned, target, seeds, clean_label=True)
            add_row(record, row, t1)
        for share in map(float, args.shares.split(",")) if args.badnets else ():
            t1 = time.perf_counter()
            n = round(share * int((bench.train.y == target).sum()))
            row = {"attack": "badnets", "share": share, "amplitude": "full", "target": target, "n_poisons": n}
            row["victims"] = victims(bench, bench.badnets(n, target), target, seeds, clean_label=False)
            add_row(record, row, t1)
        record["wall_seconds"] = time.perf_counter() - t0
        write(record, args.out)


def victims(bench: Bench, poisoned: Any, target: int, seeds: list[int], clean_label: bool) -> list[dict[str, Any]]:
    """One victim per seed trained on ``poisoned``: its clean accuracy and attack success (and, for the clean-label
    poisons, the training trigger's success and how it fits its training set)."""
    out = []
    for seed in seeds:
        victim = bench.fit(poisoned.x, poisoned.y, seed)
        figures = {
            "seed": seed,
            "clean_accuracy": bench.accuracy(victim),
            "attack_success": bench.success(victim, target),
        }
        if clean_label:
            figures["attack_success_training_trigger"] = bench.success(victim, target, poisoned.trigger)
            figures.update(fit_figures(bench, victim, poisoned))
        out.append(figures)
    return out


def add_row(record: dict[str, Any], row: dict[str, Any], started: float) -> None:
    row["seconds"] = time.perf_counter() - started
    record["rows"].append(summarise(row))
    report(row)


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """Mean and standard deviation over the victims of clean accuracy and attack success."""
    for key in ("clean_accuracy", "attack_success"):
        values = [v[key] for v in row["victims"]]
        row[f"{key}_mean"] = statistics.mean(values)
        row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


def report(row: dict[str, Any]) -> None:
    what = f"{row['attacker']} eps {row['eps']}" if row["attack"] == "clean_label" else "badnets"
    print(
        f"target {row['target']} {what} share {row['share']} amp {row['amplitude']} ({row['n_poisons']} poisons): "
        f"clean {row['clean_accuracy_mean']:.3f}, ASR {row['attack_success_mean']:.3f} ± {row['attack_success_sd']:.3f} "
        f"{[round(v['attack_success'], 3) for v in row['victims']]} {row.get('hardness', '')} ({row['seconds']:.0f} s)",
        flush=True,
    )


def run_defenses(bench: Bench, record: dict[str, Any]) -> None:
    """Every defense of ``run_defense`` on one clean-label setting, victim seed = the first of --seeds."""
    from dataclasses import replace

    from advlab.poisoning import run_defense

    attacker, eps, share, amplitude, target = bench.args.defense_setting.split(",")
    seed = int(bench.args.seeds.split(",")[0])
    poisoned = bench.poisons(attacker, int(eps), float(share), amplitude, int(target))
    poisoned = replace(poisoned, trigger=bench.test_trigger)  # attack success with the test-time trigger
    t0 = time.perf_counter()
    model = bench.fit(poisoned.x, poisoned.y, seed)
    record["setting"] = {"attacker": attacker, "eps": int(eps), "share": float(share), "amplitude": amplitude}
    record["setting"].update(target=int(target), seed=seed, n_poisons=poisoned.n_poisons)
    record["train_seconds"] = time.perf_counter() - t0
    for defense in ("spectral", "activations", "knn", "strip"):
        t0 = time.perf_counter()
        settings = {"factor": bench.args.spectral_factor} if defense == "spectral" else {}
        outcome = run_defense(
            defense, model, poisoned, retrain=lambda x, y: bench.fit(x, y, seed), x_test=bench.test.x,
            y_test=bench.test.y, **settings,
        )  # fmt: skip
        row = {**outcome.summary(), "seconds": time.perf_counter() - t0}
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        record["rows"].append(row)
        write(record, bench.args.out)


def write(record: dict[str, Any], out: str) -> None:
    from advlab import io
    from advlab.provenance import provenance

    io.write_json(Path(out), {**record, "provenance": provenance()})


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bench = Bench(args)
    record: dict[str, Any] = {"settings": vars(args), "rows": []}
    record["attackers"] = {name: bench.accuracy(m) for name, m in bench.attackers.items()}
    print(f"attackers' test accuracy {record['attackers']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    (run_defenses if args.defenses else run_grid)(bench, record)
    record["wall_seconds"] = time.perf_counter() - t0
    write(record, args.out)


if __name__ == "__main__":
    main()
