"""Transferability matrices: craft adversarial examples on each source model, measure how often each target errs.

Following Papernot, McDaniel & Goodfellow 2016 (arXiv:1605.07277), sources and targets may be of different
kinds — neural networks, logistic regression, SVMs, decision trees, k-nearest neighbours, ensembles:

* differentiable sources (torch modules, :class:`~advlab.models.Classifier`, scikit-learn linear models and
  SVMs through the exact :func:`advlab.nonneural.from_sklearn`) are attacked with any registered white-box
  attack (FGSM by default, as in the paper);
* decision trees use the exact leaf search :func:`~advlab.nonneural.tree_attack`, forests the heuristic
  :func:`~advlab.nonneural.forest_attack`, kNN the bisection attack :func:`~advlab.nonneural.knn_attack`; their
  minimal perturbations are projected onto the threat model's eps-ball (so all sources spend the same budget);
* an ensemble of the differentiable sources (Liu et al. 2017, arXiv:1611.02770) is added as a source:
  ``"all"`` members, or ``"loo"`` (leave-one-out: for each target the ensemble of the *other* sources, the
  paper's black-box protocol).

Every target (any of the above, or an :class:`~advlab.blackbox.Oracle`) is then evaluated on every source's
adversarial examples. The entry ``[source][target]`` is Papernot et al.'s transferability rate: the fraction of
adversarial examples the target misclassifies (w.r.t. the true label); the diagonal is the white-box error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import models, validation
from advlab.attacks.registry import make_attack
from advlab.blackbox.ensemble import ensemble_classifier
from advlab.models import Classifier
from advlab.nonneural import forest_attack, from_sklearn, knn_attack, tree_attack
from advlab.oracles import Oracle
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

ENSEMBLE_MODES = ("all", "loo")
ENSEMBLE_NAME = {"all": "ensemble", "loo": "ensemble (leave-one-out)"}


@dataclass
class TransferMatrix:
    """Success rates of transfer from every source to every target.

    Attributes:
        sources, targets: names, in row / column order.
        error: ``error[i][j]`` fraction of source ``i``'s adversarial examples that target ``j`` misclassifies.
        conditional: the same, counted only over examples target ``j`` classifies correctly when clean
            (``nan`` when it gets none right).
        clean_accuracy: each target's accuracy on the clean examples.
        source_method: how each source's examples were crafted.
        mean_distance: mean perturbation size of each source's examples (threat norm).
        settings: eps, norm, attack, number of examples... (JSON-friendly).
    """

    sources: list[str]
    targets: list[str]
    error: list[list[float]]
    conditional: list[list[float]]
    clean_accuracy: dict[str, float]
    source_method: dict[str, str]
    mean_distance: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (numbers as numbers; ``nan`` for undefined conditional rates)."""
        return asdict(self)

    def rate(self, source: str, target: str) -> float:
        """``error`` entry by names."""
        return self.error[self.sources.index(source)][self.targets.index(target)]


# ---------------------------------------------------------------------- model kinds
def _kind(model: Any) -> str:
    """``"torch"``, ``"sklearn-diff"``, ``"tree"``, ``"forest"``, ``"knn"``, ``"sklearn"`` or ``"oracle"``."""
    if isinstance(model, Oracle):
        return "oracle"
    if isinstance(model, nn.Module):
        return "torch"
    from sklearn.base import BaseEstimator

    if isinstance(model, BaseEstimator):
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.tree import DecisionTreeClassifier

        validation.check_fitted_estimator("model", model)
        if isinstance(model, DecisionTreeClassifier):
            return "tree"
        if isinstance(model, (RandomForestClassifier, ExtraTreesClassifier)):
            return "forest"
        if isinstance(model, KNeighborsClassifier):
            return "knn"
        try:
            from_sklearn(model)
            return "sklearn-diff"
        except TypeError:
            return "sklearn"
    raise TypeError(
        f"model: expected a torch.nn.Module, advlab.Classifier, fitted scikit-learn classifier or advlab.blackbox.Oracle, "
        f"got {type(model).__name__}"
    )


def _differentiable(model: Any, kind: str, input_shape: tuple[int, ...], bounds: tuple[float, float]) -> Classifier:
    if kind == "torch":
        if isinstance(model, Classifier):
            return model
        return Classifier(model, bounds=bounds, input_shape=input_shape)
    return from_sklearn(model, input_shape=input_shape, bounds=bounds)


