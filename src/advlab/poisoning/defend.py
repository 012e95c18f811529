"""The poisoning defenses as one pipeline: detect, remove (or relabel), retrain, and measure what the field measures.

:func:`run_defense` is what ``advlab poison --defense NAME`` calls. The training-set defenses (``spectral``,
``activations``, ``knn``) score every training row, flag the suspects, and — given a ``retrain`` function — train
a fresh model without them (with the kNN sanitiser's corrected labels when it relabels); the test-time defense
(``strip``) keeps the model and rejects triggered inputs. Every outcome reports the precision and recall of the
poisons found, the clean accuracy and the attack success before and after, and says plainly when detection failed
(recall below :data:`FAILED_RECALL`, precision no better than flagging rows at random, or STRIP letting most
triggered inputs through): BackdoorBench (Wu et al.
2022) found spectral signatures and activation clustering often fail on BadNets at some poison rates.

Feature-based defenses read the penultimate layer: the input of the model's last ``nn.Linear``
(:func:`~advlab.poisoning.features.penultimate_features`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from torch import nn

from advlab import validation
from advlab.models import Classifier, predict
from advlab.poisoning.activations import activation_clustering
from advlab.poisoning.base import Detection, PoisonedData, attack_success_rate
from advlab.poisoning.features import evaluation_mode, penultimate_features
from advlab.poisoning.knn import knn_sanitise
from advlab.poisoning.spectral import spectral_signatures
from advlab.poisoning.strip import strip
from advlab.settings import OneOf, Range, Setting, settings_of, validate_all

FAILED_RECALL = 0.5
"""A training-set defense whose recall is below this failed to find the poisons (and the summary says so)."""

SURVIVED_SUCCESS = 0.5
"""A backdoor whose attack success after removal and retraining is at least this survived the defense (the summary
says so, whatever the detection's precision and recall: a tenth of the poisons left can be enough to keep it)."""

Retrain = Callable[[torch.Tensor, torch.Tensor], nn.Module]
"""``retrain(x, y)`` trains a fresh model on the sanitised training set and returns it."""


def knn_space(*, space: Annotated[str, OneOf(("inputs", "features"))] = "inputs") -> None:
    """Settings of the kNN defense in the pipeline.

    Args:
        space: where neighbours are searched: the flattened ``"inputs"`` or the model's penultimate ``"features"``.
    """


def strip_split(*, holdout: Annotated[float, Range(0, 1, strict_min=True, strict_max=True)] = 0.5) -> None:
    """Settings of STRIP in the pipeline.

    Args:
        holdout: the share of the test set kept as the defender's clean pool (overlays and threshold); STRIP
            is measured on the rest.
    """


@dataclass(frozen=True)
class DefenseSpec:
    """A defense of :data:`DEFENSES`: its algorithm, whose keyword-only parameters are its settings.

    Attributes:
        name: the name ``run_defense`` and ``advlab poison --defense`` take.
        algorithm: the public function of the paper.
        stage: ``"training"`` (scores training rows, retrains) or ``"test"`` (filters test inputs).
        description: one line for ``--help``.
        pipeline: a function declaring the pipeline's own settings for this defense, or None.
    """

    name: str
    algorithm: Callable[..., Any]
    stage: str
    description: str
    pipeline: Callable[..., None] | None = None

    def settings(self) -> dict[str, Setting]:
        """The defense's settings, each with its default and help text."""
        declared = settings_of(self.algorithm)
        return {**declared, **(settings_of(self.pipeline) if self.pipeline is not None else {})}


DEFENSES: Mapping[str, DefenseSpec] = {
    "spectral": DefenseSpec("spectral", spectral_signatures, "training", "spectral signatures (Tran et al. 2018)"),
    "activations": DefenseSpec(
        "activations", activation_clustering, "training", "activation clustering (Chen et al. 2018)"
    ),
    "knn": DefenseSpec("knn", knn_sanitise, "training", "k-NN label sanitisation (Paudice et al. 2018)", knn_space),
    "strip": DefenseSpec("strip", strip, "test", "STRIP input filtering at test time (Gao et al. 2019)", strip_split),
}
"""The defenses :func:`run_defense` runs, by name."""


@dataclass(frozen=True)
class DefenseOutcome:
    """What a defense found and what it changed.

    Attributes:
        defense: the defense's name.
        detection: the flagged training rows against the true poisons (None for STRIP, which flags test inputs).
        scores: the defense's suspicion score of each training row (STRIP: the entropy of each test input,
            clean ones first, then triggered ones), for the report's histogram.
        scored_poisons: which entries of ``scores`` are poisons (training rows) or triggered inputs (STRIP).
        model_after: the model retrained without the flagged rows (None without ``retrain``, and for STRIP).
        metrics: clean accuracy and attack success before and after, and the defense's own figures.
        settings: the settings the defense ran with.
    """

    defense: str
    detection: Detection | None
    scores: torch.Tensor
    scored_poisons: torch.Tensor
    model_after: nn.Module | None
    metrics: Mapping[str, float | None]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether detection failed: recall below :data:`FAILED_RECALL`, precision no better than chance (at most the
        poisons' share of the training set: what flagging rows at random gives, e.g. flagging every row), or STRIP
        accepting most triggered inputs."""
        if self.detection is not None:
            return self.detection.recall < FAILED_RECALL or not self.better_than_chance
        far = self.metrics.get("far")
        return far is not None and far > 1 - FAILED_RECALL

    @property
    def better_than_chance(self) -> bool:
        """Whether the flagged rows hold a larger share of poisons than the training set does (True for STRIP)."""
        d = self.detection
        if d is None or not d.flagged.numel():
            return True
        return d.precision > d.poisons.numel() / max(1, d.n_train)

    @property
    def backdoor_survived(self) -> bool:
        """Whether the retrained model still obeys the trigger: attack success after retraining of at least
        :data:`SURVIVED_SUCCESS` (False without a retrained model or a trigger)."""
        after = self.metrics.get("attack_success_after")
        return after is not None and after >= SURVIVED_SUCCESS

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: precision/recall, accuracies, attack success, and notes when detection failed and
        when the backdoor survived the retraining."""
        out: dict[str, Any] = {"defense": self.defense, "settings": dict(self.settings)}
        if self.detection is not None:
            out.update(self.detection.summary())
        out.update(self.metrics)
        out["detection_failed"] = self.failed
        out["note"] = failure_note(self) if self.failed else ""
        out["backdoor_survived"] = self.backdoor_survived
        out["survival_note"] = survival_note(self) if self.backdoor_survived else ""
        return out


def failure_note(outcome: DefenseOutcome) -> str:
    """The sentence a report prints when the defense failed to find the poisons."""
    if outcome.detection is None:
        return (
            f"detection failed: STRIP let {outcome.metrics.get('far', 0.0):.0%} of triggered inputs through "
            f"(more than {1 - FAILED_RECALL:.0%})"
        )
    d = outcome.detection
    if not outcome.better_than_chance:
        return (
            f"detection failed: {d.flagged.numel()} of {d.n_train} rows flagged with precision {d.precision:.2f}, no "
            f"better than flagging rows at random (the poisons are {d.poisons.numel() / max(1, d.n_train):.2f} of "
            "the training set)"
        )
    return (
        f"detection failed: {d.true_positives} of {d.poisons.numel()} poisons found (recall {d.recall:.2f} < "
        f"{FAILED_RECALL}); BackdoorBench (Wu et al. 2022) reports that spectral signatures and activation "
        "clustering often fail on BadNets at some poison rates"
    )


def survival_note(outcome: DefenseOutcome) -> str:
    """The sentence a report prints when the backdoor survived removal and retraining."""
    m, d = outcome.metrics, outcome.detection
    removed = f" without the {d.flagged.numel()} flagged rows" if d is not None else ""
    left = f" ({d.poisons.numel() - d.true_positives} of {d.poisons.numel()} poisons left in)" if d is not None else ""
    before, after = m.get("clean_accuracy_before"), m.get("clean_accuracy_after")
    accuracy = (
        f"; clean accuracy {before:.1%} before, {after:.1%} after" if before is not None and after is not None else ""
    )
    return (
        f"the backdoor survived: attack success {m['attack_success_after']:.1%} after retraining{removed}{left}, "
        f"{m.get('attack_success_before') or 0.0:.1%} before{accuracy}"
    )


def measure(
    model: nn.Module, poisoned: PoisonedData, x_test: torch.Tensor, y_test: torch.Tensor
) -> tuple[float, float | None]:
    """Clean test accuracy and, for a backdoor, attack success, in eval mode (the model's modes restored)."""
    with evaluation_mode(model):
        accuracy = float((predict(model, x_test).cpu() == y_test.cpu()).float().mean())
        success = None
        if poisoned.trigger is not None:
            success = attack_success_rate(model, x_test, y_test, poisoned.trigger, poisoned.target)
    return accuracy, success


def default_expected_rate(poisoned: PoisonedData, factor: float) -> float:
    """The largest share of poisons within a label: the upper bound ``epsilon`` the spectral defense is given.

    Tran et al. assume the defender knows an upper bound on the poisons; the pipeline gives it the true one
    (at least one row; at most ``1 / factor``, all of the label), as in the paper's experiments. Pass ``expected_rate`` or ``remove`` to set it yourself.
    """
    labels = poisoned.y[poisoned.indices]
    shares = [float((labels == c).sum()) / float((poisoned.y == c).sum()) for c in torch.unique(labels).tolist()]
    return min(max(shares, default=0.0), 1 / factor) or 1.0 / max(1, poisoned.x.shape[0])


def find_training_poisons(
    name: str, model: nn.Module, poisoned: PoisonedData, settings: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a training-set defense: the flagged rows, every row's score, and the labels to retrain with."""
    if name == "knn":
        space = settings.pop("space", "inputs")
        points = poisoned.x if space == "inputs" else penultimate_features(model, poisoned.x)
        found = knn_sanitise(points, poisoned.y, **settings)
        settings["space"] = space
        return found.flagged, found.scores, found.y
    features = penultimate_features(model, poisoned.x)
    if name == "spectral":
        if settings.get("expected_rate") is None and settings.get("remove") is None:
            settings["expected_rate"] = default_expected_rate(poisoned, settings["factor"])
        result = spectral_signatures(features, poisoned.y, **settings)
        return result.flagged, result.scores, poisoned.y
    clusters = activation_clustering(features, poisoned.y, **settings)
    return clusters.flagged, clusters.scores, poisoned.y


def sanitise_and_retrain(
    name: str, flagged: torch.Tensor, labels: torch.Tensor, poisoned: PoisonedData, retrain: Retrain | None
) -> nn.Module | None:
    """The model retrained on the training set without the flagged rows (or, relabelling kNN, with new labels)."""
    if retrain is None:
        return None
    relabelled = name == "knn" and not torch.equal(labels, poisoned.y)
    if relabelled:
        return retrain(poisoned.x, labels)
    keep = torch.ones(poisoned.x.shape[0], dtype=torch.bool)
    keep[flagged] = False
    return retrain(poisoned.x[keep], labels[keep])


def run_strip(
    model: nn.Module, poisoned: PoisonedData, x_test: torch.Tensor, y_test: torch.Tensor, settings: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float | None]]:
    """STRIP on the test set: scores (clean then triggered), which are triggered, and FAR/FRR/ASR let through."""
    trigger = poisoned.trigger
    if trigger is None:
        raise ValueError(f"defense: 'strip' needs a backdoor trigger, and the '{poisoned.attack}' poisons carry none")
    settings = dict(settings)
    n_pool = max(2, int(settings.pop("holdout") * x_test.shape[0]))
    if n_pool >= x_test.shape[0]:
        raise ValueError(f"holdout: keeps all {x_test.shape[0]} test inputs as the clean pool; lower holdout")
    pool, x_eval, y_eval = x_test[:n_pool], x_test[n_pool:], y_test[n_pool:]
    victims = x_eval[y_eval != poisoned.target] if poisoned.target is not None else x_eval
    with evaluation_mode(model):
        result = strip(model, x_eval, trigger.apply(victims), pool, **settings)
        predicted = predict(model, trigger.apply(victims)).cpu()
    wanted = poisoned.target if poisoned.target is not None else (y_eval.cpu() + 1) % int(y_test.max() + 1)
    through = result.accepted() & (predicted == torch.as_tensor(wanted))
    figures: dict[str, float | None] = {"threshold": result.threshold, "far": result.far, "frr": result.frr}
    figures["attack_success_through"] = float(through.float().mean()) if through.numel() else math.nan
    scores = torch.cat([result.clean_entropy, result.triggered_entropy])
    triggered = torch.cat(
        [torch.zeros(x_eval.shape[0], dtype=torch.bool), torch.ones(victims.shape[0], dtype=torch.bool)]
    )
    return scores, triggered, figures


def run_defense(
    name: str,
    model: nn.Module,
    poisoned: PoisonedData,
    *,
    retrain: Retrain | None = None,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    **settings: Any,
) -> DefenseOutcome:
    """Run one defense of :data:`DEFENSES` against a poisoned training set and the model trained on it.

    Training-set defenses (``spectral``, ``activations``, ``knn``) flag training rows; with ``retrain`` a fresh
    model is trained without them (relabelling kNN: on the corrected labels) and measured. ``strip`` filters
    test inputs: it keeps half the test set (``holdout``) as the defender's clean pool and reports FAR, FRR and
    the attack success of the triggered inputs it lets through.

    Args:
        name: ``"spectral"``, ``"activations"``, ``"knn"`` or ``"strip"``.
        model: the model trained on ``poisoned`` (features are read from the input of its last ``nn.Linear``).
        poisoned: the poisoned training set, with its record of the true poisons.
        retrain: ``retrain(x, y) -> model``, training a fresh model the way ``model`` was trained; None skips
            retraining (the outcome then has detection figures only).
        x_test: clean test inputs.
        y_test: their labels.
        **settings: the defense's settings (``DEFENSES[name].settings()``: those of its algorithm, plus ``space``
            for kNN and ``holdout`` for STRIP).

    Returns:
        The outcome: detection, scores, the retrained model and the metrics (see :meth:`DefenseOutcome.summary`).

    Raises:
        ValueError: an unknown defense (with a did-you-mean hint); bad settings, naming them (asking to remove
            more rows than a label has, ...); STRIP on poisons without a trigger.
        TypeError: a setting the defense does not have.

    Examples:
        >>> outcome = run_defense("spectral", model, poisoned, retrain=train, x_test=x_test, y_test=y_test)
        >>> outcome.summary()["recall"], outcome.summary()["attack_success_after"]
    """
    spec = DEFENSES.get(name)
    if spec is None:
        raise ValueError(
            f"defense: unknown {name!r}; choose one of {', '.join(DEFENSES)}." + validation.did_you_mean(name, DEFENSES)
        )
    declared = spec.settings()
    values = {k: s.default for k, s in declared.items()} | validate_all(f"defense {name!r}", declared, settings)
    if "bounds" in declared and "bounds" not in settings and isinstance(model, Classifier):
        values["bounds"] = model.bounds  # STRIP saturates its blends at the classifier's input range
    before = measure(model, poisoned, x_test, y_test)
    metrics: dict[str, float | None] = {"clean_accuracy_before": before[0], "attack_success_before": before[1]}
    if spec.stage == "test":
        scores, triggered, figures = run_strip(model, poisoned, x_test, y_test, values)
        return DefenseOutcome(name, None, scores, triggered, None, {**metrics, **figures}, values)
    flagged, scores, labels = find_training_poisons(name, model, poisoned, values)
    detection = Detection(flagged=flagged, poisons=poisoned.indices, n_train=int(poisoned.x.shape[0]))
    model_after = sanitise_and_retrain(name, flagged, labels, poisoned, retrain)
    after = measure(model_after, poisoned, x_test, y_test) if model_after is not None else (None, None)
    metrics.update(clean_accuracy_after=after[0], attack_success_after=after[1])
    return DefenseOutcome(name, detection, scores, poisoned.is_poison(), model_after, metrics, values)
