"""Training on (poisoned) data and the measures of a poisoning attack: clean accuracy, attack success, drop.

:class:`Training` binds the settings of one training (architecture, trainer, epochs...) and is then a plain
callable ``training(x, y) -> Classifier``: what an attack's learner (``fit=``) or a sanitising defense's
``retrain=`` takes. :func:`measure` compares the poisoned model with the same training on clean data.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from advlab import zoo
from advlab.defenses import DEFENSES, Trainer, accuracy
from advlab.models import Classifier, predict
from advlab.poisoning.augment import PADDING, random_crop_flip
from advlab.poisoning.base import PoisonedData, Trigger, attack_success_rate, check_input_shape
from advlab.poisoning.features import last_linear, penultimate_features


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
        augment: train on random crops (padding 4) and horizontal flips of each batch, drawn afresh at every
            step (:func:`~advlab.poisoning.augment.random_crop_flip`; the CIFAR-10 standard, Witches' Brew's
            victims). Off by default.

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
    augment: bool = False

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
    trainer_class = DEFENSES.get(training.defense)
    trainer = (augmenting(trainer_class) if training.augment else trainer_class)(
        epochs=training.epochs,
        batch_size=training.batch_size,
        lr=training.lr,
        seed=training.seed,
        device=training.device,
        progress=training.progress,
        **training.trainer_settings,
    )
    trainer.fit(clf, (x, y))
    history = {"history": trainer.history_, "n_train": int(x.shape[0])}
    clf.card["training"] = {**trainer.settings(), **({"augment": "crop-flip"} if training.augment else {}), **history}
    return clf


AUGMENT_SALT = 1
"""Mixed into the trainer's position-seeded generator for the crops and flips (its own draws use salt 0)."""


_AUGMENTING: dict[type[Trainer], type[Trainer]] = {}


def augmenting(trainer_class: type[Trainer]) -> type[Trainer]:
    """``trainer_class`` whose every training step sees random crops and flips of its batch.

    The crops (padding 4) and flips (:func:`~advlab.poisoning.augment.random_crop_flip`) are drawn from
    :meth:`~advlab.defenses.base.Trainer.generator_at` at the step's position (so a resumed run draws the same), and
    the trainer's own step (its loss, an adversarial trainer's crafting) runs on the augmented batch.

    Args:
        trainer_class: a registered trainer class.

    Returns:
        The subclass (one per trainer class).

    Examples:
        >>> trainer = augmenting(DEFENSES.get("standard"))(epochs=2)
    """
    if trainer_class in _AUGMENTING:
        return _AUGMENTING[trainer_class]

    class Augmenting(trainer_class):  # type: ignore[valid-type,misc]
        def training_step(
            self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
            generator = self.generator_at(epoch, x.device, salt=AUGMENT_SALT)
            return super().training_step(model, random_crop_flip(x, generator, padding=PADDING), y, epoch)

    Augmenting.__name__ = Augmenting.__qualname__ = f"Augmenting{trainer_class.__name__}"
    return _AUGMENTING.setdefault(trainer_class, Augmenting)


def retrain_last_layer(model: Classifier, x: torch.Tensor, y: torch.Tensor, training: Training) -> Classifier:
    """A copy of ``model`` whose last ``nn.Linear`` alone is retrained on ``(x, y)`` (the transfer setting).

    The layers below it are frozen: their features (:func:`~advlab.poisoning.features.penultimate_features`) are
    computed once, and the last layer, starting from ``model``'s weights, is fine-tuned on them by Adam for
    ``training.epochs`` passes in batches of ``training.batch_size`` at ``training.lr`` (the data order drawn
    from ``training.seed``). This is the victim of Shafahi et al.'s transfer-learning experiment.

    Args:
        model: the clean model (not changed).
        x: training inputs (the poisoned set).
        y: their labels.
        training: epochs, batch size, learning rate and seed of the retraining.

    Returns:
        The retrained copy, in eval mode; its card's ``training`` says which layer was retrained.

    Examples:
        >>> victim = retrain_last_layer(clean_model, poisoned.x, poisoned.y, training)
    """
    victim = copy.deepcopy(model)
    head = last_linear(victim).requires_grad_(True)
    features = penultimate_features(victim, x).to(head.weight.device, head.weight.dtype)
    labels = y.to(head.weight.device)
    optimiser = torch.optim.Adam(head.parameters(), lr=training.lr)
    generator = torch.Generator().manual_seed(training.seed)
    for _ in range(training.epochs):
        for rows in torch.randperm(features.shape[0], generator=generator).split(training.batch_size):
            rows = rows.to(features.device)
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(head(features[rows]), labels[rows]).backward()
            optimiser.step()
    victim.card["training"] = {
        "retrained": "last layer (features frozen)",
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "lr": training.lr,
        "seed": training.seed,
        "n_train": int(x.shape[0]),
    }
    return victim.eval()


@dataclass(frozen=True)
class TargetedGoal:
    """The goal of a targeted poisoning attack: one test image to be given another class.

    Attributes:
        index: the image's row in the test set.
        image: the image ``(C, H, W)``.
        label: its true label.
        intended: the class the attack wants it given (feature collision's base class, gradient matching's
            adversarial class).
    """

    index: int
    image: torch.Tensor
    label: int
    intended: int

    def record(self) -> dict[str, int]:
        """The goal as JSON (without the image)."""
        return {"target_index": self.index, "target_label": self.label, "intended_class": self.intended}

    def outcome(self, model: torch.nn.Module, baseline: torch.nn.Module | None = None) -> dict[str, Any]:
        """``targeted_success`` (``model`` gives the image the intended class) and both models' predictions."""
        prediction = int(predict(model, self.image[None])[0])
        before = None if baseline is None else int(predict(baseline, self.image[None])[0])
        return {
            "targeted_success": prediction == self.intended,
            "target_prediction": prediction,
            "baseline_target_prediction": before,
        }


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
        targeted_success: targeted attacks: the poisoned model gives the target image the intended class.
        target_prediction: targeted attacks: the poisoned model's class for the target image.
        baseline_target_prediction: targeted attacks: the clean model's class for it.
    """

    clean_accuracy: float
    attack_success_rate: float | None
    poison_rate: float
    n_poisons: int
    n_train: int
    n_test: int
    baseline_accuracy: float | None = None
    baseline_attack_success_rate: float | None = None
    targeted_success: bool | None = None
    target_prediction: int | None = None
    baseline_target_prediction: int | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Clean accuracy lost to the poisons (for availability attacks: the test-error increase)."""
        return None if self.baseline_accuracy is None else self.baseline_accuracy - self.clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        """The measures with the accuracy drop and test-error increase, JSON-able (targeted measures only when set)."""
        out = {**asdict(self), "accuracy_drop": self.accuracy_drop, "test_error_increase": self.accuracy_drop}
        if self.targeted_success is None:
            for key in ("targeted_success", "target_prediction", "baseline_target_prediction"):
                del out[key]
        return out


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