def predict(model: Any, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted class indices of any supported model kind on ``x`` (an Oracle spends ``N`` queries)."""
    kind = _kind(model)
    if kind == "oracle":
        return model.predict(x.detach().cpu())
    if kind == "torch":
        clf = model if isinstance(model, Classifier) else Classifier(model)
        with clf.attack_mode():
            return models.predict(clf, x, batch_size=batch_size).cpu()
    flat = x.detach().cpu().reshape(x.shape[0], -1).numpy()
    pred = np.asarray(model.predict(flat.astype(np.float32) if kind in ("tree", "forest") else flat))
    return torch.from_numpy(np.searchsorted(model.classes_, pred).astype(np.int64))


def craft(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    attack: str = "fgsm",
    attack_options: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, str]:
    """Adversarial examples for ``x`` crafted on ``model`` with the method its kind allows.

    Returns:
        ``(x_adv, method)``: inputs inside the threat model, and a description of how they were made.

    Raises:
        TypeError: the model is an Oracle or a scikit-learn model without a white-box attack (target only).
    """
    kind = _kind(model)
    if kind in ("torch", "sklearn-diff"):
        clf = _differentiable(model, kind, tuple(x.shape[1:]), threat.box)
        cfg = make_attack(attack, norm=threat.norm, **dict(attack_options or {}))
        res = cfg(clf, x.to(clf.device), y.to(clf.device), threat, generator=seed)
        return torch.as_tensor(res.x_adv).detach().cpu(), attack
    x_min, method = _minimal_adversarial(model, kind, x, y, threat)
    return threat.project(torch.as_tensor(x_min).to(x.dtype), x), method


def _minimal_adversarial(
    model: Any, kind: str, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel
) -> tuple[Any, str]:
    """The minimal adversarial examples of a tree, forest or kNN source (before projection), and the method."""
    if kind == "tree":
        tree = tree_attack(model, x, y, norm=threat.norm, bounds=threat.box)
        return tree.x_adv, "tree leaf search (exact), projected to eps"
    if kind == "forest":
        forest = forest_attack(model, x, y, norm=threat.norm, bounds=threat.box)
        return forest.x_adv, "forest leaf hopping (heuristic), projected to eps"
    if kind == "knn":
        norm = threat.norm if threat.norm != "l0" else "l2"
        return knn_attack(model, x, y, norm=norm, bounds=threat.box).x_adv, "kNN bisection, projected to eps"
    raise TypeError(
        f"source: {type(model).__name__} has no white-box attack in advlab (it can only be a target); "
        "use it as a target or wrap an equivalent differentiable model"
    )


def transfer_matrix(
    sources: Mapping[str, Any],
    x: Any,
    y: Any,
    *,
    targets: Mapping[str, Any] | None = None,
    eps: float = 0.3,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    attack: str = "fgsm",
    attack_options: Mapping[str, Any] | None = None,
    ensemble: str | None = "loo",
    seed: int = 0,
) -> TransferMatrix:
    """Craft on every source, evaluate on every target: Papernot et al.'s cross-technique transferability matrix.

    Args:
        sources: name -> model (torch module, Classifier, fitted scikit-learn classifier).
        x: clean inputs ``(N, ...)`` inside ``bounds``.
        y: their true labels ``(N,)``.
        targets: name -> model (any source kind, or an :class:`~advlab.blackbox.Oracle`); default the sources.
        eps: radius of the threat model every source's examples are confined to.
        norm: its norm.
        bounds: its input box.
        attack: registered white-box attack for differentiable sources (``"fgsm"`` in the paper).
        attack_options: that attack's settings.
        ensemble: add an ensemble of the differentiable sources as a source: ``"loo"`` (per target, the
            ensemble of the other differentiable sources — Liu et al.'s black-box protocol), ``"all"``, or
            ``None``. Needs at least two differentiable sources.
        seed: seed of stochastic attacks.

    Returns:
        TransferMatrix (rows: sources, then the ensemble; columns: targets).

    Raises:
        TypeError: an unsupported model kind, or a target-only model given as a source.
        ValueError: bad eps, norm, inputs or labels.

    References:
        Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning", arXiv:1605.07277;
        Liu, Chen, Liu & Song, arXiv:1611.02770 (ensembles).

    Examples:
        >>> tm = transfer_matrix({"dnn": net, "lr": lr, "dt": tree, "knn": knn}, x_test[:500], y_test[:500])
        >>> tm.rate("dnn", "lr")
    """
    if not sources:
        raise ValueError("sources: expected at least one source model, got none")
    crafting = _Crafting(ThreatModel(norm, eps, bounds), attack, dict(attack_options or {}), seed)
    if ensemble is not None:
        validation.check_choice("ensemble", ensemble, ENSEMBLE_MODES)
    x_t, y_t = _check_data(x, y, crafting.threat)
    targets = dict(sources) if targets is None else dict(targets)
    kinds = _check_kinds(sources, targets)
    examples, method, seconds = crafting.on_sources(sources, list(targets), x_t, y_t)
    diff = {
        n: _differentiable(m, kinds[n], tuple(x_t.shape[1:]), crafting.threat.box)
        for n, m in sources.items()
        if kinds[n] in ("torch", "sklearn-diff")
    }
    if ensemble is not None and len(diff) >= 2:
        t0 = time.perf_counter()
        row = ENSEMBLE_NAME[ensemble]
        examples[row] = crafting.on_ensembles(diff, list(targets), ensemble, x_t, y_t)
        method[row] = f"{attack} on ensemble of {', '.join(diff)}" + (" minus the target" if ensemble == "loo" else "")
        seconds[row] = time.perf_counter() - t0
    elif ensemble is not None:
        log.info("ensemble: skipped (needs at least two differentiable sources, got %d)", len(diff))
    error, conditional, mean_distance, clean_acc = _rates(examples, targets, x_t, y_t, crafting.threat)
    settings = crafting.record(norm=norm, ensemble=ensemble, n=int(x_t.shape[0]))
    rows = list(examples)
    return TransferMatrix(rows, list(targets), error, conditional, clean_acc, method, mean_distance, seconds, settings)


def _check_data(x: Any, y: Any, threat: ThreatModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as a float CPU batch inside the threat model's box, ``y`` as its int64 labels."""
    x_t, y_t = validation.as_xy((x, y), "transfer_matrix")
    assert y_t is not None  # as_xy requires labels by default
    x_t, y_t = x_t.float().cpu(), y_t.cpu()
    validation.check_input(x_t, threat.box)
    validation.check_labels(y_t, x_t.shape[0], None)
    return x_t, y_t


def _check_kinds(sources: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, str]:
    """The kind of every model; a model that can only be a target given as a source raises ``TypeError``."""
    kinds = {name: _kind(m) for name, m in {**sources, **targets}.items()}
    for name, model in sources.items():
        if kinds[name] in ("oracle", "sklearn"):
            raise TypeError(f"sources[{name!r}]: a {type(model).__name__} can only be a target (no white-box attack)")
    return kinds


@dataclass(frozen=True)
class _Crafting:
    """How the rows' adversarial examples are made: the threat model, and the white-box attack with its settings."""

    threat: ThreatModel
    attack: str
    attack_options: dict[str, Any]
    seed: int

    def on_sources(
        self, sources: Mapping[str, Any], targets: list[str], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str], dict[str, float]]:
        """Each source's examples (the same for every target), how they were made, and the time it took."""
        examples: dict[str, dict[str, torch.Tensor]] = {}
        method: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for name, model in sources.items():
            t0 = time.perf_counter()
            x_adv, method[name] = craft(
                model, x, y, self.threat, attack=self.attack, attack_options=self.attack_options, seed=self.seed
            )
            examples[name] = dict.fromkeys(targets, x_adv)
            seconds[name] = time.perf_counter() - t0
            log.info("crafted on %s (%s) in %.1fs", name, method[name], seconds[name])
        return examples, method, seconds

    def on_ensembles(
        self, diff: Mapping[str, Classifier], targets: list[str], mode: str, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per target, examples crafted on the ensemble of the differentiable sources (without the target in
        ``"loo"`` mode); each distinct ensemble is attacked once."""
        cfg = make_attack(self.attack, norm=self.threat.norm, **self.attack_options)
        cache: dict[tuple[str, ...], torch.Tensor] = {}
        per_target = {}
        for target in targets:
            members = tuple(n for n in diff if not (mode == "loo" and n == target))
            if members not in cache:
                clf = ensemble_classifier(
                    [diff[n] for n in members], bounds=self.threat.box, input_shape=tuple(x.shape[1:])
                )
                cache[members] = torch.as_tensor(cfg(clf, x, y, self.threat, generator=self.seed).x_adv).detach().cpu()
            per_target[target] = cache[members]
        return per_target

    def record(self, *, norm: str, ensemble: str | None, n: int) -> dict[str, Any]:
        """The settings of the matrix, JSON-friendly."""
        return {
            "eps": self.threat.eps,
            "norm": norm,
            "bounds": list(self.threat.box),
            "attack": self.attack,
            "attack_options": self.attack_options,
            "ensemble": ensemble,
            "n": n,
            "seed": self.seed,
        }


def _rates(
    examples: Mapping[str, Mapping[str, torch.Tensor]],
    targets: Mapping[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
) -> tuple[list[list[float]], list[list[float]], dict[str, float], dict[str, float]]:
    """Every target on every row's examples: error and conditional error rates, mean distances, clean accuracy."""
    clean_pred = {t: predict(m, x) for t, m in targets.items()}
    clean_acc = {t: float((p == y).float().mean()) for t, p in clean_pred.items()}
    error, conditional = [], []
    mean_distance: dict[str, float] = {}
    for source, per_target in examples.items():
        err_row, cond_row, dists = [], [], []
        for t, m in targets.items():
            x_adv = per_target[t]
            dists.append(float(threat.distance(x_adv, x).mean()))
            wrong = predict(m, x_adv) != y
            err_row.append(float(wrong.float().mean()))
            ok = clean_pred[t] == y
            cond_row.append(float(wrong[ok].float().mean()) if bool(ok.any()) else float("nan"))
        mean_distance[source] = float(np.mean(dists))
        error.append(err_row)
        conditional.append(cond_row)
    return error, conditional, mean_distance, clean_acc
