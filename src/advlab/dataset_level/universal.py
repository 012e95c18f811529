"""Universal adversarial perturbations (Moosavi-Dezfooli et al. 2017): one image-agnostic perturbation for a whole data set.

:func:`universal_perturbation` runs the paper's Algorithm 1 (DeepFool steps on the examples the current
perturbation does not fool yet, each followed by a projection onto the eps-ball) and :func:`fooling_rate`
measures how often a perturbation changes a model's prediction, on held-out data or on another model.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks.base import make_generator
from advlab.attacks.deepfool import deepfool
from advlab.models import Classifier, as_classifier, predict
from advlab.settings import renamed
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

DEFAULT_TARGET_FOOLING_RATE = 0.8
"""The paper's ``1 - delta`` with ``delta = 0.2``: stop once 80% of the training points are fooled."""
DEFAULT_MAX_PASSES = 10
"""Upper bound on passes over the data (the paper stops on the fooling rate; 10 passes is the reference code's cap)."""
RENAMED = {"deepfool_max_iter": "deepfool_steps", "num_classes": "candidates"}
"""Old setting names of :func:`universal_perturbation` (DeepFool calls them ``steps`` and ``candidates``); they
still work in this release, with a ``FutureWarning``."""


@dataclass
class UniversalPerturbation:
    """A universal perturbation and how it was found.

    Attributes:
        perturbation: ``v``, shape of one input ``(C, H, W)``; inside the eps-ball of ``threat``.
        threat: the norm ball it was projected onto.
        fooling_rate: fraction of the training points whose prediction ``v`` changes (for the ``v`` returned).
        history: the training fooling rate after each pass.
        passes: passes over the data.
        deepfool_calls: examples on which DeepFool was run (not yet fooled when visited).
        seconds: wall time.
    """

    perturbation: torch.Tensor
    threat: ThreatModel
    fooling_rate: float
    history: list[float] = field(default_factory=list)
    passes: int = 0
    deepfool_calls: int = 0
    seconds: float = 0.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``clip(x + v)`` into the box."""
        return self.threat.clip_box(x + self.perturbation.to(x.device, x.dtype))

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.threat.norm,
            "eps": self.threat.eps,
            "fooling_rate_train": self.fooling_rate,
            "history": self.history,
            "passes": self.passes,
            "deepfool_calls": self.deepfool_calls,
            "seconds": self.seconds,
            "perturbation_norm": float(
                self.threat.distance(self.perturbation[None], torch.zeros_like(self.perturbation[None]))[0]
            ),
        }


def fooling_rate(
    model: nn.Module,
    x: Any,
    perturbation: torch.Tensor,
    *,
    bounds: tuple[float, float] | None = None,
    batch_size: int = 500,
) -> float:
    """Fraction of ``x`` whose predicted label changes when ``perturbation`` is added (and clipped to the box).

    This is the paper's fooling rate: it compares predictions, not true labels, so it needs no labels and
    applies to any model (e.g. to measure how a perturbation computed on one network transfers to another).

    Args:
        model: the classifier.
        x: inputs ``(N, ...)`` inside the model's bounds.
        perturbation: ``v``, the shape of one input (or broadcastable to ``x``).
        bounds: the box; default the model's.
        batch_size: examples per forward pass.

    Returns:
        The fooling rate in [0, 1].

    Examples:
        >>> fooling_rate(other_model, x_test, uap.perturbation)
    """
    clf = as_classifier(model)
    box = (bounds[0], bounds[1]) if bounds is not None else clf.bounds
    x_t = torch.as_tensor(x)
    validation.check_input(x_t, box)
    validation.check_tensor_like("perturbation", perturbation)
    v = torch.as_tensor(perturbation).to(clf.device, x_t.dtype)
    x_t = x_t.to(clf.device)
    try:
        x_pert = (x_t + v).clamp(box[0], box[1])
    except RuntimeError as exc:
        raise ValueError(
            f"perturbation: shape {tuple(v.shape)} does not broadcast against x {tuple(x_t.shape)}"
        ) from exc
    with clf.attack_mode(warn_train_mode=False):
        changed = predict(clf, x_t, batch_size=batch_size) != predict(clf, x_pert, batch_size=batch_size)
    return float(changed.float().mean())


@dataclass(frozen=True)
class UniversalSettings:
    """The checked settings of :func:`universal_perturbation` (see there); built with :meth:`check`."""

    target_fooling_rate: float
    max_passes: int
    overshoot: float
    deepfool_steps: int
    candidates: int
    batch_size: int
    keep_best: bool
    progress: bool

    @classmethod
    def check(
        cls,
        *,
        target_fooling_rate: float,
        max_passes: int,
        overshoot: float,
        deepfool_steps: int,
        candidates: int,
        batch_size: int,
        keep_best: bool,
        progress: bool,
    ) -> UniversalSettings:
        """Validate the settings (errors name the argument); DeepFool checks ``overshoot`` and ``candidates``."""
        return cls(
            validation.check_float(
                "target_fooling_rate", target_fooling_rate, minimum=0.0, maximum=1.0, strict_min=True
            ),
            validation.check_int("max_passes", max_passes, minimum=1),
            overshoot,
            validation.check_int("deepfool_steps", deepfool_steps, minimum=1),
            candidates,
            validation.check_int("batch_size", batch_size, minimum=1),
            keep_best,
            progress,
        )


class _UniversalSearch:
    """The steps of Algorithm 1: passes over the points in random order, DeepFool on each point not yet fooled."""

    def __init__(
        self,
        clf: Classifier,
        x: torch.Tensor,
        threat: ThreatModel,
        settings: UniversalSettings,
        generator: torch.Generator,
    ) -> None:
        self.clf, self.x, self.threat, self.s, self.gen = clf, x, threat, settings, generator
        self.v = torch.zeros_like(x[0])
        # DeepFool (l2, minimum-norm): give it a radius no perturbation in the box can exceed
        lo, hi = threat.box
        width = hi - lo if threat.bounded else 2 * float(x.abs().max()) + 1.0  # unbounded: wider than the data
        self.df_threat = ThreatModel("l2", width * x[0].numel(), threat.box)
        self.candidates = min(settings.candidates, clf.num_classes or settings.candidates)
        self.calls = 0

    def run(self) -> UniversalPerturbation:
        t0 = time.perf_counter()
        n = self.x.shape[0]
        history: list[float] = []
        best_rate, best_v = -1.0, self.v
        passes = 0
        rate = 0.0
        with self.clf.attack_mode(warn_train_mode=False):
            self.clean_pred = predict(self.clf, self.x, batch_size=self.s.batch_size)
            for passes in range(1, self.s.max_passes + 1):
                self.one_pass(passes)
                rate = self.training_fooling_rate()
                history.append(rate)
                if rate > best_rate:
                    best_rate, best_v = rate, self.v.clone()
                log.info(
                    "UAP pass %d: fooling rate %.3f on %d points (%d DeepFool calls so far)",
                    passes,
                    rate,
                    n,
                    self.calls,
                )
                if rate >= self.s.target_fooling_rate:
                    break
        v = self.v
        if self.s.keep_best and best_rate > rate:
            v, rate = best_v, best_rate
        return UniversalPerturbation(
            perturbation=v.detach(),
            threat=self.threat,
            fooling_rate=rate,
            history=history,
            passes=passes,
            deepfool_calls=self.calls,
            seconds=time.perf_counter() - t0,
        )

    def one_pass(self, number: int) -> None:
        """Visit every point once, in an order drawn from the generator."""
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.gen).tolist()
        bar = None
        if self.s.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"UAP pass {number}", disable=not sys.stderr.isatty(), leave=False)
        for i in order:
            self.visit(i)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    def visit(self, i: int) -> None:
        """If ``v`` does not fool point ``i`` yet, add DeepFool's step at ``clip(x_i + v)`` and project."""
        xi = self.threat.clip_box(self.x[i : i + 1] + self.v)
        with torch.no_grad():
            fooled = bool(self.clf(xi).argmax(1)[0] != self.clean_pred[i])
        if fooled:
            return
        self.calls += 1
        res = deepfool(
            self.clf,
            xi,
            self.clean_pred[i : i + 1],
            self.df_threat,
            overshoot=self.s.overshoot,
            steps=self.s.deepfool_steps,
            candidates=self.candidates,
        )
        if bool(torch.as_tensor(res.success)[0]):
            dv = torch.as_tensor(res.x_adv)[0] - xi[0]
            self.v = self.threat.project_delta((self.v + dv)[None])[0]

    def training_fooling_rate(self) -> float:
        """The fraction of the points whose prediction ``v`` changes."""
        perturbed = predict(self.clf, self.threat.clip_box(self.x + self.v), batch_size=self.s.batch_size)
        return float((perturbed != self.clean_pred).float().mean())


