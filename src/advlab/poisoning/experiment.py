"""One poisoning experiment as a pipeline of named steps: poison, train on the poisons, train the clean baseline,
measure, and (when asked) defend: score the training rows, remove the suspects and retrain with the same
:class:`~advlab.poisoning.training.Training` (:func:`~advlab.poisoning.defend.run_defense`). ``advlab poison``
runs it.

Attacks that optimise their poisons against a clean model (the clean-label backdoor, feature collision, gradient
matching) get the baseline: with ``needs_clean_model`` the baseline is trained first, once, and handed to the
attack. Targeted attacks (a :class:`~advlab.poisoning.training.TargetedGoal`) add ``targeted_success`` to the
measures; ``last_layer`` trains the poisoned model as Shafahi et al.'s transfer victim (the clean model's
features frozen, its last layer retrained).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from advlab.models import Classifier
from advlab.poisoning.base import PoisonedData, Trigger
from advlab.poisoning.defend import DefenseOutcome, run_defense
from advlab.poisoning.training import PoisonMetrics, TargetedGoal, Training, measure, retrain_last_layer

log = logging.getLogger(__name__)

Attack = Callable[..., PoisonedData]
"""An attack with its settings bound: ``attack(x, y)`` returns the poisoned copy (``attack(x, y, clean_model)``
for an attack that needs the clean model)."""


class PoisonExperiment:
    """Poison a training set, train on it and on the clean data alike, and measure what the poisons did.

    Args:
        train: the clean training set ``(x, y)``.
        test: the clean test set ``(x, y)``.
        attack: the attack, settings bound (``functools.partial(badnets, rate=0.05, target=0)``).
        training: how both models are trained.
        baseline: also train on the clean data (for the clean-accuracy drop and the clean model's attack success).
        test_trigger: the trigger stamped at test time (default the training trigger).
        defense: a defense of :data:`~advlab.poisoning.defend.DEFENSES` run on the poisoned model (None: none).
        defense_settings: that defense's settings (its paper defaults otherwise).
        needs_clean_model: the attack is called ``attack(x, y, clean_model)`` with the baseline, which is then
            trained first (``baseline`` must be True).
        targeted: the goal of a targeted attack (its outcome is measured on the poisoned and the clean model).
        last_layer: train the poisoned model by retraining only the clean model's last layer on the poisoned set
            (:func:`~advlab.poisoning.training.retrain_last_layer`; needs ``baseline``), not from scratch.

    Raises:
        ValueError: ``needs_clean_model`` or ``last_layer`` without ``baseline``.

    Examples:
        >>> exp = PoisonExperiment((x, y), (x_test, y_test), partial(badnets, target=0), training).run()
        >>> exp.metrics_.attack_success_rate
    """

    poisoned_: PoisonedData
    model_: Classifier
    baseline_: Classifier | None
    metrics_: PoisonMetrics
    seconds_: dict[str, float]
    defense_: DefenseOutcome | None

    def __init__(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor],
        attack: Attack,
        training: Training,
        *,
        baseline: bool = True,
        test_trigger: Trigger | None = None,
        defense: str | None = None,
        defense_settings: Mapping[str, Any] | None = None,
        needs_clean_model: bool = False,
        targeted: TargetedGoal | None = None,
        last_layer: bool = False,
    ) -> None:
        for name, value in (("needs_clean_model", needs_clean_model), ("last_layer", last_layer)):
            if value and not baseline:
                raise ValueError(f"{name}: needs the clean model, which baseline=False skips; set baseline=True")
        self.train, self.test, self.attack, self.training = train, test, attack, training
        self.baseline, self.test_trigger = baseline, test_trigger
        self.defense, self.defense_settings = defense, dict(defense_settings or {})
        self.needs_clean_model, self.targeted, self.last_layer = needs_clean_model, targeted, last_layer
        self.seconds_ = {}
        self.defense_ = None
        self.baseline_ = None

    def run(self) -> PoisonExperiment:
        """All the steps, in order; returns self with ``poisoned_``, ``model_``, ``baseline_`` and ``metrics_``."""
        self.train_models()
        self.measure()
        self.defend()
        return self

    def train_models(self) -> Classifier:
        """Steps 1-3 in the order the attack needs: poison, train on the poisons, train the baseline (the baseline
        first when the attack or the poisoned training needs the clean model); returns the poisoned model."""
        if self.needs_clean_model or self.last_layer:
            self.train_baseline()
            self.poison()
            return self.train_poisoned()
        self.poison()
        self.train_poisoned()
        self.train_baseline()
        return self.model_

    def _timed(self, step: str, t0: float) -> None:
        self.seconds_[step] = time.perf_counter() - t0

    def poison(self) -> PoisonedData:
        """Step 1: the poisoned copy of the training set (made with the clean model when the attack needs it)."""
        t0 = time.perf_counter()
        if self.needs_clean_model:
            if self.baseline_ is None:
                raise RuntimeError("poison: the attack needs the clean model; run train_baseline() first")
            self.poisoned_ = self.attack(*self.train, self.baseline_)
        else:
            self.poisoned_ = self.attack(*self.train)
        self._timed("poison", t0)
        log.info(
            "%s: %d poisons in %d training rows", self.poisoned_.attack, self.poisoned_.n_poisons, len(self.train[1])
        )
        return self.poisoned_

    def train_poisoned(self) -> Classifier:
        """Step 2: a model trained on the poisoned copy (from scratch, or the clean model's last layer retrained)."""
        t0 = time.perf_counter()
        if self.last_layer:
            if self.baseline_ is None:
                raise RuntimeError("train_poisoned: last_layer retrains the clean model; run train_baseline() first")
            self.model_ = retrain_last_layer(self.baseline_, self.poisoned_.x, self.poisoned_.y, self.training)
        else:
            self.model_ = self.training(self.poisoned_.x, self.poisoned_.y)
        self._timed("train_poisoned", t0)
        return self.model_

    def train_baseline(self) -> Classifier | None:
        """Step 3: the same training on the clean data (skipped when ``baseline`` is False)."""
        t0 = time.perf_counter()
        self.baseline_ = self.training(*self.train) if self.baseline else None
        self._timed("train_baseline", t0)
        return self.baseline_

    def measure(self) -> PoisonMetrics:
        """Step 4: clean accuracy, attack success (or targeted success), poison rate and the drop."""
        self.metrics_ = measure(self.model_, *self.test, self.poisoned_, self.baseline_, self.test_trigger)
        if self.targeted is not None:
            self.metrics_ = replace(self.metrics_, **self.targeted.outcome(self.model_, self.baseline_))
        return self.metrics_

    def defend(self) -> DefenseOutcome | None:
        """Step 5: the defense (skipped when ``defense`` is None): detect, remove or relabel, retrain, measure."""
        if self.defense is None:
            return None
        t0 = time.perf_counter()
        self.defense_ = run_defense(
            self.defense,
            self.model_,
            self.poisoned_,
            retrain=self.training,
            x_test=self.test[0],
            y_test=self.test[1],
            **self.defense_settings,
        )
        self._timed("defend", t0)
        summary = self.defense_.summary()
        notes = [note for note in (summary["note"], summary["survival_note"]) if note]
        log.info("defense %s: %s", self.defense, "; ".join(notes) or "done")
        return self.defense_

    def record(self) -> dict[str, Any]:
        """The experiment as JSON: attack manifest (without the row lists), training settings, measures, times."""
        manifest = {k: v for k, v in self.poisoned_.manifest().items() if k not in ("indices", "original_labels")}
        record = {
            "attack": manifest,
            "training": self.training.record(),
            "metrics": self.metrics_.to_dict(),
            "seconds": dict(self.seconds_),
        }
        if self.targeted is not None:
            record["targeted"] = self.targeted.record()
        if self.last_layer:
            augmented = "; crops and flips in the clean model's training only" if self.training.augment else ""
            record["training"]["retrained"] = f"last layer (the clean model's features frozen{augmented})"
        if self.defense_ is not None:
            record["defense"] = self.defense_.summary()
        return record
