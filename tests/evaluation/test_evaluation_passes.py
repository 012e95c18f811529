"""What an evaluation spends, in forward and backward passes of the model: hand counts per stage, the clean pass, the
checks, resumed runs, random models and oracles (the two-process sum is in tests/distributed)."""

from __future__ import annotations

import pytest
import torch
from _evaltoy import CRASH, MarginModel, ShiftB, toy_data, toy_model

from advlab import Classifier
from advlab.attacks import FGSM, PGD, Square
from advlab.evaluation import EvaluationReport, evaluate
from advlab.evaluation.checks import CHECK_STEPS, MORE_STEPS_FACTOR
from advlab.evaluation.engine import RANDOMNESS_PROBE
from advlab.oracles import TorchOracle
from advlab.passes import Passes, count_passes

EPS = [0.05, 0.15, 0.3]
BOUNDARY = 2
"""Forward passes per example of the attack boundary: its look at the clean batch and the success check."""
JUDGE = 1
"""Forward passes per example of the evaluation's verification of the points an attack returned."""


@pytest.fixture(autouse=True)
def _no_crash():
    CRASH["after"] = None
    yield
    CRASH["after"] = None


def _clean_passes(n: int) -> Passes:
    """The clean predictions, the input-gradient probe (one example) and the randomness probe (two calls)."""
    return Passes(n + 1 + 2 * min(n, RANDOMNESS_PROBE), 0)


def _pgd_check(m: int, steps: int) -> Passes:
    """PGD with one restart (so the success check reuses its final forward) on ``m`` examples, with the
    verification of its points (a check's, or a one-attack cascade's stage)."""
    return Passes(m * (BOUNDARY - 1 + steps + 1 + JUDGE), m * steps)


def _as_pair(p: Passes) -> tuple[int, int]:
    return p.forward, p.backward


def test_one_attack_cascade_stages_match_the_hand_count():
    """FGSM: per example still robust, one forward and one backward, the boundary's two forwards and the check."""
    x, y, margin = toy_data()
    rep = evaluate(toy_model(), (x, y), EPS, attacks=[FGSM()], checks=False, batch_size=8, progress=False)
    correct = y == 1
    for i, r in enumerate(rep.results):
        attacked = int((correct & (margin > (EPS[i - 1] if i else 0))).sum())  # FGSM breaks margin < eps exactly
        (s,) = r.stages
        assert s.n_attacked == attacked
        assert (s.forward_passes, s.backward_passes) == ((1 + BOUNDARY + JUDGE) * attacked, attacked)
        assert (s.forward_per_example, s.backward_per_example) == (4.0, 1.0)
    p = rep.passes
    assert p is not None
    assert p.clean == _clean_passes(len(x))
    assert p.attacks == sum(
        (Passes(s.forward_passes, s.backward_passes) for r in rep.results for s in r.stages), Passes()
    )
    assert p.checks == Passes() and p.checks_by_name == {}
    assert p.total == p.clean + p.attacks
    assert p.forward_per_example == p.total.forward / len(x)


def test_the_total_is_what_an_independent_counter_on_the_model_counted():
    """Everything the evaluation spent (probes, clean pass, stages, checks) is in the report's total, and the
    checks' PGD runs match their hand count."""
    x, y, _ = toy_data()
    net, counter = count_passes(MarginModel())
    clf = Classifier(net, num_classes=2, input_shape=(2,)).eval()
    rep = evaluate(clf, (x, y), EPS, attacks=[PGD(steps=5)], batch_size=16, progress=False)
    assert rep.passes is not None and rep.passes.total == counter.passes()
    m = int((y == 1).sum())  # every correct example (fewer than the checks' 100)
    by = rep.passes.checks_by_name
    assert by["gradients"] == Passes(m, m)
    assert by["large_eps"] == _pgd_check(m, CHECK_STEPS)
    assert by["more_steps"] == _pgd_check(m, CHECK_STEPS) + _pgd_check(m, CHECK_STEPS * MORE_STEPS_FACTOR)
    assert by["blackbox"].backward == 0
    for r in rep.results:
        (s,) = r.stages
        assert (s.forward_passes, s.backward_passes) == _as_pair(_pgd_check(s.n_attacked, 5))


def test_wrapping_the_model_changes_no_number():
    x, y, _ = toy_data()
    kwargs = dict(attacks=[PGD(steps=5)], checks=False, batch_size=16, progress=False)
    plain = evaluate(toy_model(), (x, y), EPS, **kwargs)
    counted, _ = count_passes(toy_model())
    wrapped = evaluate(counted, (x, y), EPS, **kwargs)
    assert torch.equal(plain.x_adv, wrapped.x_adv)
    assert [r.robust_accuracy for r in plain.results] == [r.robust_accuracy for r in wrapped.results]
    assert plain.passes == wrapped.passes


