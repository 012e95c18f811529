"""Gradient-masking checks: they pass on an honest linear model and catch masking and random models."""

from __future__ import annotations

import warnings

import pytest
import torch
from _evaltoy import MinNorm, toy_data, toy_model

from advlab.attacks import PGD
from advlab.evaluation import evaluate


@pytest.fixture(autouse=True)
def _short_checks(monkeypatch):
    """Fewer PGD steps in the checks keep these tests fast; the logic under test is the same."""
    import advlab.evaluation.checks as checks

    monkeypatch.setattr(checks, "CHECK_STEPS", 5)
    monkeypatch.setattr(checks, "MORE_STEPS_FACTOR", 4)


def _by_name(report):
    return {c.name: c for c in report.checks}


def test_checks_pass_on_linear_model():
    x, y, _ = toy_data(n=24, n_wrong=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no check may warn
        rep = evaluate(toy_model(), (x, y), [0.1, 0.3], attacks=[PGD(steps=5)])
    checks = _by_name(rep)
    assert set(checks) == {"randomness", "gradients", "large_eps", "more_steps", "loss_increases", "blackbox"}
    for name in ("randomness", "gradients", "large_eps", "more_steps", "loss_increases"):
        assert checks[name].status == "pass", (name, checks[name].detail)
    assert checks["large_eps"].value == 0.0  # every margin < 0.5: PGD at eps 0.5 breaks all
    assert all(isinstance(c.meaning, str) and c.meaning for c in rep.checks if c.status != "skipped")


def test_checks_catch_quantised_model():
    # round() inside the model: zero input gradients, PGD cannot move, accuracy stays up at a huge eps
    x, y, _margin = toy_data(n=24, n_wrong=0)
    with pytest.warns(UserWarning) as rec:  # the failed checks, and PGD's own zero-gradient warning
        rep = evaluate(toy_model(quantize=True), (x, y), [0.1, 0.3], attacks=[PGD(steps=5)])
    checks = _by_name(rep)
    assert checks["gradients"].status == "fail" and checks["gradients"].value == 1.0
    assert checks["loss_increases"].status == "fail"
    assert checks["large_eps"].status == "fail"
    messages = " ".join(str(w.message) for w in rec)
    assert "Useful input gradients" in messages and "masked" in messages
    # each failed check warns once, attributed to the line that called evaluate (not advlab's internals)
    failed = [w for w in rec if "gradient-masking check failed" in str(w.message)]
    assert len(failed) == sum(c.status == "fail" for c in rep.checks)
    assert {w.filename for w in failed} == {__file__}
    # and the masked model looks robust to PGD although the exact min-norm attack breaks it
    honest = evaluate(toy_model(quantize=True), (x, y), [0.1, 0.3], attacks=[MinNorm()], checks=False)
    assert rep.robust_accuracy() > honest.robust_accuracy()


def test_blackbox_stage_beating_whitebox_is_flagged():
    # A gradient-free attack (declared needs_gradients=False) that breaks what PGD could not: red flag.
    from dataclasses import dataclass

    from _evaltoy import ShiftA

    @dataclass(frozen=True)
    class FakeBlackBox(ShiftA):
        name = "fake-square"
        needs_gradients = False
        query_based = True

    x, y, _ = toy_data(n=24, n_wrong=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate(toy_model(quantize=True), (x, y), [0.3], attacks=[PGD(steps=5), FakeBlackBox()])
    bb = _by_name(rep)["blackbox"]
    assert bb.status == "fail" and bb.value >= 2


def test_random_model_check_fails_with_meaning():
    x, y, _ = toy_data(n=16, n_wrong=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate(toy_model(noisy=True), (x, y), [0.3], attacks=[PGD(steps=5)], eot_samples=3)
    rnd = _by_name(rep)["randomness"]
    assert rnd.status == "fail" and rnd.value > 0 and "EOT" in rnd.meaning


def test_checks_off():
    x, y, _ = toy_data(n=8, n_wrong=0)
    rep = evaluate(toy_model(), (x, y), [0.3], attacks=[PGD(steps=5)], checks=False)
    assert rep.checks == []
    assert torch.tensor(rep.examples["robust"]).shape == (8, 1)


class _Quantised(torch.nn.Module):
    """A fixed linear model on inputs rounded to quarters: zero input gradients, but a black-box attack works."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(10, 64, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.round(x * 4) / 4).reshape(x.shape[0], -1) @ self.w.T


def _masked_digits(n: int = 12):
    from sklearn.datasets import load_digits

    from advlab import Classifier

    x = torch.from_numpy(load_digits().images[:n] / 16.0).float().unsqueeze(1)
    clf = Classifier(_Quantised(), num_classes=10, input_shape=(1, 8, 8)).eval()
    with torch.no_grad():
        y = clf(x).argmax(1)  # its own predictions: clean accuracy 1
    return clf, x, y


@pytest.mark.skipif("square" not in __import__("advlab").attacks.ATTACKS, reason="Square not implemented yet")
def test_square_beating_pgd_is_flagged():
    from advlab.attacks import get_attack

    clf, x, y = _masked_digits()
    square = get_attack("square")(max_queries=200)
    with pytest.warns(UserWarning) as rec:  # the other failed checks and PGD's zero-gradient warning too
        rep = evaluate(clf, (x, y), [0.3], attacks=[PGD(steps=5), square])
    assert any("Black-box does not beat white-box" in str(w.message) for w in rec)
    bb = _by_name(rep)["blackbox"]
    assert bb.status == "fail"
    stages = rep.results[0].stages
    assert stages[1].attack == "square" and stages[1].n_broken == bb.value > stages[0].n_broken
    assert stages[1].queries_median is not None and 1 <= stages[1].queries_median <= 200
    # without Square in the cascade the check runs Square itself on what PGD left robust
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only_pgd = evaluate(clf, (x, y), [0.3], attacks=[PGD(steps=5)])
    assert _by_name(only_pgd)["blackbox"].status == "fail"
    assert only_pgd.robust_accuracy() > rep.robust_accuracy()
