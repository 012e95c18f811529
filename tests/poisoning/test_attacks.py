"""BadNets, Blend and label flipping: what the poisons are, and what they do to a model trained on them."""

from __future__ import annotations

import functools

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from advlab.poisoning import PoisonedData, Trigger, attack_success_rate
from advlab.poisoning.badnets import badnets, eligible_rows
from advlab.poisoning.blend import blend
from advlab.poisoning.experiment import PoisonExperiment
from advlab.poisoning.label_flip import adversarial_label_flip, fit_logistic, label_flip
from advlab.poisoning.training import Training, measure


def _training(epochs: int = 5) -> Training:
    return Training((1, 8, 8), 10, arch="mlp", epochs=epochs, lr=3e-3, batch_size=64, mean=(0.3,), std=(0.4,))


@pytest.fixture(scope="module")
def badnets_run(digits):
    exp = PoisonExperiment(
        (digits["x_train"], digits["y_train"]),
        (digits["x_test"], digits["y_test"]),
        functools.partial(badnets, rate=0.1, target=0, seed=0),
        _training(),
    )
    return exp.run()


def test_badnets_all_to_one_poisons_exactly_rate_of_the_non_target_rows(digits) -> None:
    x, y = digits["x_train"], digits["y_train"]
    x0, y0 = x.clone(), y.clone()
    p = badnets(x, y, rate=0.05, target=3, seed=1)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # the clean data is untouched
    assert p.n_poisons == round(0.05 * len(y))
    assert bool((p.original_labels != 3).all()) and bool((p.y[p.indices] == 3).all())
    assert torch.equal(p.original_labels, y[p.indices])
    patch = p.x[p.indices][:, :, -3:, -3:]  # the default 3x3 checkerboard, bottom-right
    assert torch.equal(patch[:, 0], Trigger.patch((1, 8, 8)).pattern[0, -3:, -3:].expand(p.n_poisons, 3, 3))
    clean = ~p.is_poison()
    assert torch.equal(p.x[clean], x[clean]) and torch.equal(p.y[clean], y[clean])
    assert set(eligible_rows(y, 3).tolist()) == set((y != 3).nonzero().flatten().tolist())


def test_badnets_all_to_all_relabels_to_the_next_class(digits) -> None:
    p = badnets(digits["x_train"], digits["y_train"], rate=0.1, target=None, seed=0)
    assert torch.equal(p.y[p.indices], (p.original_labels + 1) % 10)
    assert p.target is None and p.settings["mode"] == "all-to-all"


def test_badnets_backdoors_the_poisoned_model_and_not_the_clean_one(badnets_run) -> None:
    m = badnets_run.metrics_
    assert m.attack_success_rate >= 0.9  # the backdoor works
    assert m.baseline_attack_success_rate <= 0.2  # oracle: the trigger alone does not make a clean model say 0
    assert m.clean_accuracy >= 0.85 and m.accuracy_drop <= 0.05
    assert m.n_poisons == badnets_run.poisoned_.n_poisons and m.poison_rate == pytest.approx(0.1, abs=0.01)


def test_attack_success_counts_only_non_target_test_inputs(badnets_run, digits) -> None:
    p, model = badnets_run.poisoned_, badnets_run.model_
    x, y = digits["x_test"], digits["y_test"]
    keep = y != 0
    pred = model(p.trigger.apply(x[keep])).argmax(1)
    assert attack_success_rate(model, x, y, p.trigger, 0) == pytest.approx(float((pred == 0).float().mean()))


def test_blend_stamps_the_convex_combination_with_alpha(digits) -> None:
    x, y = digits["x_train"], digits["y_train"]
    p = blend(x, y, rate=0.1, target=1, alpha=0.2, seed=0)
    rows = p.indices
    assert torch.allclose(p.x[rows], 0.8 * x[rows] + 0.2 * p.trigger.pattern)
    assert bool((p.y[rows] == 1).all()) and bool((p.original_labels != 1).all())
    assert torch.equal(blend(x, y, rate=0.1, target=1, seed=0).x, p.x)


def test_manifest_round_trip_keeps_everything(tmp_path, digits) -> None:
    p = badnets(digits["x_train"], digits["y_train"], rate=0.05, target=2, seed=4)
    q = PoisonedData.load(p.save(tmp_path / "p"))
    for name in ("x", "y", "indices", "original_labels"):
        assert torch.equal(getattr(p, name), getattr(q, name))
    assert torch.equal(p.trigger.pattern, q.trigger.pattern) and torch.equal(p.trigger.mask, q.trigger.mask)
    assert q.manifest() == p.manifest()