def test_a_resumed_evaluation_keeps_its_counts(tmp_path):
    x, y, _ = toy_data()
    kwargs = dict(attacks=[PGD(steps=5), ShiftB()], checks=False, batch_size=8, seed=3, progress=False)
    reference = evaluate(toy_model(), (x, y), EPS, **kwargs)
    CRASH["after"] = 4  # dies in ShiftB's fifth batch, at the second eps
    with pytest.raises(RuntimeError, match="simulated kill"):
        evaluate(toy_model(), (x, y), EPS, checkpoint_dir=tmp_path, **kwargs)
    CRASH["after"] = None
    resumed = evaluate(toy_model(), (x, y), EPS, checkpoint_dir=tmp_path, **kwargs)
    assert resumed.passes == reference.passes
    stages = [[(s.forward_passes, s.backward_passes) for s in r.stages] for r in resumed.results]
    assert stages == [[(s.forward_passes, s.backward_passes) for s in r.stages] for r in reference.results]
    again = evaluate(toy_model(), (x, y), EPS, checkpoint_dir=tmp_path, **kwargs)  # finished: nothing runs
    assert again.passes == reference.passes


def test_a_random_model_counts_every_draw_of_its_eot():
    """EOT with 3 draws: the attack's passes (clean look, gradient step, success check) three times each; the
    verification is one draw of the model, as reported."""
    x, y, _ = toy_data()
    with pytest.warns(UserWarning, match="random"):
        rep = evaluate(toy_model(noisy=True), (x, y), [0.15], attacks=[FGSM()], checks=False, eot_samples=3)
    (s,) = rep.results[0].stages
    assert (s.forward_passes, s.backward_passes) == (s.n_attacked * (3 * (1 + BOUNDARY) + JUDGE), 3 * s.n_attacked)


def test_an_oracle_counts_its_queries_and_no_backward_pass():
    x, y, _ = toy_data()
    oracle = TorchOracle(toy_model(), mode="scores")
    rep = evaluate(oracle, (x, y), [0.15], attacks=[Square(max_queries=30)], batch_size=16, progress=False)
    assert rep.passes is not None
    assert rep.passes.total == Passes(oracle.queries, 0)
    assert rep.passes.checks == Passes()  # the checks need gradients: skipped


def test_the_report_keeps_the_passes_in_json():
    x, y, _ = toy_data()
    rep = evaluate(toy_model(), (x, y), EPS, attacks=[FGSM()], checks=False, progress=False)
    d = rep.to_dict()
    assert d["passes"]["total"] == rep.passes.total.to_dict()
    assert d["results"][0]["stages"][0]["forward_passes"] == rep.results[0].stages[0].forward_passes
    back = EvaluationReport.from_dict(d)
    assert back.passes == rep.passes and back.results == rep.results


def test_checks_the_cascade_answered_run_no_attack():
    """When the cascade broke every check example at the largest eps, the large-eps check has its answer (each
    example has an adversarial point inside the larger ball) and so has the more-steps check (nothing robust is
    left for more steps to save): neither runs PGD. The gradient check still runs; with one example left robust
    (a smaller eps) both run in full."""
    x, y, margin = toy_data()
    eps = float(margin[y == 1].max()) + 0.02  # PGD breaks every margin < eps; the large eps is 0.5
    net, counter = count_passes(MarginModel())
    clf = Classifier(net, num_classes=2, input_shape=(2,)).eval()
    rep = evaluate(clf, (x, y), eps, attacks=[PGD(steps=5)], batch_size=16, progress=False)
    assert rep.robust_accuracy() == 0.0 and rep.passes is not None and rep.passes.total == counter.passes()
    by = rep.passes.checks_by_name
    assert by["large_eps"] == by["more_steps"] == Passes() and by["gradients"].backward > 0
    status = {c.name: c.status for c in rep.checks}
    assert status["large_eps"] == status["more_steps"] == "pass" and status["loss_increases"] == "skipped"
    left_one = float(margin[y == 1].max()) - 0.005  # the example with the largest margin stays robust
    rep = evaluate(toy_model(), (x, y), left_one, attacks=[PGD(steps=5)], batch_size=16, progress=False)
    assert rep.results[-1].n_robust == 1
    m = int((y == 1).sum())
    assert rep.passes is not None and rep.passes.checks_by_name["large_eps"] == _pgd_check(m, CHECK_STEPS)
    assert {c.name: c.status for c in rep.checks}["loss_increases"] == "pass"
