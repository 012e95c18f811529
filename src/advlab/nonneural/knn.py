"""Minimal-distance evasion of k-nearest-neighbour classifiers by bisection toward other-class training points.

A kNN classifier has no gradient, but its decision changes as an input approaches training points of another
class. For each input, :func:`knn_attack` builds candidate destinations — the ``n_points`` nearest training
points whose label differs from the true label, and, for each of their classes, the centroid of that class's
``k`` training points nearest to the input (deep inside the class, so kNN surely predicts it) — and bisects,
for each destination ``d``, over the radius ``r`` of the norm ball around ``x``: the path point is the point of
the ball nearest to ``d`` (the segment ``x -> d`` for L2; for L∞ every coordinate moves toward ``d`` at once
and stops when it arrives; the L1 ball projection for L1), and the smallest ``r`` whose path point leaves the
true class is kept.
All paths of all inputs are searched together (one ``predict`` call per bisection step). The nearest
flipping point found is returned: an upper bound on the minimal adversarial distance (exact for 1-NN with two
training points on the line through ``x``, not in general: the decision boundary of kNN is piecewise linear and
the search only walks these projection paths).

Cf. Papernot, McDaniel & Goodfellow 2016 (arXiv:1605.07277), who attack kNN only through transfer from a
differentiable substitute; :func:`advlab.blackbox.transfer_matrix` compares both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.nonneural.arrays import check_flat_inputs, distance, label_array, restore, to_flat
from advlab.threat import ThreatModel, norm_of

KNN_NORMS = ("linf", "l2", "l1")
BISECTION_STEPS = 20
"""Bisection steps per path (relative precision 2**-20 of the distance to the destination)."""


@dataclass
class KNNAttackResult:
    """Adversarial inputs found against a kNN classifier.

    Attributes:
        x_adv: adversarial inputs in the container and shape of ``x`` (the clean input where none was found).
        distance: ``(N,)`` distance ``|x_adv - x|`` in ``norm`` (``inf`` where no candidate flipped the prediction).
        success: ``(N,)`` the kNN misclassifies ``x_adv``.
        destination: ``(N, D)`` the candidate point whose segment gave ``x_adv``.
        norm: the norm reported.
    """

    x_adv: Any
    distance: np.ndarray
    success: np.ndarray
    destination: np.ndarray
    norm: str


def _training_data(knn: Any, x_train: Any, y_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """Training inputs (flat, float64) and class indices, given or read from the fitted estimator."""
    if x_train is None:
        fit_x = getattr(knn, "_fit_X", None)
        fit_y = getattr(knn, "_y", None)
        if fit_x is None or fit_y is None or getattr(fit_y, "ndim", 1) != 1:
            raise ValueError(
                "x_train: this estimator does not expose its training data; pass x_train and y_train explicitly"
            )
        return np.asarray(fit_x, dtype=np.float64), np.asarray(fit_y, dtype=np.int64)
    xt, _ = to_flat(x_train)
    yt = label_array("y_train", y_train, xt.shape[0], len(knn.classes_))
    return xt, yt


def knn_attack(
    knn: Any,
    x: Any,
    y: Any,
    *,
    norm: str = "l2",
    bounds: tuple[float, float] = (0.0, 1.0),
    n_points: int = 5,
    x_train: Any = None,
    y_train: Any = None,
) -> KNNAttackResult:
    """Smallest flip found by bisecting segments from each input toward other-class training points.

    Args:
        knn: a fitted ``sklearn.neighbors.KNeighborsClassifier``.
        x: inputs ``(N, ...)`` inside ``bounds`` (torch or numpy); flattened to the kNN's features.
        y: true class indices ``(N,)`` (indices into ``knn.classes_``).
        norm: the norm distances are measured (and the nearest candidate chosen) in: ``"l2"``, ``"linf"``, ``"l1"``.
        bounds: valid input range (segments between points of the box stay in the box).
        n_points: number of nearest other-class training points per input (each also contributes the
            centroid of the ``k`` nearest training points of its class).
        x_train: the training inputs; default read from the fitted estimator (``_fit_X``).
        y_train: the training labels; default read from the fitted estimator (``_y``).

    Returns:
        KNNAttackResult; ``distance`` is 0 where ``x`` is already misclassified.

    Raises:
        TypeError: not a kNN classifier. ValueError: not fitted, wrong feature count, bad labels or settings.

    References:
        Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning", arXiv:1605.07277.

    Examples:
        >>> knn = KNeighborsClassifier(n_neighbors=3).fit(xf_train, y_train)
        >>> res = knn_attack(knn, x_test, y_test, norm="l2")
        >>> np.median(res.distance)
    """
    from sklearn.neighbors import KNeighborsClassifier

    validation.check_fitted_estimator("knn", knn)
    if not isinstance(knn, KNeighborsClassifier):
        raise TypeError(f"knn: expected a fitted KNeighborsClassifier, got {type(knn).__name__}")
    validation.check_choice("norm", norm, KNN_NORMS)
    n_points = validation.check_int("n_points", n_points, minimum=1)
    flat, shape = to_flat(x)
    check_flat_inputs(norm, bounds, flat, int(knn.n_features_in_))
    y_np = label_array("y", y, flat.shape[0], len(knn.classes_))
    xt, yt = _training_data(knn, x_train, y_train)

    def predict(points: np.ndarray) -> np.ndarray:
        return np.searchsorted(knn.classes_, knn.predict(points))

    n = flat.shape[0]
    dest = _destinations(flat, y_np, xt, yt, n_points, int(knn.n_neighbors), bounds)
    width = dest.shape[1]
    a = np.repeat(flat[:, None, :], width, axis=1).reshape(-1, flat.shape[1])
    yy = np.repeat(y_np[:, None], width, axis=1).reshape(-1)
    pts, fooled = _bisect(predict, a, dest.reshape(-1, flat.shape[1]), yy, norm, bounds)
    dist = np.where(fooled, distance(pts - a, norm), np.inf).reshape(n, width)
    best = dist.argmin(1)
    rows = np.arange(n)
    pts = pts.reshape(n, width, -1)
    clean_wrong = predict(flat) != y_np
    success = np.isfinite(dist[rows, best]) | clean_wrong
    x_adv = np.where(clean_wrong[:, None], flat, np.where(success[:, None], pts[rows, best], flat))
    distance_found = np.where(clean_wrong, 0.0, dist[rows, best])
    return KNNAttackResult(restore(x_adv, shape, x), distance_found, success, dest[rows, best], norm)


def _destinations(
    flat: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    n_points: int,
    k: int,
    bounds: tuple[float, float],
) -> np.ndarray:
    """``(N, width, D)`` candidate destinations: the nearest other-class training points and their classes' centroids.

    Each input gets its ``n_points`` nearest training points of another class and, for each of their classes,
    the centroid of that class's ``k`` training points nearest to the input; inputs with fewer candidates are
    padded with their first one. Clipped to ``bounds``.
    """
    n = flat.shape[0]
    sq = (flat * flat).sum(1)[:, None] + (xt * xt).sum(1)[None] - 2 * flat @ xt.T  # (N, M) squared L2
    blocks = []
    for i in range(n):
        other = np.flatnonzero(yt != y[i])
        near = other[np.argsort(sq[i, other])[:n_points]]
        rows_i = [xt[j] for j in near]
        for c in np.unique(yt[near]):
            same = np.flatnonzero(yt == c)
            rows_i.append(xt[same[np.argsort(sq[i, same])[:k]]].mean(0))
        blocks.append(np.stack(rows_i))
    width = max(len(blk) for blk in blocks)
    dest = np.empty((n, width, flat.shape[1]))
    for i, blk in enumerate(blocks):  # pad with the first destination so all inputs have ``width`` candidates
        dest[i, : len(blk)] = blk
        dest[i, len(blk) :] = blk[0]
    return np.clip(dest, bounds[0], bounds[1])


def _bisect(
    predict: Callable[[np.ndarray], np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    norm: str,
    bounds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Bisect every path ``a[j] -> b[j]`` at once for the smallest radius whose point leaves class ``y[j]``.

    The path toward a destination is the point of the norm ball of radius ``r`` around ``a`` nearest to it
    (a straight segment for l2; for linf every coordinate moves at once, and stops when it arrives).

    Returns:
        The points found (clipped to ``bounds`` and rounded to float32) and whether each flips the prediction.
    """
    flips_at_end = predict(b) != y
    geometry = ThreatModel(norm, 1.0)  # only its ball projection is used (per-example radius)
    delta = torch.from_numpy(b - a)
    full = norm_of(delta, norm)

    def along(frac: np.ndarray) -> np.ndarray:
        radius = full * torch.from_numpy(frac)
        return a + geometry.project_delta(delta, radius).numpy()

    lo, hi = np.zeros(len(y)), np.ones(len(y))
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        ok = predict(along(mid)) != y
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    pts = np.clip(along(hi), bounds[0], bounds[1]).astype(np.float32).astype(np.float64)
    return pts, flips_at_end & (predict(pts) != y)
