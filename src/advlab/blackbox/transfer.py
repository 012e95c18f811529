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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.attacks.registry import make_attack
from advlab.models import Classifier
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
    from advlab.oracles import Oracle

    if isinstance(model, Oracle):
        return "oracle"
    if isinstance(model, nn.Module):
        return "torch"
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover
        BaseEstimator = ()  # type: ignore[assignment,misc]
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
            from advlab.nonneural import from_sklearn

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
    from advlab.nonneural import from_sklearn

    return from_sklearn(model, input_shape=input_shape, bounds=bounds)


def predict(model: Any, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted class indices of any supported model kind on ``x`` (an Oracle spends ``N`` queries)."""
    kind = _kind(model)
    if kind == "oracle":
        return model.predict(x.detach().cpu())
    if kind == "torch":
        clf = model if isinstance(model, Classifier) else Classifier(model)
        with clf.attack_mode(), torch.no_grad():
            return torch.cat(
                [clf(x[i : i + batch_size].to(clf.device)).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)]
            )
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
    from advlab.nonneural import forest_attack, knn_attack, tree_attack

    kind = _kind(model)
    shape = tuple(x.shape[1:])
    if kind in ("torch", "sklearn-diff"):
        clf = _differentiable(model, kind, shape, threat.bounds)
        cfg = make_attack(attack, norm=threat.norm, **dict(attack_options or {}))
        res = cfg(clf, x.to(clf.device), y.to(clf.device), threat, generator=seed)
        return res.x_adv.detach().cpu(), attack
    if kind == "tree":
        res = tree_attack(model, x, y, norm=threat.norm, bounds=threat.bounds)
        method = "tree leaf search (exact), projected to eps"
    elif kind == "forest":
        res = forest_attack(model, x, y, norm=threat.norm, bounds=threat.bounds)
        method = "forest leaf hopping (heuristic), projected to eps"
    elif kind == "knn":
        res = knn_attack(model, x, y, norm=threat.norm if threat.norm != "l0" else "l2", bounds=threat.bounds)
        method = "kNN bisection, projected to eps"
    else:
        raise TypeError(
            f"source: {type(model).__name__} has no white-box attack in advlab (it can only be a target); "
            "use it as a target or wrap an equivalent differentiable model"
        )
    x_min = torch.as_tensor(res.x_adv).to(x.dtype)
    return threat.project(x_min, x), method


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
        x, y: clean inputs ``(N, ...)`` inside ``bounds`` and their true labels ``(N,)``.
        targets: name -> model (any source kind, or an :class:`~advlab.blackbox.Oracle`); default the sources.
        eps, norm, bounds: the threat model every source's examples are confined to.
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

    Example:
        >>> tm = transfer_matrix({"dnn": net, "lr": lr, "dt": tree, "knn": knn}, x_test[:500], y_test[:500])
        >>> tm.rate("dnn", "lr")
    """
    from advlab.blackbox.ensemble import ensemble_classifier

    if not sources:
        raise ValueError("sources: expected at least one source model, got none")
    threat = ThreatModel(norm, eps, bounds)
    if ensemble is not None:
        validation.check_choice("ensemble", ensemble, ENSEMBLE_MODES)
    validation.check_tensor_like("x", x)
    validation.check_tensor_like("y", y)
    x_t = torch.as_tensor(x).float().cpu()
    y_t = torch.as_tensor(y).long().cpu()
    validation.check_input(x_t, threat.bounds)
    validation.check_labels(y_t, x_t.shape[0], None)
    targets = dict(sources) if targets is None else dict(targets)
    kinds = {name: _kind(m) for name, m in {**sources, **targets}.items()}
    for name, model in sources.items():
        if kinds[name] in ("oracle", "sklearn"):
            raise TypeError(f"sources[{name!r}]: a {type(model).__name__} can only be a target (no white-box attack)")

    crafted: dict[str, torch.Tensor] = {}
    method: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, model in sources.items():
        t0 = time.perf_counter()
        crafted[name], method[name] = craft(
            model, x_t, y_t, threat, attack=attack, attack_options=attack_options, seed=seed
        )
        seconds[name] = time.perf_counter() - t0
        log.info("crafted on %s (%s) in %.1fs", name, method[name], seconds[name])

    shape = tuple(x_t.shape[1:])
    diff = {
        n: _differentiable(m, kinds[n], shape, threat.bounds)
        for n, m in sources.items()
        if kinds[n] in ("torch", "sklearn-diff")
    }
    ens_rows: dict[str, dict[str, torch.Tensor]] = {}
    if ensemble is not None and len(diff) >= 2:
        cfg = make_attack(attack, norm=threat.norm, **dict(attack_options or {}))
        cache: dict[tuple[str, ...], torch.Tensor] = {}

        def on(members: tuple[str, ...]) -> torch.Tensor:
            if members not in cache:
                clf = ensemble_classifier([diff[n] for n in members], bounds=threat.bounds, input_shape=shape)
                cache[members] = cfg(clf, x_t, y_t, threat, generator=seed).x_adv.detach().cpu()
            return cache[members]

        t0 = time.perf_counter()
        row_name = ENSEMBLE_NAME[ensemble]
        ens_rows[row_name] = {}
        for tname in targets:
            members = tuple(n for n in diff if not (ensemble == "loo" and n == tname))
            ens_rows[row_name][tname] = on(members)
        method[row_name] = f"{attack} on ensemble of {', '.join(diff)}" + (
            " minus the target" if ensemble == "loo" else ""
        )
        seconds[row_name] = time.perf_counter() - t0
    elif ensemble is not None:
        log.info("ensemble: skipped (needs at least two differentiable sources, got %d)", len(diff))

    clean_pred = {t: predict(m, x_t) for t, m in targets.items()}
    clean_acc = {t: float((p == y_t).float().mean()) for t, p in clean_pred.items()}
    rows = list(sources) + list(ens_rows)
    error, conditional = [], []
    mean_distance: dict[str, float] = {}
    for s in rows:
        err_row, cond_row = [], []
        dists = []
        for t, m in targets.items():
            x_adv = crafted[s] if s in crafted else ens_rows[s][t]
            dists.append(float(threat.distance(x_adv, x_t).mean()))
            wrong = predict(m, x_adv) != y_t
            err_row.append(float(wrong.float().mean()))
            ok = clean_pred[t] == y_t
            cond_row.append(float(wrong[ok].float().mean()) if bool(ok.any()) else float("nan"))
        mean_distance[s] = float(np.mean(dists))
        error.append(err_row)
        conditional.append(cond_row)
    settings = {
        "eps": threat.eps,
        "norm": norm,
        "bounds": list(threat.bounds),
        "attack": attack,
        "attack_options": dict(attack_options or {}),
        "ensemble": ensemble,
        "n": int(x_t.shape[0]),
        "seed": seed,
    }
    return TransferMatrix(rows, list(targets), error, conditional, clean_acc, method, mean_distance, seconds, settings)


def plot_transfer_matrix(tm: TransferMatrix, path: str | Path | None = None, *, title: str | None = None) -> bytes:
    """Heat map of ``tm.error`` (rows: sources, columns: targets) with the rates written in each cell.

    Returns the PNG bytes; writes them atomically to ``path`` when given.
    """
    from advlab.reports.figures import plt, save_png

    data = np.asarray(tm.error, dtype=float) * 100
    fig, ax = plt.subplots(figsize=(1.1 * len(tm.targets) + 2.5, 0.6 * len(tm.sources) + 1.8))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(tm.targets)), tm.targets, rotation=30, ha="right")
    ax.set_yticks(range(len(tm.sources)), tm.sources)
    ax.set_xlabel("target (evaluated on)")
    ax.set_ylabel("source (crafted on)")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(
                j,
                i,
                f"{data[i, j]:.0f}",
                ha="center",
                va="center",
                color="white" if data[i, j] < 60 else "black",
                fontsize=9,
            )
    fig.colorbar(im, ax=ax, label="target error on adversarial examples (%)")
    s = tm.settings
    ax.set_title(title or f"transferability, {s.get('attack')} {s.get('norm')} eps={s.get('eps'):g}, n={s.get('n')}")
    return save_png(fig, path)
