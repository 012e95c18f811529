"""Minimal adversarial perturbations for decision trees (exact, leaf-path search) and forests (greedy heuristic).

A fitted tree partitions the input space into boxes, one per leaf: the path from the root gives, for every
feature, an interval ``low < x_f <= high`` (scikit-learn sends ``x_f <= threshold`` left, and compares in
float32). The closest point of a box to ``x`` is the coordinate-wise clip of ``x`` into the box, and it
minimises every Lp distance at once. So the exact minimal perturbation that makes a single tree output another
class is: clip ``x`` into every leaf box (intersected with the input bounds) whose class differs from the true
(or equals the target) class, and keep the nearest — the leaf-search attack of Papernot, McDaniel & Goodfellow
2016 (arXiv:1605.07277) made exact in the spirit of Kantchelian, Tygar & Joseph 2016 (arXiv:1509.07892, whose
exact method for ensembles is a mixed-integer program).

For forests (``RandomForestClassifier``, ``ExtraTreesClassifier``) exact search is NP-hard; :func:`forest_attack`
is a greedy *heuristic* that returns an upper bound on the minimal distance: starting from ``x``, it
repeatedly moves into the nearest other-class leaf of the tree whose move lowers the forest's probability of
the true class the most (Kantchelian et al.'s coordinate-descent heuristic works at the level of single
features; this works at the level of leaves), then shortens the found perturbation by a line search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from advlab import validation
from advlab.nonneural.arrays import NORMS, check_flat_inputs, distance, label_array, restore, to_flat
from advlab.settings import renamed

log = logging.getLogger(__name__)

TREE_NORMS = NORMS
_CHUNK_ELEMENTS = 20_000_000  # examples x leaves x features per vectorised block
LINE_SEARCH_STEPS = 20
"""Bisection steps of the final line search of :func:`forest_attack` (relative precision 2**-20)."""
RENAMED = {"max_iter": "steps"}
"""Old setting names of :func:`forest_attack`; they still work in this release, with a ``FutureWarning``."""


@dataclass
class LeafBoxes:
    """Every leaf of a fitted tree as a closed box of float32-representable values.

    Attributes:
        low, high: ``(L, D)`` float64 arrays; leaf ``l`` holds the points with ``low[l] <= x <= high[l]``
            (coordinates compared as float32, as scikit-learn does). ``-inf``/``inf`` where unconstrained.
        label: ``(L,)`` class index predicted at each leaf.
        node: ``(L,)`` node id of each leaf in ``tree_``.
    """

    low: np.ndarray
    high: np.ndarray
    label: np.ndarray
    node: np.ndarray


@dataclass
class TreeAttackResult:
    """Minimal perturbations found for a tree or forest.

    Attributes:
        x_adv: adversarial inputs in the container and shape of ``x`` (the clean input where none was found).
        distance: ``(N,)`` distance ``|x_adv - x|`` in ``norm`` (``inf`` where no other-class leaf is reachable).
        success: ``(N,)`` the model misclassifies ``x_adv`` (untargeted) or predicts the target (targeted).
        norm: the norm minimised.
        exact: True for the single-tree search (distances are the exact minima), False for the forest heuristic.
    """

    x_adv: Any
    distance: np.ndarray
    success: np.ndarray
    norm: str
    exact: bool


def _f32_above(t: np.ndarray) -> np.ndarray:
    """Smallest float32 strictly greater than ``t`` (float64 thresholds)."""
    v = t.astype(np.float32)
    v = np.where(v.astype(np.float64) <= t, np.nextafter(v, np.float32(np.inf)), v)
    return v.astype(np.float64)


def _f32_at_most(t: np.ndarray) -> np.ndarray:
    """Largest float32 not greater than ``t``."""
    v = t.astype(np.float32)
    v = np.where(v.astype(np.float64) > t, np.nextafter(v, np.float32(-np.inf)), v)
    return v.astype(np.float64)


def leaf_boxes(tree: Any) -> LeafBoxes:
    """Enumerate the leaves of a fitted ``DecisionTreeClassifier`` as boxes (see :class:`LeafBoxes`)."""
    t = tree.tree_
    d = int(tree.n_features_in_)
    lows, highs, labels, nodes = [], [], [], []
    stack = [(0, np.full(d, -np.inf), np.full(d, np.inf))]
    while stack:
        node, low, high = stack.pop()
        left, right = t.children_left[node], t.children_right[node]
        if left == -1:
            lows.append(low)
            highs.append(high)
            labels.append(int(np.argmax(t.value[node][0])))
            nodes.append(node)
            continue
        f, thr = t.feature[node], np.array([t.threshold[node]])
        hl = high.copy()
        hl[f] = min(hl[f], _f32_at_most(thr)[0])
        lr = low.copy()
        lr[f] = max(lr[f], _f32_above(thr)[0])
        stack.append((right, lr, high))
        stack.append((left, low, hl))
    return LeafBoxes(np.stack(lows), np.stack(highs), np.asarray(labels), np.asarray(nodes))


def nearest_leaf(
    boxes: LeafBoxes, flat: np.ndarray, allowed: np.ndarray, norm: str, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``flat``, the nearest point of any allowed leaf box (clipped to ``bounds``).

    Args:
        boxes: the tree's leaves.
        flat: ``(N, D)`` points (float64).
        allowed: ``(N, L)`` bool, which leaves each point may move into.
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``.
        bounds: input box.

    Returns:
        ``(x_adv, distance)``: ``(N, D)`` nearest points (the input where no leaf is allowed or feasible) and
        ``(N,)`` distances (``inf`` where none).
    """
    lo = np.maximum(boxes.low, bounds[0])
    hi = np.minimum(boxes.high, bounds[1])
    feasible = (lo <= hi).all(1)
    n, d = flat.shape
    n_leaves = lo.shape[0]
    x_adv = flat.copy()
    best = np.full(n, np.inf)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_leaves * d))
    for s in range(0, n, chunk):
        xs = flat[s : s + chunk]
        proj = np.clip(xs[:, None, :], lo[None], hi[None])  # (n, L, D)
        dist = distance(proj - xs[:, None, :], norm)
        dist = np.where(allowed[s : s + chunk] & feasible[None], dist, np.inf)
        idx = dist.argmin(1)
        rows = np.arange(xs.shape[0])
        best[s : s + chunk] = dist[rows, idx]
        found = np.isfinite(best[s : s + chunk])
        x_adv[s : s + chunk][found] = proj[rows, idx][found]
    return x_adv, best


