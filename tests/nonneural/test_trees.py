"""Tree attacks: the single-tree search is exact (checked by brute force over all critical points)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from advlab.nonneural import forest_attack, leaf_boxes, tree_attack
from advlab.nonneural.trees import _f32_above, _f32_at_most


def _tiny_tree(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((80, 3)).astype(np.float32)
    y = ((x[:, 0] > 0.5) ^ (x[:, 1] > 0.3)).astype(np.int64) + (x[:, 2] > 0.8)
    return DecisionTreeClassifier(max_depth=4, random_state=seed).fit(x, y), x, y


def _brute_force(tree, x0: np.ndarray, y0: int, norm: str) -> float:
    """Minimal distance by enumerating every combination of critical coordinate values.

    Along each feature the tree only distinguishes the intervals between thresholds, and the nearest point of
    an interval to x0 is x0 itself or one of the interval's float32 end points; so the exact minimum is
    attained on this grid, and scikit-learn's own predict labels every grid point.
    """
    t = tree.tree_
    axes = []
    for f in range(x0.shape[0]):
        thr = t.threshold[t.feature == f]
        vals = {float(x0[f]), 0.0, 1.0}
        vals |= set(_f32_at_most(thr).tolist()) | set(_f32_above(thr).tolist())
        axes.append(sorted(v for v in vals if 0.0 <= v <= 1.0))
    grid = np.array(list(itertools.product(*axes)))
    pred = tree.predict(grid.astype(np.float32))
    other = grid[pred != y0]
    delta = other - x0[None].astype(np.float64)
    if norm == "linf":
        d = np.abs(delta).max(1)
    elif norm == "l2":
        d = np.sqrt((delta**2).sum(1))
    elif norm == "l1":
        d = np.abs(delta).sum(1)
    else:
        d = (delta != 0).sum(1)
    return float(d.min())


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", "l0"])
def test_single_tree_is_exact_against_brute_force(norm):
    tree, x, _y = _tiny_tree()
    xs, ys = x[:12], tree.predict(x[:12]).astype(np.int64)
    res = tree_attack(tree, xs, ys, norm=norm)
    for i in range(len(xs)):
        assert res.distance[i] == pytest.approx(_brute_force(tree, xs[i], ys[i], norm), abs=1e-6)
    # x_adv really is another class for scikit-learn, at the reported distance
    assert (tree.predict(res.x_adv) != ys).all()
    assert res.success.all() and res.exact


def test_leaf_boxes_partition_the_training_points():
    tree, x, _ = _tiny_tree(1)
    boxes = leaf_boxes(tree)
    inside = (x[:, None, :] >= boxes.low[None]) & (x[:, None, :] <= boxes.high[None])
    member = inside.all(2)
    assert (member.sum(1) == 1).all()  # every point in exactly one leaf box
    np.testing.assert_array_equal(boxes.node[member.argmax(1)], tree.apply(x))


def test_targeted_and_torch_images(digits):
    xf = digits["x_train"].reshape(len(digits["x_train"]), -1).numpy()
    tree = DecisionTreeClassifier(max_depth=8, random_state=0).fit(xf, digits["y_train"].numpy())
    x, y = digits["x_test"][:20], digits["y_test"][:20]
    target = (y + 1) % 10
    res = tree_attack(tree, x, y, norm="l2", target=target)
    assert isinstance(res.x_adv, torch.Tensor) and res.x_adv.shape == x.shape
    ok = np.isfinite(res.distance)
    pred = tree.predict(res.x_adv.reshape(20, -1).numpy())
    assert (pred[ok] == target.numpy()[ok]).all() and ok.mean() > 0.5
    d = (res.x_adv - x).reshape(20, -1).norm(dim=1).numpy()
    np.testing.assert_allclose(d[ok], res.distance[ok], rtol=1e-5, atol=1e-6)
    # the untargeted minimum is at most every targeted one
    unt = tree_attack(tree, x, y, norm="l2")
    assert (unt.distance <= res.distance + 1e-9).all()


def test_forest_of_one_tree_matches_exact_search(digits):
    xf = digits["x_train"][:600].reshape(600, -1).numpy()
    yf = digits["y_train"][:600].numpy()
    rf = RandomForestClassifier(n_estimators=1, bootstrap=False, max_features=None, max_depth=6, random_state=0)
    rf.fit(xf, yf)
    x = digits["x_test"][:15].reshape(15, -1).numpy()
    y = rf.predict(x).astype(np.int64)
    heur = forest_attack(rf, x, y, norm="linf")
    exact = tree_attack(rf.estimators_[0], x, y, norm="linf")
    np.testing.assert_allclose(heur.distance, exact.distance, atol=1e-6)
    assert not heur.exact


def test_forest_attack_fools_forest(digits):
    xf = digits["x_train"][:600].reshape(600, -1).numpy()
    yf = digits["y_train"][:600].numpy()
    rf = RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0).fit(xf, yf)
    x = digits["x_test"][:20].reshape(20, -1).numpy()
    y = digits["y_test"][:20].numpy()
    res = forest_attack(rf, x, y, norm="linf")
    assert res.success.mean() >= 0.9
    pred = rf.predict(res.x_adv)
    assert (pred[res.success] != y[res.success]).all()
    d = np.abs(res.x_adv - x).max(1)
    np.testing.assert_allclose(d[res.success], res.distance[res.success], atol=1e-6)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()


def test_errors(digits):
    tree, x, y = _tiny_tree()
    with pytest.raises(ValueError, match="not fitted"):
        tree_attack(DecisionTreeClassifier(), x, y)
    with pytest.raises(TypeError, match="forest_attack"):
        tree_attack(LogisticRegression().fit(x, y), x, y)
    with pytest.raises(ValueError, match="features"):
        tree_attack(tree, np.zeros((2, 5), np.float32), y[:2])
    with pytest.raises(ValueError, match="norm"):
        tree_attack(tree, x, y, norm="l3")
    with pytest.raises(ValueError, match="bounds"):
        tree_attack(tree, x + 2, y)
    with pytest.raises(TypeError, match="RandomForest"):
        forest_attack(tree, x, y)


def test_forest_attack_steps_bound_the_moves_and_max_iter_still_works(digits):
    xf = digits["x_train"][:400].reshape(400, -1).numpy()
    yf = digits["y_train"][:400].numpy()
    rf = RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0).fit(xf, yf)
    x = digits["x_test"][:15].reshape(15, -1).numpy()
    y = digits["y_test"][:15].numpy()
    one = forest_attack(rf, x, y, steps=1, candidates=3)
    more = forest_attack(rf, x, y, steps=20, candidates=3)
    assert one.success.sum() < more.success.sum()  # one leaf move per example is not enough for every example
    with pytest.warns(FutureWarning, match="'max_iter' is now called 'steps'"):
        old = forest_attack(rf, x, y, max_iter=1, candidates=3)
    np.testing.assert_array_equal(old.x_adv, one.x_adv)
    with pytest.raises(TypeError, match="steps"):
        forest_attack(rf, x, y, steps=1, max_iter=1)
    with pytest.raises(ValueError, match="steps"):
        forest_attack(rf, x, y, steps=0)
