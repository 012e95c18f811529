"""from_sklearn: the torch re-implementations reproduce scikit-learn's decision_function and predict exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.nonneural import from_sklearn

N_TRAIN = 400


@pytest.fixture(scope="module")
def data(digits_flat):
    xt = digits_flat["x_train"][:N_TRAIN].numpy()
    yt = digits_flat["y_train"][:N_TRAIN].numpy()
    xs = digits_flat["x_test"].numpy()
    ys = digits_flat["y_test"].numpy()
    return xt, yt, xs, ys


def _fitted(kind: str, xt, yt):
    if kind == "lr":
        return LogisticRegression(max_iter=500).fit(xt, yt)
    if kind == "lr-binary":
        keep = yt < 2
        return LogisticRegression(max_iter=500).fit(xt[keep], yt[keep])
    if kind == "linearsvc":
        return LinearSVC().fit(xt, yt)
    if kind == "svc-linear":
        return SVC(kernel="linear").fit(xt, yt)
    if kind == "svc-rbf":
        return SVC(kernel="rbf").fit(xt, yt)
    if kind == "svc-rbf-binary":
        keep = yt < 2
        return SVC(kernel="rbf").fit(xt[keep], yt[keep])
    if kind == "svc-poly":
        return SVC(kernel="poly").fit(xt, yt)
    if kind == "pipeline":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(xt, yt)
    raise AssertionError(kind)


KINDS = ["lr", "lr-binary", "linearsvc", "svc-linear", "svc-rbf", "svc-rbf-binary", "svc-poly", "pipeline"]


@pytest.fixture(scope="module")
def models(data):
    xt, yt, _, _ = data
    return {k: _fitted(k, xt, yt) for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_decision_function_and_predict_match_sklearn(models, data, kind):
    est = models[kind]
    _, _, xs, ys = data
    if kind.endswith("binary"):
        xs = xs[ys < 2]
    clf = from_sklearn(est, input_shape=(1, 8, 8))
    x = torch.from_numpy(xs).reshape(-1, 1, 8, 8)
    ours = clf.module.decision_function(x).numpy()
    ref = est.decision_function(xs.astype(np.float64))
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        pred = clf(x).argmax(1).numpy()
    # Exact agreement for every model, multiclass kernel SVMs included (the "vote" aggregation).
    assert (pred == est.predict(xs)).all()


def test_svm_ovr_logits_are_sklearn_decision_values(models, data):
    est = models["svc-rbf"]
    _, _, xs, _ = data
    x = torch.from_numpy(xs)
    ovr = from_sklearn(est, svm_multiclass="ovr")
    with torch.no_grad():
        logits = ovr(x).double().numpy()
    np.testing.assert_allclose(logits, est.decision_function(xs.astype(np.float64)), atol=1e-5)
    # argmax of sklearn's ovr values differs from predict only on vote ties: nearly always equal.
    assert (logits.argmax(1) == est.predict(xs)).mean() >= 0.97
    summed = from_sklearn(est, svm_multiclass="sum")
    with torch.no_grad():
        agree = (summed(x).argmax(1).numpy() == est.predict(xs)).mean()
    assert agree >= 0.9


def test_binary_softmax_is_predict_proba(models, data):
    est = models["lr-binary"]
    _, _, xs, _ = data
    clf = from_sklearn(est)
    with torch.no_grad():
        p = torch.softmax(clf(torch.from_numpy(xs)).double(), 1).numpy()
    np.testing.assert_allclose(p, est.predict_proba(xs.astype(np.float64)), atol=1e-6)


def test_input_gradients_are_exact(models, data):
    _, _, xs, _ = data
    x = torch.from_numpy(xs[:3]).double()
    # multinomial LR: d logit_k / dx = coef_[k]
    lr = models["lr"]
    clf = from_sklearn(lr)
    for k in (0, 7):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(clf.module.decision_function(xg)[:, k].sum(), xg)
        np.testing.assert_allclose(g.numpy(), np.broadcast_to(lr.coef_[k], g.shape), atol=1e-10)
    # binary RBF SVM: grad = sum_s a_s K(s, x) * (-2 gamma) (x - s)
    svm = models["svc-rbf-binary"]
    clf = from_sklearn(svm)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(clf.module.decision_function(xg).sum(), xg)
    sv, a, gamma = svm.support_vectors_, svm.dual_coef_[0], svm._gamma
    diff = x.numpy()[:, None, :] - sv[None]
    kern = np.exp(-gamma * (diff**2).sum(-1))
    want = ((a * kern)[:, :, None] * (-2 * gamma) * diff).sum(1)
    np.testing.assert_allclose(g.numpy(), want, atol=1e-9)


@pytest.mark.parametrize("kind", ["lr", "svc-rbf"])
def test_pgd_lowers_accuracy(models, data, kind):
    _, _, xs, ys = data
    est = models[kind]
    clf = from_sklearn(est, input_shape=(1, 8, 8))
    x = torch.from_numpy(xs[:60]).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(ys[:60]).long()
    clean = (clf.predict(x) == y).float().mean().item()
    res = pgd(clf, x, y, ThreatModel("linf", 0.25), steps=20)
    adv_pred = est.predict(res.x_adv.reshape(len(x), -1).numpy())
    robust = (adv_pred == y.numpy()).mean()  # scored by scikit-learn itself, not by our re-implementation
    assert clean > 0.9
    assert robust < 0.2


def test_errors(data):
    xt, yt, _, _ = data
    with pytest.raises(ValueError, match="not fitted"):
        from_sklearn(LogisticRegression())
    with pytest.raises(TypeError, match="advlab.nonneural.trees"):
        from_sklearn(DecisionTreeClassifier(max_depth=2).fit(xt, yt))
    lr = LogisticRegression(max_iter=200).fit(xt, yt)
    with pytest.raises(ValueError, match="64"):
        from_sklearn(lr, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="svm_multiclass"):
        from_sklearn(lr, svm_multiclass="votes")
    with pytest.raises(TypeError, match="not a scikit-learn|fitted scikit-learn"):
        from_sklearn(object())
    from sklearn.decomposition import PCA

    with pytest.raises(TypeError, match="PCA"):
        from_sklearn(make_pipeline(PCA(8), LogisticRegression(max_iter=200)).fit(xt, yt))


def _more_estimators():
    from sklearn.linear_model import Perceptron, RidgeClassifier, SGDClassifier
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler
    from sklearn.svm import NuSVC

    return {
        "sgd": SGDClassifier(random_state=0),
        "ridge": RidgeClassifier(),
        "perceptron": Perceptron(random_state=0),
        "ovr-lr": OneVsRestClassifier(LogisticRegression(max_iter=300)),
        "nusvc": NuSVC(),
        "svc-sigmoid": SVC(kernel="sigmoid"),
        "minmax-maxabs-linearsvc": make_pipeline(MinMaxScaler(), MaxAbsScaler(), LinearSVC()),
    }


@pytest.mark.parametrize("kind", list(_more_estimators()))
def test_other_supported_estimators_are_exact(data, kind):
    xt, yt, xs, _ = data
    est = _more_estimators()[kind].fit(xt, yt)
    clf = from_sklearn(est)
    x = torch.from_numpy(xs)
    np.testing.assert_allclose(
        clf.module.decision_function(x).numpy(), est.decision_function(xs.astype(np.float64)), atol=1e-5
    )
    assert (clf.predict(x).numpy() == est.predict(xs)).all()