def _goal_mask(labels_of_leaves: np.ndarray, y: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    if target is None:
        return labels_of_leaves[None, :] != y[:, None]
    return labels_of_leaves[None, :] == target[:, None]


def tree_attack(
    tree: Any,
    x: Any,
    y: Any,
    *,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    target: Any = None,
) -> TreeAttackResult:
    """Exact minimal perturbation that changes a decision tree's prediction (or reaches a target class).

    Enumerates every leaf whose class differs from ``y`` (or equals ``target``), clips ``x`` into its box
    intersected with ``bounds`` — the nearest point of the box in every Lp norm — and keeps the nearest leaf.
    Box edges are float32-exact, so scikit-learn's ``predict`` on ``x_adv`` gives that leaf's class.

    Args:
        tree: a fitted ``sklearn.tree.DecisionTreeClassifier``.
        x: inputs ``(N, ...)`` (torch or numpy) inside ``bounds``; flattened to the tree's features.
        y: true class indices ``(N,)`` (indices into ``tree.classes_``).
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"`` (number of changed features).
        bounds: valid input range.
        target: optional target class indices ``(N,)`` for a targeted attack.

    Returns:
        TreeAttackResult with ``exact=True``; ``distance`` is the exact minimum (0 where ``x`` is already
        misclassified, ``inf`` where no leaf of an allowed class is reachable inside ``bounds``).

    Raises:
        TypeError: not a decision tree classifier. ValueError: not fitted, wrong feature count, bad labels.

    References:
        Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning", arXiv:1605.07277, section 4.2;
        Kantchelian, Tygar & Joseph, "Evasion and Hardening of Tree Ensemble Classifiers", arXiv:1509.07892.

    Examples:
        >>> dt = DecisionTreeClassifier(max_depth=8).fit(x_train.reshape(len(x_train), -1), y_train)
        >>> res = tree_attack(dt, x_test, y_test, norm="l2")
        >>> res.distance.mean()
    """
    from sklearn.tree import DecisionTreeClassifier

    validation.check_fitted_estimator("tree", tree)
    if not isinstance(tree, DecisionTreeClassifier):
        raise TypeError(
            f"tree: expected a fitted DecisionTreeClassifier, got {type(tree).__name__}; for forests use "
            "advlab.nonneural.trees.forest_attack"
        )
    flat, shape = to_flat(x)
    check_flat_inputs(norm, bounds, flat, int(tree.n_features_in_))
    k = len(tree.classes_)
    y_np = label_array("y", y, flat.shape[0], k)
    tgt = None if target is None else label_array("target", target, flat.shape[0], k)
    boxes = leaf_boxes(tree)
    x_adv, dist = nearest_leaf(boxes, flat, _goal_mask(boxes.label, y_np, tgt), norm, bounds)
    pred = np.searchsorted(tree.classes_, tree.predict(x_adv.astype(np.float32)))
    success = (pred == tgt) if tgt is not None else (pred != y_np)
    return TreeAttackResult(restore(x_adv, shape, x), dist, success, norm, True)


def _forest_proba(forest: Any, flat: np.ndarray) -> np.ndarray:
    return forest.predict_proba(flat.astype(np.float32))


class _ForestSearch:
    """The steps of :func:`forest_attack`: greedy leaf moves while the forest still predicts ``y``, then a line search.

    Every example is confined to a box: the intersection of the input bounds and of the other-class leaves chosen
    so far (one per tree). Trees already constrained keep voting against ``y`` whatever comes next.
    """

    def __init__(
        self, forest: Any, flat: np.ndarray, y: np.ndarray, norm: str, bounds: tuple[float, float], candidates: int
    ) -> None:
        self.forest, self.flat, self.y = forest, flat, y
        self.norm, self.bounds, self.candidates = norm, bounds, candidates
        self.trees = [leaf_boxes(t) for t in forest.estimators_]
        n, d = flat.shape
        self.box_lo = np.full((n, d), float(bounds[0]))
        self.box_hi = np.full((n, d), float(bounds[1]))
        self.used = np.zeros((n, len(self.trees)), dtype=bool)
        self.cur = flat.copy()
        self.onehot = np.eye(len(forest.classes_), dtype=bool)[y]

    def margin(self, points: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``p_y - max_{c != y} p_c`` of the forest at ``points`` (the examples ``rows``)."""
        p = _forest_proba(self.forest, points)
        return p[np.arange(len(rows)), self.y[rows]] - np.where(self.onehot[rows], -np.inf, p).max(1)

    def run(self, steps: int) -> TreeAttackResult:
        active = self.margin(self.cur, np.arange(self.flat.shape[0])) >= 0
        for _ in range(steps):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            active[idx] = self.move(idx)
        return self.shortened()

    def move(self, idx: np.ndarray) -> np.ndarray:
        """One leaf move for each example in ``idx``; whether it is still classified ``y`` (and moved)."""
        moves = self.nearest_moves(idx)
        best_m, best_t = self.best_moves(idx, moves)
        cand_x, _, cand_lo, cand_hi = moves
        moved = best_t >= 0
        for i in np.flatnonzero(moved):
            t, g = best_t[i], idx[i]
            self.box_lo[g], self.box_hi[g] = cand_lo[t][i], cand_hi[t][i]
            self.cur[g] = cand_x[t][i]
            self.used[g, t] = True
        return moved & (best_m >= 0)

    def nearest_moves(self, idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Per tree not yet used: the nearest point of an other-class leaf meeting the current box, its distance
        ``(n, T)`` and the box it leaves."""
        xs, lo_b, hi_b = self.flat[idx], self.box_lo[idx], self.box_hi[idx]
        cand_x, cand_d, cand_lo, cand_hi = [], [], [], []
        r = np.arange(len(idx))
        for t, boxes in enumerate(self.trees):
            lo = np.maximum(lo_b[:, None, :], boxes.low[None])  # (n, L, D)
            hi = np.minimum(hi_b[:, None, :], boxes.high[None])
            ok = (lo <= hi).all(2) & (boxes.label[None, :] != self.y[idx, None]) & ~self.used[idx, t][:, None]
            proj = np.clip(xs[:, None, :], lo, hi)
            dist = np.where(ok, distance(proj - xs[:, None, :], self.norm), np.inf)
            best = dist.argmin(1)
            cand_x.append(proj[r, best])
            cand_d.append(dist[r, best])
            cand_lo.append(lo[r, best])
            cand_hi.append(hi[r, best])
        return cand_x, np.stack(cand_d, 1), cand_lo, cand_hi

    def best_moves(
        self, idx: np.ndarray, moves: tuple[list[np.ndarray], np.ndarray, list[np.ndarray], list[np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Among the ``candidates`` nearest moves, the one with the smallest forest margin (tree -1: none)."""
        cand_x, dists = moves[0], moves[1]
        order = np.argsort(dists, axis=1)[:, : self.candidates]
        r = np.arange(len(idx))
        best_m = np.full(len(idx), np.inf)
        best_t = np.full(len(idx), -1)
        for c in range(order.shape[1]):
            t_sel = order[:, c]
            finite = np.isfinite(dists[r, t_sel])
            pts = np.stack([cand_x[t][i] for i, t in enumerate(t_sel)])
            m = np.where(finite, self.margin(pts, idx), np.inf)
            better = m < best_m
            best_m = np.where(better, m, best_m)
            best_t = np.where(better, t_sel, best_t)
        return best_m, best_t

    def shortened(self) -> TreeAttackResult:
        """Line search along ``x -> cur`` for the smallest fooling multiple, then the result.

        The prediction along the segment is not monotone; bisection keeps the invariant "hi fools".
        """
        flat, cur, y = self.flat, self.cur, self.y
        fooled = _forest_proba(self.forest, cur).argmax(1) != y
        lo_a, hi_a = np.zeros(len(y)), np.ones(len(y))
        for _ in range(LINE_SEARCH_STEPS):
            mid = (lo_a + hi_a) / 2
            pts = flat + mid[:, None] * (cur - flat)
            ok = _forest_proba(self.forest, pts).argmax(1) != y
            hi_a = np.where(ok & fooled, mid, hi_a)
            lo_a = np.where(ok & fooled, lo_a, mid)
        x_adv = np.where(fooled[:, None], flat + hi_a[:, None] * (cur - flat), flat)
        x_adv = np.clip(x_adv.astype(np.float32).astype(np.float64), self.bounds[0], self.bounds[1])
        success = _forest_proba(self.forest, x_adv).argmax(1) != y
        x_adv = np.where(success[:, None], x_adv, flat)
        dist = np.where(success, distance(x_adv - flat, self.norm), np.inf)
        return TreeAttackResult(x_adv, dist, success, self.norm, False)


@renamed(RENAMED)
def forest_attack(
    forest: Any,
    x: Any,
    y: Any,
    *,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    steps: int = 50,
    candidates: int = 10,
) -> TreeAttackResult:
    """Greedy leaf-hopping heuristic against a random forest / extra-trees classifier (untargeted).

    Each example is confined to a box, initially the input bounds. Each iteration, for every tree not yet
    used, the nearest (to ``x``) leaf of another class whose box meets the current box is found; among the
    ``candidates`` nearest such moves, the one giving the smallest forest margin
    ``p_y - max_{c != y} p_c`` is taken and the box shrinks to its intersection with that leaf, so every tree
    already used keeps voting against ``y``. The point is always ``x`` clipped into the box (the nearest point
    of the box). When the prediction flips, a line search along ``x -> x_adv`` keeps the smallest fooling
    multiple. This is a heuristic: distances are
    upper bounds on the minimal ones (``exact=False``).

    Args:
        forest: a fitted ``RandomForestClassifier`` or ``ExtraTreesClassifier``.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true class indices ``(N,)``.
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``.
        bounds: valid input range.
        steps: maximum number of leaf moves per example (formerly ``max_iter``).
        candidates: trees tried per move (the cost is ``candidates`` forest evaluations per move).

    Returns:
        TreeAttackResult with ``exact=False``.

    Raises:
        TypeError: not a forest of decision trees. ValueError: not fitted, bad settings or inputs.

    References:
        Kantchelian, Tygar & Joseph, arXiv:1509.07892 (heuristic evasion of tree ensembles);
        Papernot, McDaniel & Goodfellow, arXiv:1605.07277.

    Examples:
        >>> rf = RandomForestClassifier(n_estimators=20).fit(xf_train, y_train)
        >>> res = forest_attack(rf, x_test, y_test, norm="linf")
    """
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    validation.check_fitted_estimator("forest", forest)
    if not isinstance(forest, (RandomForestClassifier, ExtraTreesClassifier)):
        raise TypeError(
            f"forest: expected a fitted RandomForestClassifier or ExtraTreesClassifier, got {type(forest).__name__}"
        )
    steps = validation.check_int("steps", steps, minimum=1)
    candidates = validation.check_int("candidates", candidates, minimum=1)
    flat, shape = to_flat(x)
    check_flat_inputs(norm, bounds, flat, int(forest.n_features_in_))
    y_np = label_array("y", y, flat.shape[0], len(forest.classes_))
    res = _ForestSearch(forest, flat, y_np, norm, bounds, candidates).run(steps)
    res.x_adv = restore(res.x_adv, shape, x)
    return res
