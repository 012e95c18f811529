"""``evaluate`` on models without gradients (oracles, modules autograd cannot trace): gradient attacks are refused
before any query with the list of the attacks that work on oracles, and the gradient checks are skipped with a note."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab import Classifier
from advlab.attacks import list_attacks
from advlab.evaluation import evaluate
from advlab.oracles import CallableOracle, TorchOracle, as_module

D, C = 16, 3


def _model(seed: int = 0) -> Classifier:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D, C)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(C, D, generator=g))
        lin.bias.zero_()
    return Classifier(lin, num_classes=C, input_shape=(D,)).eval()


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = _model()(x).argmax(1)
    return x, y


class Untraceable(nn.Module):
    """A model reached through numpy, as a wrapper around a remote or non-torch model would be."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.from_numpy(self.inner(torch.from_numpy(x.detach().cpu().numpy())).numpy())


@pytest.mark.parametrize("preset", ["fast", "standard", "strong"])
def test_gradient_attacks_are_refused_before_any_query_with_the_attacks_that_work(preset):
    oracle = TorchOracle(_model(), mode="scores")
    with pytest.raises(ValueError, match="no input gradients") as info:
        evaluate(oracle, _data(), 0.1, attacks=preset, progress=False)
    assert oracle.queries == 0
    message = str(info.value)
    usable = list_attacks(norm="linf", needs_gradients=False)
    assert usable and "square" in usable and "pgd" not in usable
    listed = message.split("work on oracles (linf): ", 1)[1].split(";", 1)[0].split(", ")
    assert sorted(listed) == sorted(usable)  # every attack without gradients for the norm, and only those
    assert "'apgd-ce'" in message or "'pgd'" in message


def test_l2_lists_the_decision_based_attacks_too():
    with pytest.raises(ValueError) as info:
        evaluate(TorchOracle(_model()), _data(), 0.5, norm="l2", attacks=["pgd", "square"], progress=False)
    listed = str(info.value).split("work on oracles (l2): ", 1)[1].split(";", 1)[0].split(", ")
    assert sorted(listed) == sorted(list_attacks(norm="l2", needs_gradients=False))
    assert "'pgd'" in str(info.value) and "'square'" not in str(info.value).split("so ", 1)[1].split(" cannot")[0]


def _check_report(report, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> None:
    """Gradient checks skipped with the note; randomness run; every broken example really fooled the model."""
    status = {c.name: c.status for c in report.checks}
    assert status == {
        "randomness": "pass",
        "gradients": "skipped",
        "large_eps": "skipped",
        "more_steps": "skipped",
        "loss_increases": "skipped",
        "blackbox": "skipped",
    }
    assert all("no input gradients" in c.detail for c in report.checks if c.status == "skipped")
    assert not report.failed_checks
    robust = torch.tensor(report.examples["robust"])[:, -1]
    with torch.no_grad():
        fooled = model(report.x_adv).argmax(1) != y
    assert torch.equal(~robust, fooled)  # the report's broken examples are exactly the ones the model gets wrong
    assert (report.x_adv - x).abs().max() <= report.eps[-1] + 1e-6
    assert report.robust_accuracy() < 1.0


def test_oracle_evaluation_runs_query_attacks_and_skips_the_gradient_checks():
    x, y = _data()
    oracle = TorchOracle(_model(), mode="scores", budget=400_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no failed check, no random-model warning
        report = evaluate(oracle, (x, y), [0.1, 0.3], attacks=["square"], progress=False)
    _check_report(report, _model(), x, y)
    assert oracle.queries > 0 and report.model == "TorchOracle"
    stages = report.results[-1].stages
    assert stages[0].queries_mean is not None


def test_a_module_autograd_cannot_trace_is_treated_like_an_oracle():
    x, y = _data()
    with pytest.raises(ValueError, match="no input gradients"):
        evaluate(Untraceable().eval(), (x, y), 0.3, attacks="fast", progress=False)
    report = evaluate(Untraceable().eval(), (x, y), 0.3, attacks=["square"], progress=False)
    _check_report(report, _model(), x, y)


def test_a_model_with_gradients_still_gets_every_check():
    x, y = _data()
    report = evaluate(_model(), (x, y), 0.3, attacks=["square"], progress=False)
    assert {c.name: c.status for c in report.checks}["gradients"] == "pass"
    assert {c.status for c in report.checks if c.name in ("large_eps", "more_steps")} == {"pass"}
    assert not any("no input gradients" in c.detail for c in report.checks)


def test_a_random_oracle_is_reported_without_eot():
    x, y = _data()
    model = _model()
    g = torch.Generator().manual_seed(5)

    def noisy(batch):
        with torch.no_grad():
            p = torch.softmax(model(torch.as_tensor(batch)), 1)
        return (p + 0.01 * torch.rand(p.shape, generator=g)).div(1.03).numpy()

    oracle = CallableOracle(noisy, "scores", num_classes=C, input_shape=(D,))
    with pytest.warns(UserWarning, match="answers change between two identical queries"):
        report = evaluate(oracle, (x, y), 0.3, attacks=["square"], progress=False)
    randomness = next(c for c in report.checks if c.name == "randomness")
    assert randomness.status == "fail" and "not averaged" in randomness.detail
    assert report.randomized and report.eot_samples is None


def test_the_checkpoint_tells_two_oracles_apart(tmp_path):
    x, y = _data()
    evaluate(
        as_module(TorchOracle(_model(0))), (x, y), 0.1, attacks=["square"], checkpoint_dir=tmp_path, progress=False
    )
    with pytest.raises(ValueError, match="model_sha256"):
        evaluate(TorchOracle(_model(1)), (x, y), 0.1, attacks=["square"], checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="model_sha256"):  # the same model behind a labels-only oracle
        evaluate(TorchOracle(_model(0), mode="labels"), (x, y), 0.1, attacks=["hopskipjump"], checkpoint_dir=tmp_path)


def test_a_labels_only_oracle_refuses_score_attacks_before_any_query():
    """Square reads scores: on an oracle that reveals labels only it is refused up front, naming the decision-based
    attacks (from the registry's needs_scores flag), and no query is spent."""
    oracle = TorchOracle(_model(), mode="labels")
    x, y = _data()
    with pytest.raises(ValueError, match="reveals only labels.*'square'") as exc:
        evaluate(oracle, (x, y), 0.1, attacks=["square"], checks=False)
    for name in list_attacks(norm="linf", needs_scores=False):
        assert name in str(exc.value)
    assert oracle.queries <= 2  # the probe of the model's class count, nothing attacked
    report = evaluate(oracle, (x, y), 0.1, attacks=["hopskipjump"], checks=False)
    assert 0.0 <= report.robust_accuracy(0.1) <= report.clean_accuracy


def test_every_attack_takes_an_oracle_directly():
    """``square(oracle, ...)`` works like ``spsa(oracle, ...)``: the attack boundary wraps an oracle itself."""
    from advlab import ThreatModel
    from advlab.attacks import square

    x, y = _data(8)
    oracle = TorchOracle(_model(), mode="scores")
    direct = square(oracle, x, y, ThreatModel("linf", 0.1), max_queries=50, generator=0)
    wrapped = square(
        as_module(TorchOracle(_model(), mode="scores")), x, y, ThreatModel("linf", 0.1), max_queries=50, generator=0
    )
    assert torch.equal(torch.as_tensor(direct.x_adv), torch.as_tensor(wrapped.x_adv))
    assert oracle.queries > 0
