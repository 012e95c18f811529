"""One poisoning experiment as a pipeline of named steps: poison, train on the poisons, train the clean baseline,
measure, and (when asked) defend: score the training rows, remove the suspects and retrain with the same
:class:`~advlab.poisoning.training.Training` (:func:`~advlab.poisoning.defend.run_defense`). ``advlab poison``
runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from advlab.models import Classifier
from advlab.poisoning.base import PoisonedData, Trigger
from advlab.poisoning.defend import DefenseOutcome, run_defense
from advlab.poisoning.training import PoisonMetrics, Training, measure

log = logging.getLogger(__name__)

Attack = Callable[[torch.Tensor, torch.Tensor], PoisonedData]
"""An attack with its settings bound: ``attack(x, y)`` returns the poisoned copy."""


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
    ) -> None:
        self.train, self.test, self.attack, self.training = train, test, attack, training
        self.baseline, self.test_trigger = baseline, test_trigger
        self.defense, self.defense_settings = defense, dict(defense_settings or {})
        self.seconds_ = {}
        self.defense_ = None

    def run(self) -> PoisonExperiment:
        """All the steps, in order; returns self with ``poisoned_``, ``model_``, ``baseline_`` and ``metrics_``."""
        self.poison()
        self.train_poisoned()
        self.train_baseline()
        self.measure()
        self.defend()
        return self

    def _timed(self, step: str, t0: float) -> None:
        self.seconds_[step] = time.perf_counter() - t0

    def poison(self) -> PoisonedData:
        """Step 1: the poisoned copy of the training set."""
        t0 = time.perf_counter()
        self.poisoned_ = self.attack(*self.train)
        self._timed("poison", t0)
        log.info(
            "%s: %d poisons in %d training rows", self.poisoned_.attack, self.poisoned_.n_poisons, len(self.train[1])
        )
        return self.poisoned_

    def train_poisoned(self) -> Classifier:
        """Step 2: a model trained on the poisoned copy."""
        t0 = time.perf_counter()
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
        """Step 4: clean accuracy, attack success, poison rate and the drop against the baseline."""
        self.metrics_ = measure(self.model_, *self.test, self.poisoned_, self.baseline_, self.test_trigger)
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
        log.info("defense %s: %s", self.defense, summary["note"] or "done")
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
        if self.defense_ is not None:
            record["defense"] = self.defense_.summary()
        return record