@renamed(RENAMED)
def universal_perturbation(
    model: nn.Module,
    x: Any,
    threat: ThreatModel,
    *,
    target_fooling_rate: float = DEFAULT_TARGET_FOOLING_RATE,
    max_passes: int = DEFAULT_MAX_PASSES,
    overshoot: float = 0.02,
    deepfool_steps: int = 50,
    candidates: int = 10,
    generator: torch.Generator | int | None = None,
    batch_size: int = 500,
    keep_best: bool = True,
    progress: bool = False,
) -> UniversalPerturbation:
    """Algorithm 1 of Moosavi-Dezfooli et al. 2017: a single perturbation ``v`` that fools most of ``x``.

    ``v = 0``; then, pass after pass over the data in a random order (from ``generator``), for each ``x_i``
    whose prediction ``v`` does not change yet, DeepFool computes the minimal extra perturbation
    ``dv_i = argmin |r|_2`` that sends ``clip(x_i + v)`` across the nearest decision boundary (l2 DeepFool
    whatever the norm of ``v``, as in the paper's Algorithm 1 and the authors' code), and ``v`` becomes the
    projection of ``v + dv_i`` onto the eps-ball of ``threat`` (l2 or linf). As in the authors' code, ``v``
    is only updated when DeepFool succeeded on that point. The loop stops when the fooling rate on ``x``
    (the fraction of points whose prediction changes) reaches ``target_fooling_rate`` or after
    ``max_passes`` passes. The box is enforced on the perturbed images ``clip(x + v)`` (the paper has no box).

    The training fooling rate is not monotone across passes (a projection can undo earlier progress, notably
    for linf); with ``keep_best`` (default) the perturbation returned is the one with the highest fooling rate
    on ``x`` at the end of a pass, otherwise the last one (the paper's algorithm returns the last one, which
    is the same whenever the target is reached). Only ``x`` is used for that choice, never held-out data.

    Args:
        model: the classifier (``advlab.Classifier`` or a module returning logits).
        x: the points ``X`` to compute ``v`` on, shape ``(N, ...)``, inside the bounds. No labels needed.
        threat: ``ThreatModel("linf" | "l2", eps)``: the norm and radius of ``v``.
        target_fooling_rate: the paper's ``1 - delta`` (default 0.8).
        max_passes: maximum passes over ``x``.
        overshoot: DeepFool's overshoot.
        deepfool_steps: DeepFool's iteration cap per point (formerly ``deepfool_max_iter``).
        candidates: DeepFool's candidate classes (formerly ``num_classes``).
        generator: ``torch.Generator`` or seed for the visiting order (default seed 0).
        batch_size: batch size of the fooling-rate evaluations.
        keep_best: return the end-of-pass perturbation with the highest fooling rate on ``x``.
        progress: show a tqdm bar per pass (only on a terminal).

    Returns:
        A :class:`UniversalPerturbation`.

    Raises:
        ValueError: an l1/l0 threat, eps < 0, a fooling-rate target outside (0, 1], bad input.

    References:
        Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", arXiv:1610.08401.

    Examples:
        >>> uap = universal_perturbation(clf, x_train[:2000], ThreatModel("linf", 0.3))
        >>> fooling_rate(clf, x_test, uap.perturbation), fooling_rate(other_clf, x_test, uap.perturbation)
    """
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat: expected advlab.ThreatModel, got {type(threat).__name__}")
    validation.check_choice("threat.norm", threat.norm, ("linf", "l2"), "The paper projects onto l2 or linf balls.")
    settings = UniversalSettings.check(
        target_fooling_rate=target_fooling_rate,
        max_passes=max_passes,
        overshoot=overshoot,
        deepfool_steps=deepfool_steps,
        candidates=candidates,
        batch_size=batch_size,
        keep_best=keep_best,
        progress=progress,
    )
    gen = make_generator(generator)
    clf: Classifier = as_classifier(model, threat.bounds)
    threat = threat.resolve(clf.bounds)
    x_t = torch.as_tensor(x)
    validation.check_input(x_t, threat.box)
    validation.check_input_shape(x_t, clf.input_shape)
    return _UniversalSearch(clf, x_t.to(clf.device), threat, settings, gen).run()
