"""kNN attack: exact on a two-point 1-NN problem, valid and bounded on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from advlab.nonneural import knn_attack


def test_two_point_1nn_flips_at_the_bisector():
    a, b = np.array([0.2, 0.2]), np.array([0.8, 0.6])
    knn = KNeighborsClassifier(n_neighbors=1).fit(np.stack([a, b]), [0, 1])
    # points on the line through a and b, on a's side: the flip is at the midpoint (the bisector)
    ts = np.array([0.0, 0.1, 0.3])
    x = (a[None] + ts[:, None] * (b - a)[None]).astype(np.float32)
    res = knn_attack(knn, x, np.zeros(3, dtype=np.int64), norm="l2", n_points=1)
    want = np.linalg.norm((0.5 - ts)[:, None] * (b - a)[None], axis=1)
    np.testing.assert_allclose(res.distance, want, atol=1e-5)
    assert res.success.all()


@pytest.fixture(scope="module")
def digits_knn(digits):
    xf = digits["x_train"][:800].reshape(800, -1).numpy()
    yf = digits["y_train"][:800].numpy()
    return KNeighborsClassifier(n_neighbors=1).fit(xf, yf), xf, yf


def test_digits_attack_is_valid_and_bounded(digits, digits_knn):
    knn, xf, yf = digits_knn
    x, y = digits["x_test"][:20], digits["y_test"][:20]
    res = knn_attack(knn, x, y, norm="l2")
    assert isinstance(res.x_adv, torch.Tensor) and res.x_adv.shape == x.shape
    assert res.success.all()
    flat_adv = res.x_adv.reshape(20, -1).numpy()
    assert (knn.predict(flat_adv) != y.numpy()).all()
    flat = x.reshape(20, -1).numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(flat_adv - flat, axis=1), res.distance, rtol=1e-4, atol=1e-5)
    # 1-NN predicts the nearest other-class training point's class at that point: the segment to it flips,
    # so the distance found is at most the distance to that point.
    d_other = np.array([np.linalg.norm(xf[yf != y[i].item()] - flat[i], axis=1).min() for i in range(20)])
    assert (res.distance <= d_other + 1e-5).all()
    assert (res.distance < d_other).mean() > 0.9  # and usually well inside the segment


def test_given_training_data_equals_stored(digits, digits_knn):
    knn, xf, yf = digits_knn
    x, y = digits["x_test"][:5].numpy(), digits["y_test"][:5].numpy()
    a = knn_attack(knn, x, y, norm="linf")
    b = knn_attack(knn, x, y, norm="linf", x_train=xf, y_train=yf)
    np.testing.assert_allclose(a.distance, b.distance)


def test_errors(digits_knn):
    knn, xf, yf = digits_knn
    with pytest.raises(ValueError, match="not fitted"):
        knn_attack(KNeighborsClassifier(), xf[:2], yf[:2])
    with pytest.raises(TypeError, match="KNeighborsClassifier"):
        knn_attack(DecisionTreeClassifier().fit(xf, yf), xf[:2], yf[:2])
    with pytest.raises(ValueError, match="features"):
        knn_attack(knn, np.zeros((2, 10), np.float32), yf[:2])
    with pytest.raises(ValueError, match="norm"):
        knn_attack(knn, xf[:2], yf[:2], norm="l0")
    with pytest.raises(ValueError, match="n_points"):
        knn_attack(knn, xf[:2], yf[:2], n_points=0)


def test_linf_path_moves_all_coordinates_and_beats_the_segment(digits, digits_knn):
    """For linf the path is the linf-ball projection of the destination; it is never longer than the segment."""
    knn, _, _ = digits_knn
    x, y = digits["x_test"][:15], digits["y_test"][:15]
    res = knn_attack(knn, x, y, norm="linf")
    assert res.success.all()
    flat = x.reshape(15, -1).numpy().astype(np.float64)
    adv = res.x_adv.reshape(15, -1).numpy().astype(np.float64)
    assert (knn.predict(adv) != y.numpy()).all()
    # x_adv is the nearest point to its destination within linf radius = distance: clip(d, x - r, x + r)
    r = res.distance[:, None]
    want = np.clip(res.destination, flat - r, flat + r)
    np.testing.assert_allclose(adv, want, atol=1e-6)
    # and the linf distance found is at most the linf distance of the l2 search's point
    l2_res = knn_attack(knn, x, y, norm="l2")
    l2_linf = np.abs(l2_res.x_adv.reshape(15, -1).numpy() - flat).max(1)
    assert np.median(res.distance) <= np.median(l2_linf)
