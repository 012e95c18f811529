"""Training on (poisoned) data and the measures of a poisoning attack: clean accuracy, attack success, drop.

:class:`Training` binds the settings of one training (architecture, trainer, epochs...) and is then a plain
callable ``training(x, y) -> Classifier``: what an attack's learner (``fit=``) or a sanitising defense's
``retrain=`` takes. :func:`measure` compares the poisoned model with the same training on clean data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from advlab import zoo
from advlab.defenses import DEFENSES, accuracy
from advlab.models import Classifier
from advlab.poisoning.base import PoisonedData, Trigger, attack_success_rate, check_input_shape


@dataclass(frozen=True)
class Training:
    """The settings of one training; calling it trains a fresh model on ``(x, y)``.

    Attributes:
        input_shape: one input's ``(C, H, W)``.
        num_classes: the number of classes.
        arch: architecture from the model zoo.
        defense: the registered trainer (``"standard"``: cross-entropy).
        epochs: passes over the training data.
        batch_size: training batch size.
        lr: learning rate (Adam).
        seed: seed of the initialisation and the data order.
        mean: per-channel normalisation mean inside the classifier (or None).
        std: per-channel normalisation standard deviation (or None).
        device: where to train (None: the trainer's default, the CPU unless told otherwise).
        progress: show a progress bar.
        trainer_settings: further settings of the trainer.

    Examples:
        >>> training = Training((1, 8, 8), 10, arch="mlp", epochs=2)
        >>> model = training(x, y)  # a trained advlab Classifier
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    arch: str = "wong-cnn"
    defense: str = "standard"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    device: str | torch.device | None = None
    progress: bool = False
    trainer_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_input_shape(self.input_shape)
        zoo.build_classifier(self.arch, self.input_shape, self.num_classes, mean=self.mean, std=self.std)
        DEFENSES.get(self.defense)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Classifier:
        """Train a fresh model on ``(x, y)`` (see :func:`train_model`)."""
        return train_model(x, y, self)

    def record(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (for reports and model cards)."""
        out = asdict(self)
        out["device"] = None if self.device is None else str(self.device)
        out["input_shape"] = list(self.input_shape)
        out["mean"] = None if self.mean is None else list(self.mean)
        out["std"] = None if self.std is None else list(self.std)
        return out


def train_model(x: torch.Tensor, y: torch.Tensor, training: Training) -> Classifier:
    """A fresh ``training.arch`` model trained on ``(x, y)`` by ``training.defense`` with ``training``'s settings.

    Args:
        x: training inputs ``(N, C, H, W)``.
        y: training labels ``(N,)``.
        training: the settings.

    Returns:
        The trained classifier, in eval mode; its card holds the trainer's settings and history.

    Examples:
        >>> model = train_model(x, y, Training((1, 8, 8), 10, arch="mlp", epochs=2))
    """
    clf = zoo.build_classifier(
        training.arch,
        training.input_shape,
        training.num_classes,
        mean=training.mean,
        std=training.std,
        seed=training.seed,
    )
    trainer = DEFENSES.get(training.defense)(
        epochs=training.epochs,
        batch_size=training.batch_size,
        lr=training.lr,
        seed=training.seed,
        device=training.device,
        progress=training.progress,
        **training.trainer_settings,
    )
    trainer.fit(clf, (x, y))
    clf.card["training"] = {**trainer.settings(), "history": trainer.history_, "n_train": int(x.shape[0])}
    return clf


@dataclass(frozen=True)
class PoisonMetrics:
    """What the field measures of a poisoning attack (BackdoorBench's clean accuracy and attack success rate).

    Attributes:
        clean_accuracy: the poisoned model's accuracy on the clean test set.
        attack_success_rate: triggered test inputs not of the target classified as the target (backdoors only).
        poison_rate: poisons as a share of the poisoned training set.
        n_poisons: how many training rows are poisons.
        n_train: the size of the poisoned training set.
        n_test: the size of the test set.
        baseline_accuracy: the same training on the clean data, its accuracy on the clean test set.
        baseline_attack_success_rate: the clean model's "attack success" (the trigger alone, no backdoor).
    """

    clean_accuracy: float
    attack_success_rate: float | None
    poison_rate: float
    n_poisons: int
    n_train: int
    n_test: int
    baseline_accuracy: float | None = None
    baseline_attack_success_rate: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Clean accuracy lost to the poisons (for availability attacks: the test-error increase)."""
        return None if self.baseline_accuracy is None else self.baseline_accuracy - self.clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        """The measures with the accuracy drop and test-error increase, JSON-able."""
        return {**asdict(self), "accuracy_drop": self.accuracy_drop, "test_error_increase": self.accuracy_drop}


def measure(
    model: torch.nn.Module,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    poisoned: PoisonedData,
    baseline: torch.nn.Module | None = None,
    trigger: Trigger | None = None,
) -> PoisonMetrics:
    """Clean accuracy and attack success of ``model`` (and of the clean-trained ``baseline``) on the test set.

    Args:
        model: the model trained on ``poisoned``.
        x_test: clean test inputs.
        y_test: their labels.
        poisoned: the poisoned training set (its trigger and target define the attack success).
        baseline: the same training on the clean data, or None.
        trigger: the test-time trigger (default the training one; Blend may test with another alpha).

    Returns:
        The measures.

    Examples:
        >>> measure(model, x_test, y_test, poisoned, baseline=clean_model).to_dict()["accuracy_drop"]
    """
    trigger = trigger or poisoned.trigger

    def asr(m: torch.nn.Module) -> float | None:
        return None if trigger is None else attack_success_rate(m, x_test, y_test, trigger, poisoned.target)

    return PoisonMetrics(
        clean_accuracy=accuracy(model, x_test, y_test),
        attack_success_rate=asr(model),
        poison_rate=poisoned.rate,
        n_poisons=poisoned.n_poisons,
        n_train=int(poisoned.x.shape[0]),
        n_test=int(x_test.shape[0]),
        baseline_accuracy=None if baseline is None else accuracy(baseline, x_test, y_test),
        baseline_attack_success_rate=None if baseline is None else asr(baseline),
    )