def test_label_flip_flips_exactly_the_count_and_every_label_changes(digits) -> None:
    x, y = digits["x_train"], digits["y_train"]
    p = label_flip(x, y, rate=0.1, seed=0)
    assert p.n_poisons == round(0.1 * len(y))
    assert int((p.y != y).sum()) == p.n_poisons and bool((p.y[p.indices] != p.original_labels).all())
    assert torch.equal(p.x, x)
    q = label_flip(x, y, rate=0.05, source=[3, 5], target=8, seed=1)
    assert bool(torch.isin(q.original_labels, torch.tensor([3, 5])).all()) and bool((q.y[q.indices] == 8).all())


def _error(poisoned: PoisonedData, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    model = fit_logistic(poisoned.x, poisoned.y)
    return 1.0 - float(
        (torch.from_numpy(model.predict(x_test.reshape(len(x_test), -1).numpy())) == y_test).float().mean()
    )


def test_adversarial_flips_hurt_a_linear_model_more_than_random_flips_of_the_same_count(digits_flat) -> None:
    x, y = digits_flat["x_train"][:900], digits_flat["y_train"][:900]
    x_val, y_val = digits_flat["x_train"][900:1300], digits_flat["y_train"][900:1300]
    x_test, y_test = digits_flat["x_test"], digits_flat["y_test"]
    state = torch.random.get_rng_state()
    adversarial = adversarial_label_flip(x, y, x_val, y_val, rate=0.1, rounds=3, trials=3, seed=0)
    assert adversarial.n_poisons == 90 and bool(
        (adversarial.y[adversarial.indices] != adversarial.original_labels).all()
    )
    assert torch.equal(state, torch.random.get_rng_state())  # draws from its own seeded generator only
    random_errors = [_error(label_flip(x, y, rate=0.1, seed=s), x_test, y_test) for s in range(3)]
    assert _error(adversarial, x_test, y_test) > max(random_errors)  # held-out test set, not the validation set
    trace = adversarial.extra["validation_accuracy"]
    assert trace[-1] < trace[0]


def test_adversarial_flips_accept_any_sklearn_learner_and_a_torch_trainer(digits_flat, digits) -> None:
    x, y = digits_flat["x_train"][:300], digits_flat["y_train"][:300]
    fit = lambda a, b: LogisticRegression(max_iter=200).fit(a.numpy(), b.numpy())  # noqa: E731
    p = adversarial_label_flip(x, y, x[:100], y[:100], rate=0.02, fit=fit, rounds=1, trials=1)
    assert p.n_poisons == 6
    xi, yi = digits["x_train"][:300], digits["y_train"][:300]
    q = adversarial_label_flip(xi, yi, xi[:100], yi[:100], rate=0.02, fit=_training(epochs=1), rounds=1, trials=1)
    assert q.n_poisons == 6 and bool((q.y[q.indices] != q.original_labels).all())


def test_measure_without_a_trigger_reports_the_test_error_increase(digits) -> None:
    x, y = digits["x_train"], digits["y_train"]
    p = label_flip(x, y, rate=0.3, seed=0)
    training = _training(epochs=2)
    m = measure(training(p.x, p.y), digits["x_test"], digits["y_test"], p, baseline=training(x, y))
    assert m.attack_success_rate is None
    assert m.to_dict()["test_error_increase"] == pytest.approx(m.baseline_accuracy - m.clean_accuracy)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x, y: badnets(x, y, rate=0.0), "rate"),
        (lambda x, y: badnets(x, y, rate=1.5), "rate"),
        (lambda x, y: badnets(x, y, target=10), "target"),
        (lambda x, y: badnets(x, y, trigger=Trigger.patch((3, 8, 8))), "channel"),
        (lambda x, y: badnets(x, None), "labelled"),
        (lambda x, y: blend(x, y, pattern=torch.rand(3, 8, 8)), "channel"),
        (lambda x, y: label_flip(x, y, rate=1.0, target=0), "rate"),
        (lambda x, y: label_flip(x, y, source=12), "source"),
        (lambda x, y: label_flip(x, None), "labelled"),
    ],
)
def test_bad_input_is_refused_naming_the_option(call, match: str, digits) -> None:
    with pytest.raises(ValueError, match=match):
        call(digits["x_train"][:200], digits["y_train"][:200])
