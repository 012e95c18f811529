"""Each poisoning defense against BadNets and Blend on MNIST: poisons found, and attack success after the defense.

The poisoned training set is the first --n-train MNIST training images with --rate of them (drawn from every class
but the target) triggered and relabelled to --target (all-to-one): BadNets (Gu et al. 2017) with a 3x3
checkerboard in the bottom-right corner, Blend (Chen et al. 2017) with a uniform-noise pattern at alpha 0.2. The
model is wong-cnn (advlab.zoo), Adam lr 2e-3, batch 128, --epochs epochs, one thread. Each training-set defense
(spectral, activations, knn) flags rows through advlab.poisoning.run_defense with its paper defaults; the model is
retrained from the same seed without them. STRIP (N = 100 overlays, FRR 1%) keeps the first half of the test
images as its clean pool and is measured on the rest. Clean accuracy and attack success on the first --n-test
test images.

Usage:
    OMP_NUM_THREADS=1 nice python bench/poison_defenses.py        # bench/out/poison_defenses.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--rates", default="0.05,0.1")
    p.add_argument("--attacks", default="badnets,blend")
    p.add_argument("--defenses", default="spectral,activations,knn,strip")
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/poison_defenses.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    from torch import nn

    from advlab.data import load_dataset
    from advlab.poisoning import Trigger, run_defense, stamp
    from advlab.poisoning.base import choose, generator_of
    from advlab.provenance import provenance
    from advlab.zoo.cnn import WongCNN

    torch.set_num_threads(1)
    train_set = load_dataset("mnist", split="train", n=args.n_train)
    test_set = load_dataset("mnist", split="test", n=args.n_test)

    def train(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        torch.manual_seed(args.seed)
        net = WongCNN((1, 28, 28), 10)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(args.seed)
        for _ in range(args.epochs):
            for rows in torch.randperm(x.shape[0], generator=g).split(128):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
                opt.step()
        return net.eval()

    noise = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(args.seed + 7))
    triggers = {"badnets": Trigger.patch((1, 28, 28), size=3), "blend": Trigger.blend(noise, alpha=0.2)}
    results = []
    for attack in args.attacks.split(","):
        for rate in map(float, args.rates.split(",")):
            x, y = train_set.x, train_set.y
            eligible = (y != args.target).nonzero().flatten()
            rows = choose(round(rate * x.shape[0]), eligible, generator_of(args.seed))
            poisoned = stamp(x, y, rows, triggers[attack], args.target, attack=attack, target=args.target)
            t0 = time.perf_counter()
            model = train(poisoned.x, poisoned.y)
            logging.info("%s at %.0f%%: trained in %.0f s", attack, 100 * rate, time.perf_counter() - t0)
            for defense in args.defenses.split(","):
                t0 = time.perf_counter()
                outcome = run_defense(defense, model, poisoned, retrain=train, x_test=test_set.x, y_test=test_set.y)
                row = {"attack": attack, "rate": rate, **outcome.summary(), "seconds": time.perf_counter() - t0}
                logging.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                results.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
