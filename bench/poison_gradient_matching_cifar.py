"""Witches' Brew gradient matching (Geiping et al. 2021) on the CIFAR-10 subset: targeted success from scratch.

The paper's setting, scaled to one CPU thread: the attacker's model and the victims are the same architecture
(--arch, advlab.zoo) trained from scratch by the same recipe (Adam --lr, batch 128, --epochs, random crops with
padding 4 and horizontal flips: ``Training(augment=True)``) on the 5,000 training images of the CIFAR-10 subset in
$ADVLAB_DATA. For each of --targets test images drawn at random, with an adversarial class drawn at random among
the other nine, ``advlab.poisoning.gradient_matching`` perturbs --budget of the training set (images of the
adversarial class, linf --eps, --steps signed-Adam steps, --restarts restarts, differentiable augmentation unless
--no-augment) on the attacker's model (seed 0). --victims victims (seeds 100, 101, ...; unknown to the attacker)
are trained from scratch on the poisoned set; a target is a success for a victim that gives it the adversarial
class. The oracle that it is the poisons: the same victims trained on the clean set, on the same targets.

--n-train N trains everyone on the first N training images only (the budget is then a share of N), so that a small
network can fit its training set as the paper's ResNet-18 does; --flip-copies K adds the sanity check of what the
poisons imitate: the same victims trained on the (clean) set plus K copies of the target labelled with the
adversarial class (if these do not flip the target, gradient matching cannot be expected to); --victim-seeds picks
the victims' seeds (seed 0 is the attacker's own initialisation and data order: a white-box bound, not the paper's
threat model). The probability each victim gives the target's adversarial class is recorded as a graded measure.

Usage:
    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 python bench/poison_gradient_matching_cifar.py
    # bench/out/poison_gradient_matching_cifar/result.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="wong-cnn")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--eps", type=float, default=16 / 255)
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--restarts", type=int, default=2)
    p.add_argument("--victims", type=int, default=3)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation in crafting")
    p.add_argument(
        "--no-train-augment", dest="train_augment", action="store_false", help="attacker and victims train without"
    )
    p.add_argument("--n-train", type=int, default=None, help="the first N training images only (default all)")
    p.add_argument(
        "--victim-seeds",
        type=int,
        nargs="+",
        default=None,
        help="the victims' seeds (default 100, 101, ...; 0 is the attacker's)",
    )
    p.add_argument("--flip-copies", type=int, default=0, help="sanity check: victims on K mislabelled target copies")
    p.add_argument("--seed", type=int, default=0, help="draws the targets and their adversarial classes")
    p.add_argument("--out", default="bench/out/poison_gradient_matching_cifar")
    return p.parse_args()


def main() -> None:
    args = parse()
    from dataclasses import replace

    import torch

    from advlab import io
    from advlab.data import load_dataset
    from advlab.defenses import base
    from advlab.models import predict
    from advlab.poisoning import gradient_matching
    from advlab.poisoning.training import Training
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    train, test = load_dataset("cifar10", "train"), load_dataset("cifar10", "test")
    x, y = train.x[: args.n_train], train.y[: args.n_train]
    recipe = Training((3, 32, 32), 10, arch=args.arch, epochs=args.epochs, lr=args.lr, augment=args.train_augment)

    def fit(xs: torch.Tensor, seed: int, ys: torch.Tensor = y) -> Any:
        return replace(recipe, seed=seed)(xs, ys)

    def accuracy(model: Any, xs: torch.Tensor = test.x, ys: torch.Tensor = test.y) -> float:
        return base.accuracy(model, xs, ys)

    def adversarial_probability(model: Any, i: int) -> float:
        """The probability ``model`` gives target ``i``'s adversarial class (a graded measure of success)."""
        return float(predict(model, test.x[rows[i : i + 1]], logits=True).softmax(1)[0, adversarial[i]])

    seeds = args.victim_seeds or [100 + v for v in range(args.victims)]
    t0 = time.perf_counter()
    draw = torch.Generator().manual_seed(args.seed)
    rows = torch.randperm(test.x.shape[0], generator=draw)[: args.targets]
    labels = test.y[rows]
    adversarial = (labels + torch.randint(1, 10, (args.targets,), generator=draw)) % 10
    attacker = fit(x, 0)
    clean_victims = [fit(x, seed) for seed in seeds]
    clean_hits = [
        [int(predict(m, test.x[rows])[i]) == int(adversarial[i]) for m in clean_victims] for i in range(args.targets)
    ]
    record: dict[str, Any] = {
        "settings": vars(args),
        "attacker_accuracy": accuracy(attacker),
        "attacker_train_accuracy": accuracy(attacker, x, y),
        "n_train": int(x.shape[0]),
        "clean_victim_accuracy": [accuracy(m) for m in clean_victims],
        "clean_victim_train_accuracy": [accuracy(m, x, y) for m in clean_victims],
        "targets": rows.tolist(),
        "target_labels": labels.tolist(),
        "adversarial_classes": adversarial.tolist(),
        "clean_hits": clean_hits,
        "clean_adversarial_probability": [
            [adversarial_probability(m, i) for m in clean_victims] for i in range(args.targets)
        ],
        "attacker_hits_clean": [
            int(predict(attacker, test.x[rows])[i]) == int(adversarial[i]) for i in range(args.targets)
        ],
        "hits": [],
        "alignment_loss": [],
        "adversarial_probability": [],
        "poisoned_victim_accuracy": [],
        "poisoned_victim_train_accuracy": [],
        "flip_hits": [],
        "craft_seconds": [],
    }
    print(
        f"attacker acc {record['attacker_accuracy']:.3f} (train {record['attacker_train_accuracy']:.3f}), "
        f"clean victims {record['clean_victim_accuracy']} (train {record['clean_victim_train_accuracy']}), "
        f"{time.perf_counter() - t0:.0f}s"
    )
    for i in range(args.targets):
        t1 = time.perf_counter()
        poisoned = gradient_matching(
            attacker, (x, y), test.x[rows[i : i + 1]], int(adversarial[i]), budget=args.budget, eps=args.eps,
            steps=args.steps, restarts=args.restarts, augment=args.augment, seed=i,
        )  # fmt: skip
        record["craft_seconds"].append(time.perf_counter() - t1)
        record["alignment_loss"].append(float(poisoned.extra["alignment_loss"][-1]))
        victims = [fit(poisoned.x, seed, poisoned.y) for seed in seeds]
        target = test.x[rows[i : i + 1]]
        record["hits"].append([int(predict(m, target)[0]) == int(adversarial[i]) for m in victims])
        record["adversarial_probability"].append([adversarial_probability(m, i) for m in victims])
        record["poisoned_victim_accuracy"].append([accuracy(m) for m in victims])
        record["poisoned_victim_train_accuracy"].append([accuracy(m, poisoned.x, poisoned.y) for m in victims])
        if args.flip_copies:
            x_flip = torch.cat([x, target.expand(args.flip_copies, -1, -1, -1)])
            y_flip = torch.cat([y, adversarial[i : i + 1].expand(args.flip_copies)])
            flipped = [fit(x_flip, seed, y_flip) for seed in seeds]
            record["flip_hits"].append([int(predict(m, target)[0]) == int(adversarial[i]) for m in flipped])
        print(
            i, f"label {int(labels[i])} -> {int(adversarial[i])}", f"alignment {record['alignment_loss'][-1]:.3f}",
            record["hits"][-1], "clean", clean_hits[i], "label-flip", record["flip_hits"][-1:],
            f"{time.perf_counter() - t0:.0f}s", flush=True,
        )  # fmt: skip
    hits = [h for row in record["hits"] for h in row]
    oracle = [h for row in clean_hits for h in row]
    record["success"] = sum(hits) / len(hits)
    record["clean_success"] = sum(oracle) / len(oracle)
    flips = [h for row in record["flip_hits"] for h in row]
    record["flip_success"] = sum(flips) / len(flips) if flips else None
    probabilities = [p for row in record["adversarial_probability"] for p in row]
    clean_probabilities = [p for row in record["clean_adversarial_probability"] for p in row]
    record["mean_adversarial_probability"] = sum(probabilities) / len(probabilities)
    record["clean_mean_adversarial_probability"] = sum(clean_probabilities) / len(clean_probabilities)
    record["wall_seconds"] = time.perf_counter() - t0
    io.write_json(Path(args.out) / "result.json", {**record, "provenance": provenance()})
    print(
        f"targeted success {sum(hits)}/{len(hits)} (clean victims {sum(oracle)}/{len(oracle)}"
        + (f", {args.flip_copies} mislabelled target copies {sum(flips)}/{len(flips)}" if flips else "")
        + "); "
        f"mean alignment loss {sum(record['alignment_loss']) / args.targets:.3f}; mean probability of the "
        f"adversarial class {record['mean_adversarial_probability']:.3f} (clean victims "
        f"{record['clean_mean_adversarial_probability']:.3f}); {record['wall_seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
