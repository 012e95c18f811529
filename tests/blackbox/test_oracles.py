"""Oracles: answers match the wrapped model, every example costs one query, budgets refuse before evaluating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.blackbox import (
    BudgetExceeded,
    CallableOracle,
    OracleResponseError,
    SklearnOracle,
    TorchOracle,
    as_module,
    find_oracle,
)


def test_torch_oracle_matches_model_and_counts(mlp_model, digits_batch):
    x, _ = digits_batch
    oracle = TorchOracle(mlp_model, mode="scores", batch_size=5)
    with torch.no_grad():
        logits = mlp_model(x)
    torch.testing.assert_close(oracle.scores(x), torch.softmax(logits, 1))
    assert torch.equal(oracle.predict(x), logits.argmax(1))
    assert oracle.queries == 2 * x.shape[0]
    assert oracle.num_classes == 10 and oracle.input_shape == (1, 8, 8) and oracle.bounds == (0.0, 1.0)
    assert oracle.remaining() is None


def test_budget_is_checked_before_evaluating(mlp_model, digits_batch):
    x, _ = digits_batch
    calls = []
    oracle = CallableOracle(lambda a: calls.append(len(a)) or np.zeros(len(a), dtype=np.int64), "labels", 10, budget=20)
    oracle.predict(x)  # 16
    assert oracle.remaining() == 4
    with pytest.raises(BudgetExceeded) as info:
        oracle.predict(x[:5])
    assert info.value.spent == 16 and info.value.budget == 20 and info.value.requested == 5
    assert calls == [16], "the refused batch must not be evaluated"
    assert oracle.queries == 16
    oracle.predict(x[:4])
    assert oracle.remaining() == 0


@pytest.mark.parametrize("budget", [0, -3])
def test_nonpositive_budget_is_rejected(mlp_model, budget):
    with pytest.raises(ValueError, match="budget: expected a positive number"):
        TorchOracle(mlp_model, budget=budget)


def test_labels_mode_refuses_scores(mlp_model, digits_batch):
    oracle = TorchOracle(mlp_model, mode="labels")
    with pytest.raises(RuntimeError, match="'labels' mode"):
        oracle.scores(digits_batch[0])
    assert oracle.queries == 0


def test_oracle_rejects_inputs_outside_bounds_and_wrong_shape(mlp_model, digits_batch):
    x, _ = digits_batch
    oracle = TorchOracle(mlp_model)
    with pytest.raises(ValueError, match="inside bounds"):
        oracle.predict(x + 2)
    with pytest.raises(ValueError, match="wrong rank"):
        oracle.predict(x.reshape(len(x), -1))
    assert oracle.queries == 0


def test_sklearn_oracle(digits_flat):
    from sklearn.linear_model import LogisticRegression

    x, y = digits_flat["x_train"].numpy(), digits_flat["y_train"].numpy()
    est = LogisticRegression(max_iter=200).fit(x, y)
    oracle = SklearnOracle(est, mode="scores", input_shape=(1, 8, 8), budget=100)
    xt = digits_flat["x_test"][:10].reshape(10, 1, 8, 8)
    np.testing.assert_allclose(oracle.scores(xt).numpy(), est.predict_proba(xt.reshape(10, -1).numpy()), rtol=1e-5)
    np.testing.assert_array_equal(oracle.predict(xt).numpy(), est.predict(xt.reshape(10, -1).numpy()))
    assert oracle.queries == 20 and oracle.num_classes == 10
    with pytest.raises(ValueError, match="not fitted"):
        SklearnOracle(LogisticRegression())
    with pytest.raises(ValueError, match="63 features"):
        SklearnOracle(est, input_shape=(63,))
    with pytest.raises(ValueError, match="wrong shape|expects 64"):
        SklearnOracle(est, input_shape=None).predict(torch.zeros(2, 65))


def test_sklearn_oracle_maps_string_classes_to_indices():
    from sklearn.tree import DecisionTreeClassifier

    x = np.array([[0.1], [0.2], [0.8], [0.9]])
    est = DecisionTreeClassifier().fit(x, np.array(["cat", "cat", "dog", "dog"]))
    oracle = SklearnOracle(est)
    assert oracle.predict(torch.tensor([[0.15], [0.85]])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="predict_proba"):
        from sklearn.svm import SVC

        SklearnOracle(SVC().fit(x, [0, 0, 1, 1]), mode="scores")


def test_callable_oracle_validates_answers():
    bad = CallableOracle(lambda a: np.zeros(len(a) + 1), "labels", 2)
    with pytest.raises(OracleResponseError, match="expected 3 labels"):
        bad.predict(torch.zeros(3, 2))
    assert bad.queries == 0, "a failed batch is refunded"
    out_of_range = CallableOracle(lambda a: np.full(len(a), 7), "labels", 2)
    with pytest.raises(OracleResponseError, match="out of range"):
        out_of_range.predict(torch.zeros(3, 2))
    scores = CallableOracle(lambda a: torch.stack([a[:, 0], 1 - a[:, 0]], 1), "scores", 2, array="torch")
    assert scores.predict(torch.tensor([[0.9, 0.0], [0.2, 0.0]])).tolist() == [0, 1]


def test_as_module_log_probabilities_and_label_margin(mlp_model, digits_batch):
    x, _ = digits_batch
    with torch.no_grad():
        logits = mlp_model(x)
    scores_model = as_module(TorchOracle(mlp_model, mode="scores"))
    with torch.no_grad():
        torch.testing.assert_close(scores_model(x), torch.log_softmax(logits, 1), atol=1e-5, rtol=1e-5)
    labels_model = as_module(TorchOracle(mlp_model, mode="labels"))
    with torch.no_grad():
        out = labels_model(x)
    assert torch.equal(out.argmax(1), logits.argmax(1))
    assert float(out.max()) == 0.0 and float(out.min()) <= -1e3
    assert labels_model.num_classes == 10 and labels_model.input_shape == (1, 8, 8)


def test_as_module_caches_the_last_batch(mlp_model, digits_batch):
    x, _ = digits_batch
    model = as_module(TorchOracle(mlp_model, mode="labels"))
    oracle = find_oracle(model).oracle
    with torch.no_grad():
        model(x)
        model(x.clone())
    assert oracle.queries == x.shape[0]
    with torch.no_grad():
        model(x[:3])
    assert oracle.queries == x.shape[0] + 3


def test_gradient_attack_on_oracle_raises_clearly(mlp_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(RuntimeError, match="no gradient"):
        pgd(as_module(TorchOracle(mlp_model)), x, y, ThreatModel("linf", 0.1), steps=2)
