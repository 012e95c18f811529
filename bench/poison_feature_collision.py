"""Feature-collision poisons (Shafahi et al. 2018) in the transfer-learning setting on MNIST: targeted success rate.

A small CNN is trained on the first --n-pretrain MNIST training images (Adam, --epochs epochs) and frozen; its
penultimate layer (128 features) is the feature extractor. The victim retrains the last layer alone (a
multinomial logistic regression, scikit-learn, on the frozen features) on --n-train other training images plus the
poisons. For each of --targets test images that the clean retrained model classifies correctly, the base class is
the next class ``(label + 1) % 10``; success means the retrained model classifies the target as the base class.
Settings: 1 poison without watermark (the paper's transfer setting), 5 poisons, and 5 poisons with the watermark at
opacity 0.3.

Usage:
    OMP_NUM_THREADS=1 nice python bench/poison_feature_collision.py   # bench/out/poison_feature_collision/result.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-pretrain", type=int, default=10000)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--targets", type=int, default=20)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default="bench/out/poison_feature_collision")
    args = p.parse_args()
    import torch
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    from advlab import io
    from advlab.data import load_dataset
    from advlab.poisoning import feature_collision
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, test = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")
    features = nn.Sequential(
        nn.Conv2d(1, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 5, 2, 2), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
    )  # fmt: skip
    head = nn.Linear(128, 10)
    opt = torch.optim.Adam([*features.parameters(), *head.parameters()], lr=1e-3)
    t0 = time.perf_counter()
    xp, yp = train.x[: args.n_pretrain], train.y[: args.n_pretrain]
    for _ in range(args.epochs):
        for i in range(0, xp.shape[0], 128):
            opt.zero_grad()
            nn.functional.cross_entropy(head(features(xp[i : i + 128])), yp[i : i + 128]).backward()
            opt.step()
    features.eval()
    x, y = (
        train.x[args.n_pretrain : args.n_pretrain + args.n_train],
        train.y[args.n_pretrain : args.n_pretrain + args.n_train],
    )

    def retrain(xs: torch.Tensor, ys: torch.Tensor) -> LogisticRegression:
        with torch.no_grad():
            feats = features(xs).numpy()
        return LogisticRegression(C=10.0, max_iter=3000).fit(feats, ys.numpy())

    def predict(model: LogisticRegression, image: torch.Tensor) -> int:
        with torch.no_grad():
            return int(model.predict(features(image[None]).numpy())[0])

    clean = retrain(x, y)
    with torch.no_grad():
        clean_acc = float(clean.score(features(test.x[:2000]).numpy(), test.y[:2000].numpy()))
    targets = [i for i in range(200) if predict(clean, test.x[i]) == int(test.y[i])][: args.targets]
    settings = {"1 poison": (1, 0.0), "5 poisons": (5, 0.0), "5 poisons, watermark 0.3": (5, 0.3)}
    rows: dict[str, dict] = {}
    for name, (n, opacity) in settings.items():
        hits, distances = [], []
        for k, i in enumerate(targets):
            base = (int(test.y[i]) + 1) % 10
            poisoned = feature_collision(
                features, (x, y), test.x[i], base, n_poisons=n, opacity=opacity, steps=args.steps, seed=k
            )
            hits.append(predict(retrain(poisoned.x, poisoned.y), test.x[i]) == base)
            distances.append(float(poisoned.extra["feature_distance"].mean()))
        rows[name] = {"success_rate": sum(hits) / len(hits), "hits": hits, "mean_feature_distance": distances}
        print(name, f"{sum(hits)}/{len(hits)}", f"{time.perf_counter() - t0:.0f}s", flush=True)
    record = {
        "settings": vars(args),
        "clean_retrained_accuracy_2000_test": clean_acc,
        "targets": targets,
        "results": rows,
        "wall_seconds": time.perf_counter() - t0,
        "provenance": provenance(),
    }
    io.write_json(Path(args.out) / "result.json", record)
    print(f"clean retrained last layer: {clean_acc:.3f} test accuracy (first 2000)")
    print("| poisons | targeted success |\n|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['success_rate']:.2f} ({sum(row['hits'])}/{len(row['hits'])}) |")


if __name__ == "__main__":
    main()
