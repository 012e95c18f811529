"""MNIST models shared by the physical/universal/fooling benchmarks: load from runs/, or train them (standard training)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("bench")

MODELS = {
    # name: (arch, arch kwargs, epochs, seed)
    "phys-wong": ("wong-cnn", {}, 2, 0),
    "phys-mlp": ("mlp", {}, 2, 1),
}


def mnist_model(name: str, runs: Path = Path("runs")):
    """The model saved in ``runs/NAME`` (trained here with StandardTraining, Adam 1e-3, batch 128, when missing)."""
    from advlab.data import load_dataset
    from advlab.defenses import StandardTraining, accuracy
    from advlab.zoo import build_classifier, load_model, save_model

    folder = runs / name
    if (folder / "card.json").exists():
        return load_model(folder)
    arch, kwargs, epochs, seed = MODELS[name]
    train = load_dataset("mnist", split="train")
    test = load_dataset("mnist", split="test")
    clf = build_classifier(
        arch, train.input_shape, train.num_classes, mean=train.mean, std=train.std, seed=seed, **kwargs
    )
    log.info("training %s (%s, %d epochs)", name, arch, epochs)
    StandardTraining(epochs=epochs, seed=seed, progress=False).fit(clf, (train.x, train.y))
    acc = accuracy(clf, test.x, test.y)
    save_model(
        clf,
        folder,
        dataset="mnist",
        training={"defense": "standard", "epochs": epochs},
        accuracy={"test": acc},
        seed=seed,
    )
    return load_model(folder)
