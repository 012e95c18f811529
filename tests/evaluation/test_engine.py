"""The evaluation engine: cascade semantics, eps sweep, min-norm attacks, resume, errors, random models."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from _evaltoy import CALLS, CRASH, TAGS_A, TAGS_B, L2Only, MinNorm, ShiftA, ShiftB, in_tags, toy_data, toy_model

import advlab
from advlab.attacks import PGD
from advlab.evaluation import evaluate, wilson_interval

EPS = [0.05, 0.15, 0.3]
PGD5 = PGD(steps=5)


@pytest.fixture(autouse=True)
def _reset_counters():
    CALLS.clear()
    CRASH["after"] = None
    yield
    CRASH["after"] = None


def _numbers(report):
    d = report.to_dict()
    for r in d["results"]:
        for s in r["stages"]:
            s.pop("wall_time_s")
    return d["results"], d["examples"], d["clean_accuracy"]


def test_cascade_keeps_first_break_and_robust_is_neither():
    x, y, margin = toy_data()
    rep = evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA(), ShiftB()], checks=False, batch_size=7)
    a, b = in_tags(x, TAGS_A), in_tags(x, TAGS_B)
    correct = y == 1
    for i, e in enumerate(EPS):
        breakable = correct & (margin < e) & (a | b)
        expected_robust = correct & ~breakable
        got = torch.tensor([row[i] for row in rep.examples["robust"]])
        assert torch.equal(got, expected_robust)
        assert rep.results[i].robust_accuracy == pytest.approx(expected_robust.float().mean().item())
    # first breaker: A wherever A can, B only on B-only tags; first eps where margin < eps
    for j in range(x.shape[0]):
        if not correct[j]:
            assert rep.examples["broken_by"][j] == "clean"
            continue
        if not (margin[j] < EPS[-1] and (a[j] or b[j])):
            assert rep.examples["broken_by"][j] is None and rep.examples["broken_eps"][j] is None
            continue
        assert rep.examples["broken_by"][j] == ("shift-a" if a[j] else "shift-b")
        first_eps = min(e for e in EPS if margin[j] < e)
        assert rep.examples["broken_eps"][j] == first_eps
        # the worst case is the point found at the first eps: inside that ball and misclassified
        dist = (rep.x_adv[j] - x[j]).abs().max().item()
        assert dist <= first_eps + 1e-6
        assert rep.examples["pred_adv"][j] != int(y[j])
    # attacks ran only on still-robust points: stage (eps, B) saw what (eps, A) left
    for r in rep.results:
        assert r.stages[1].n_attacked == r.stages[0].n_attacked - r.stages[0].n_broken
        assert r.stages[-1].accuracy_after == pytest.approx(r.robust_accuracy)


def test_robust_accuracy_and_ci_match_flags():
    x, y, _ = toy_data(n=30, n_wrong=3)
    rep = evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False)
    flags = torch.tensor(rep.examples["robust"])
    for i, r in enumerate(rep.results):
        k = int(flags[:, i].sum())
        assert r.n_robust == k and r.robust_accuracy == pytest.approx(k / 30)
        lo, hi = wilson_interval(k, 30)
        assert (r.ci.low, r.ci.high) == pytest.approx((lo, hi)) and r.ci.method == "wilson"
        assert r.broken_by["clean"] == 3
        assert sum(r.broken_by.values()) + k == 30
    assert rep.clean_accuracy == pytest.approx(27 / 30)


def test_pgd_sweep_is_monotone_and_matches_closed_form():
    # On the linear toy model PGD is optimal: broken at eps iff margin < eps.
    x, y, margin = toy_data()
    eps = [0.02, 0.1, 0.2, 0.35]
    rep = evaluate(toy_model(), (x, y), eps, attacks=[PGD5], checks=False)
    accs = [r.robust_accuracy for r in rep.results]
    assert all(b <= a for a, b in itertools.pairwise(accs))
    for r in rep.results:
        expected = ((y == 1) & (margin >= r.eps)).float().mean().item()
        assert r.robust_accuracy == pytest.approx(expected)
        # norms of the successful perturbations: never above eps, and linf == the moved coordinate
        if r.perturbation["linf"].count:
            assert r.perturbation["linf"].max <= r.eps + 1e-6


def test_digits_sweep_monotone(softmax_model, digits):
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    rep = advlab.evaluate(softmax_model, (x, y), [0.02, 0.05, 0.1], attacks=[PGD5], checks=False)
    accs = [r.robust_accuracy for r in rep.results]
    assert all(b <= a for a, b in itertools.pairwise(accs))
    assert accs[0] <= rep.clean_accuracy
    # an independent recomputation: each stored worst case is misclassified and inside its ball
    with torch.no_grad():
        pred = softmax_model(rep.x_adv).argmax(1)
    for j, by in enumerate(rep.examples["broken_by"]):
        if by == "pgd":
            assert pred[j] != y[j]
            assert (rep.x_adv[j] - x[j]).abs().max() <= rep.examples["broken_eps"][j] + 1e-6


def test_minimum_norm_attack_runs_once_and_serves_every_eps():
    x, y, margin = toy_data()
    rep = evaluate(toy_model(), (x, y), EPS, attacks=[MinNorm()], checks=False, batch_size=100)
    assert CALLS["minnorm"] == 1
    for r in rep.results:
        expected = ((y == 1) & (margin + 1e-4 > r.eps)).float().mean().item()
        assert r.robust_accuracy == pytest.approx(expected)


def test_resume_after_kill_gives_identical_numbers(tmp_path):
    x, y, _ = toy_data()
    kwargs = dict(attacks=[ShiftA(), MinNorm(), PGD5, ShiftB()], checks=False, batch_size=8, seed=3)
    reference = evaluate(toy_model(), (x, y), EPS, **kwargs)
    reference_calls = CALLS["shift"]
    CALLS.clear()
    CRASH["after"] = 7  # dies inside ShiftB at the first eps, after the min-norm attack has run
    with pytest.raises(RuntimeError, match="simulated kill"):
        evaluate(toy_model(), (x, y), EPS, checkpoint_dir=tmp_path, **kwargs)
    assert (tmp_path / "state.safetensors").exists()
    CRASH["after"] = None
    CALLS.clear()
    resumed = evaluate(toy_model(), (x, y), EPS, checkpoint_dir=tmp_path, **kwargs)
    assert _numbers(resumed) == _numbers(reference)
    assert torch.equal(resumed.x_adv, reference.x_adv)
    assert "minnorm" not in CALLS  # its stored points served the later eps after the restart
    assert 7 + CALLS["shift"] == reference_calls  # finished batches were not redone


def test_resume_skips_done_work(tmp_path):
    x, y, _ = toy_data()
    evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    n = CALLS["shift"]
    again = evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    assert CALLS["shift"] == n  # nothing re-run
    assert again.results[-1].robust_accuracy < again.clean_accuracy


def test_checkpoint_of_other_config_refused(tmp_path):
    x, y, _ = toy_data()
    evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"another configuration \(differs in: eps\)"):
        evaluate(toy_model(), (x, y), [0.1, 0.2], attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"another configuration \(differs in: seed\)"):
        evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path, seed=1)
    rep = evaluate(
        toy_model(), (x, y), [0.1, 0.2], attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path, overwrite=True
    )
    assert rep.eps == [0.1, 0.2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attacks="strongest"), "attacks: expected one of"),
        (dict(attacks=["pgd", "pgdd"]), "unknown attack 'pgdd'.*Did you mean 'pgd'"),
        (dict(attacks=[L2Only()]), "does not support norm 'linf'"),
        (dict(attacks=[]), "empty"),
        (dict(norm="l3"), "norm: expected one of"),
        (dict(eps=[0.3, 0.1]), "strictly increasing"),
        (dict(eps=[]), "at least one"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_settings_fail_before_any_work(kwargs, match):
    x, y, _ = toy_data()
    args = dict(eps=EPS, attacks=[ShiftA()], checks=False)
    args.update(kwargs)
    eps = args.pop("eps")
    with pytest.raises(ValueError, match=match):
        evaluate(toy_model(), (x, y), eps, **args)
    assert CALLS.get("shift", 0) == 0


def test_bad_data_type():
    with pytest.raises(TypeError, match="data: expected"):
        evaluate(toy_model(), [1, 2, 3], 0.1, attacks=[ShiftA()], checks=False)


def test_same_seed_same_numbers(softmax_model, digits):
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    a = evaluate(softmax_model, (x, y), [0.05, 0.1], attacks=[PGD5], checks=False, seed=5)
    b = evaluate(softmax_model, (x, y), [0.05, 0.1], attacks=[PGD5], checks=False, seed=5)
    assert _numbers(a) == _numbers(b)


def test_random_model_gets_eot_and_leaves_global_rng_alone():
    x, y, margin = toy_data()
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="expectation over transformation"):
        rep = evaluate(toy_model(noisy=True), (x, y), [0.1, 0.3], attacks=[PGD5], checks=False, eot_samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert rep.randomized and rep.eot_samples == 4
    # noise 0.1 on a logit of slope 10: margins far from eps behave like the deterministic model
    robust = torch.tensor(rep.examples["robust"])[:, 1]
    far = (y == 1) & ((margin - 0.3).abs() > 0.05)
    assert torch.equal(robust[far], (margin[far] >= 0.3))
    # reproducible with the same seed although the model is random
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = evaluate(toy_model(noisy=True), (x, y), [0.1, 0.3], attacks=[PGD5], checks=False, eot_samples=4)
    assert _numbers(again) == _numbers(rep)


def test_checks_on_a_random_model_are_seeded_and_leave_global_rng_alone():
    x, y, _ = toy_data()
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = evaluate(toy_model(noisy=True), (x, y), [0.1, 0.3], attacks=[PGD5], eot_samples=3)
        runs.append([(c.name, c.status, c.value, c.detail) for c in rep.checks])
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1]
    assert [name for name, *_ in runs[0]] == [
        "randomness",
        "gradients",
        "large_eps",
        "more_steps",
        "loss_increases",
        "blackbox",
    ]
    assert runs[0][0][1] == "fail"  # the randomness check names the noise


def test_checkpoint_file_that_is_not_a_checkpoint_is_refused_clearly(tmp_path):
    x, y, _ = toy_data()
    (tmp_path / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*state.safetensors is not a readable advlab checkpoint"):
        evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    assert CALLS.get("shift", 0) == 0  # refused before any work


def test_checkpoint_of_an_older_format_is_refused_then_overwritten(tmp_path):
    from safetensors.torch import save_file

    x, y, _ = toy_data()
    save_file({"correct": torch.zeros(3, dtype=torch.uint8)}, str(tmp_path / "state.safetensors"), {"state": "{}"})
    with pytest.raises(ValueError, match=r"another configuration \(differs in: .*format"):
        evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path)
    fresh = evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False)
    over = evaluate(toy_model(), (x, y), EPS, attacks=[ShiftA()], checks=False, checkpoint_dir=tmp_path, overwrite=True)
    assert _numbers(over) == _numbers(fresh)  # started over: the numbers of a run without checkpoint


def test_progress_bar_does_not_change_the_numbers():
    x, y, _ = toy_data()
    kwargs = dict(attacks=[ShiftA(), MinNorm(), ShiftB()], checks=False, batch_size=8)
    quiet = evaluate(toy_model(), (x, y), EPS, progress=False, **kwargs)
    shown = evaluate(toy_model(), (x, y), EPS, progress=True, **kwargs)
    assert _numbers(shown) == _numbers(quiet)
