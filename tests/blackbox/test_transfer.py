"""Transfer matrix and Liu et al. ensembles, checked against closed forms and independent recomputation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from advlab import Classifier, ThreatModel, io
from advlab.attacks import fgsm
from advlab.blackbox import Ensemble, SklearnOracle, ensemble_classifier, transfer_matrix
from advlab.nonneural import from_sklearn, tree_attack
from advlab.reports.figures import transfer_heatmap

EPS = 0.2
N = 60


@pytest.fixture(scope="module")
def zoo(digits):
    xf = digits["x_train"][:700].reshape(700, -1).numpy()
    yf = digits["y_train"][:700].numpy()
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 10)
    with torch.no_grad():  # a torch "DNN" stand-in: the LR's weights, perturbed, behind Flatten
        lr0 = LogisticRegression(max_iter=300).fit(xf, yf)
        lin.weight.copy_(torch.from_numpy(lr0.coef_).float() + 0.3 * torch.randn(10, 64, generator=g))
        lin.bias.copy_(torch.from_numpy(lr0.intercept_).float())
    net = Classifier(nn.Sequential(nn.Flatten(), lin), num_classes=10, input_shape=(1, 8, 8)).eval()
    return {
        "net": net,
        "lr": LogisticRegression(C=0.5, max_iter=300).fit(xf, yf),
        "svm": LinearSVC(C=0.1).fit(xf, yf),
        "dt": DecisionTreeClassifier(max_depth=8, random_state=0).fit(xf, yf),
        "knn": KNeighborsClassifier(n_neighbors=3).fit(xf, yf),
    }


@pytest.fixture(scope="module")
def batch(digits):
    return digits["x_test"][:N], digits["y_test"][:N]


@pytest.fixture(scope="module")
def matrix(zoo, batch):
    x, y = batch
    return transfer_matrix(zoo, x, y, eps=EPS)


def test_ensemble_fusions_match_closed_forms(zoo, batch):
    x, _ = batch
    a, b = zoo["net"], from_sklearn(zoo["lr"], (1, 8, 8))
    with torch.no_grad():
        za, zb = a(x), b(x)
        probs = Ensemble([a, b], weights=[3, 1])(x)
        want = torch.log(0.75 * torch.softmax(za, 1) + 0.25 * torch.softmax(zb, 1))
        torch.testing.assert_close(probs, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(Ensemble([a, b], combine="logits")(x), (za + zb) / 2)
        torch.testing.assert_close(
            Ensemble([a, b], combine="log_softmax")(x), (torch.log_softmax(za, 1) + torch.log_softmax(zb, 1)) / 2
        )
    # an ensemble of one model is that model for a cross-entropy attack (log_softmax is shift-invariant for CE)
    x1, y1 = batch
    one = fgsm(ensemble_classifier([a]), x1, y1, ThreatModel("linf", EPS)).x_adv
    torch.testing.assert_close(one, fgsm(a, x1, y1, ThreatModel("linf", EPS)).x_adv)


def test_lr_diagonal_equals_closed_form_fgsm(zoo, batch, matrix):
    """FGSM on multinomial LR: grad_x CE = W^T (softmax(Wx + b) - onehot(y)); scored by scikit-learn."""
    lr = zoo["lr"]
    x, y = batch
    flat = x.reshape(N, -1).double().numpy()
    z = flat @ lr.coef_.T + lr.intercept_
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(10)[y.numpy()]) @ lr.coef_
    x_adv = np.clip(flat + EPS * np.sign(grad), 0, 1).astype(np.float32)
    want = float((lr.predict(x_adv) != y.numpy()).mean())
    assert matrix.rate("lr", "lr") == pytest.approx(want)
    # and it transfers to the linear SVM more than the clean error
    assert matrix.rate("lr", "svm") > 1 - matrix.clean_accuracy["svm"] + 0.1


def test_tree_row_uses_the_exact_attack(zoo, batch, matrix):
    x, y = batch
    res = tree_attack(zoo["dt"], x, y, norm="linf")
    within = res.distance <= EPS
    # every example whose minimal perturbation fits in eps is misclassified by the tree
    assert matrix.rate("dt", "dt") >= within.mean() - 1e-12
    assert "exact" in matrix.source_method["dt"]


def test_matrix_shape_json_and_plot(matrix, tmp_path):
    assert matrix.sources == ["net", "lr", "svm", "dt", "knn", "ensemble (leave-one-out)"]
    assert matrix.targets == ["net", "lr", "svm", "dt", "knn"]
    err = np.asarray(matrix.error)
    assert err.shape == (6, 5) and ((err >= 0) & (err <= 1)).all()
    for s in matrix.sources[:-1]:
        assert matrix.mean_distance[s] <= EPS + 1e-6
    path = io.write_json(tmp_path / "m.json", matrix.to_dict())
    back = json.loads(path.read_text())
    assert isinstance(back["error"][0][0], float) and back["settings"]["eps"] == EPS
    png = transfer_heatmap(matrix.error, matrix.sources, matrix.targets, tmp_path / "m.png", title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "m.png").read_bytes() == png


def test_leave_one_out_ensemble_excludes_the_target(zoo, batch, matrix):
    x, y = batch
    others = [zoo["net"], from_sklearn(zoo["svm"], (1, 8, 8))]  # differentiable sources minus "lr"
    x_adv = fgsm(ensemble_classifier(others), x, y, ThreatModel("linf", EPS)).x_adv
    want = float((zoo["lr"].predict(x_adv.reshape(N, -1).numpy()) != y.numpy()).mean())
    assert matrix.rate("ensemble (leave-one-out)", "lr") == pytest.approx(want)


def test_oracle_target_and_errors(zoo, batch):
    x, y = batch
    oracle = SklearnOracle(zoo["lr"], input_shape=(1, 8, 8))
    tm = transfer_matrix({"net": zoo["net"]}, x, y, targets={"oracle": oracle, "lr": zoo["lr"]}, eps=EPS)
    assert tm.error[0][0] == tm.error[0][1]
    assert oracle.queries == 2 * N  # clean pass + one source
    with pytest.raises(TypeError, match="only be a target"):
        transfer_matrix({"o": oracle}, x, y)
    with pytest.raises(ValueError, match="not fitted"):
        transfer_matrix({"lr": LogisticRegression()}, x, y)
    with pytest.raises(ValueError, match="ensemble"):
        transfer_matrix({"net": zoo["net"]}, x, y, ensemble="mean")
    assert math.isfinite(tm.clean_accuracy["oracle"])


# ---------------------------------------------------------------------- CLI
def test_cli_transfer(zoo, tmp_path):
    from advlab.cli import main
    from advlab.data import load_dataset
    from advlab.zoo import build_classifier, save_model

    clf = build_classifier("softmax-regression", (1, 8, 8), 10)
    with torch.no_grad():
        clf.module[1].weight.copy_(zoo["net"].module[1].weight)
        clf.module[1].bias.copy_(zoo["net"].module[1].bias)
    save_model(clf.eval(), tmp_path / "net", dataset="digits")
    out = tmp_path / "t"
    rc = main(
        [
            "transfer",
            "--models",
            f"{tmp_path / 'net'},lr,dt,knn",
            "--data",
            "digits",
            "--n",
            "40",
            "--train-n",
            "300",
            "--eps",
            "0.2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rec = json.loads((out / "transfer.json").read_text())
    assert rec["sources"] == ["net", "lr", "dt", "knn", "ensemble (leave-one-out)"]
    assert rec["targets"] == ["net", "lr", "dt", "knn"]
    assert rec["models"]["lr"]["train_images"] == 300 and rec["models"]["net"]["kind"] == "advlab"
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # the figure is the reports layer's heat map of the recorded matrix
    title = "transferability, fgsm linf eps=0.2, n=40"
    assert (out / "transfer.png").read_bytes() == transfer_heatmap(
        rec["error"], rec["sources"], rec["targets"], title=title
    )
    # the white-box entry of the saved network equals FGSM recomputed through the API
    test = load_dataset("digits", "test", n=40)
    x_adv = fgsm(clf, test.x, test.y, ThreatModel("linf", 0.2)).x_adv
    assert rec["error"][0][0] == pytest.approx(float((clf.predict(x_adv) != test.y).float().mean()))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "lr,nonsense"], "neither a model folder"),
        (["--models", "lr,lr"], "duplicate"),
        (["--models", "lr", "--eps", "0.1,0.2"], "one radius"),
        (["--models", "lr", "--train-n", "0"], "--train-n"),
    ],
)
def test_cli_transfer_bad_input(tmp_path, capsys, argv, message):
    from advlab.cli import main

    rc = main(["transfer", "--data", "digits", "--n", "10", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_feature_count_mismatch_is_reported(zoo, batch):
    _x, y = batch
    big = torch.zeros(4, 1, 28, 28)
    with pytest.raises(ValueError, match="features"):
        transfer_matrix({"dt": zoo["dt"]}, big, y[:4], ensemble=None)
