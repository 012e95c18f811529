"""Turner et al. 2019 label-consistent backdoor on MNIST: attack success with and without the adversarial step.

The attacker trains its own clean MLP (784-256-10) on MNIST training images 10,000-19,999; the victim trains the
same architecture from scratch (Adam 1e-3, batch 128, --epochs epochs) on the first --n-train training images in
which --rate of the target class's images are poisoned by ``advlab.poisoning.clean_label`` (PGD-40 linf against
the attacker's model, then a 3x3 checkerboard in the bottom-right corner, labels untouched). Reported: the
victim's clean test accuracy and attack success rate (triggered test images not of the target class classified as
the target), for eps 0 (the plain clean-label baseline the paper shows fails) and larger eps.

Usage:
    OMP_NUM_THREADS=1 python bench/poison_clean_label.py    # bench/out/poison_clean_label/result.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    p.add_argument(
        "--robust-attacker",
        type=float,
        default=0.0,
        help="PGD-7 adversarial training of the attacker's model at this linf eps (0: standard training)",
    )
    p.add_argument("--out", default="bench/out/poison_clean_label")
    args = p.parse_args()
    import torch
    from torch import nn

    from advlab import io
    from advlab.attacks import pgd
    from advlab.data import load_dataset
    from advlab.poisoning import Trigger, attack_success_rate, clean_label
    from advlab.provenance import provenance
    from advlab.threat import ThreatModel

    torch.set_num_threads(1)
    train, test = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")

    def fit(x: torch.Tensor, y: torch.Tensor, seed: int, robust: float = 0.0) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(args.epochs):
            order = torch.randperm(x.shape[0])
            for i in range(0, x.shape[0], 128):
                rows = order[i : i + 128]
                inputs = x[rows]
                if robust > 0:
                    model.eval()
                    inputs = pgd(model, inputs, y[rows], ThreatModel("linf", robust), steps=7).x_adv
                    model.train()
                opt.zero_grad()
                nn.functional.cross_entropy(model(inputs), y[rows]).backward()
                opt.step()
        return model.eval()

    t0 = time.perf_counter()
    attacker = fit(train.x[10000:20000], train.y[10000:20000], seed=1, robust=args.robust_attacker)
    x, y = train.x[: args.n_train], train.y[: args.n_train]
    trigger = Trigger.patch((1, 28, 28), size=3)
    rows = {}
    for eps in args.eps:
        poisoned = clean_label(attacker, (x, y), args.target, rate=args.rate, eps=eps, trigger=trigger, seed=0)
        victim = fit(poisoned.x, poisoned.y, seed=2)
        with torch.no_grad():
            accuracy = float((victim(test.x).argmax(1) == test.y).float().mean())
        success = attack_success_rate(victim, test.x, test.y, trigger, target=args.target)
        rows[eps] = {"n_poisons": poisoned.n_poisons, "clean_accuracy": accuracy, "attack_success_rate": success}
        print(f"eps {eps:g}: {poisoned.n_poisons} poisons, accuracy {accuracy:.4f}, ASR {success:.4f}", flush=True)
    record = {"settings": vars(args), "results": rows, "wall_seconds": time.perf_counter() - t0}
    io.write_json(Path(args.out) / "result.json", {**record, "provenance": provenance()})
    print("| eps | poisons | clean accuracy | attack success |\n|---|---|---|---|")
    for eps, row in rows.items():
        print(f"| {eps:g} | {row['n_poisons']} | {row['clean_accuracy']:.3f} | {row['attack_success_rate']:.3f} |")


if __name__ == "__main__":
    main()
