"""Per-example randomness: given an ExampleRNG, an example's result does not depend on the rest of its batch.

Every stochastic attack of the registry is run on a batch, on the same examples in another order and on single
examples; each example must come out with the same point (and query count) every time. The model computes each
row on its own in float64 (``rowwise_mlp_model``): with ``nn.Linear`` CPU GEMM may round a row differently for
another batch size, which would be the model's doing, not the attack's.
"""

from __future__ import annotations

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import make_attack
from advlab.attacks.base import attack_in_batches
from advlab.attacks.registry import ATTACKS
from advlab.attacks.square import FocusPoint, Square, focus_selection, square, square_from_focus, square_to_focus
from advlab.passes import count_passes
from advlab.rng import ExampleRNG

# small settings per attack (the defaults take seconds on every call)
QUICK = {
    "pgd": {"steps": 8, "restarts": 3},
    "apgd": {"steps": 12, "restarts": 2},
    "apgd-t": {"steps": 8, "n_target_classes": 3, "restarts": 2},
    "rfgsm": {},
    "difgsm": {"steps": 5},
    "tifgsm": {"steps": 5},
    "vmifgsm": {"steps": 3, "samples": 4},
    "vnifgsm": {"steps": 3, "samples": 4},
    "square": {"max_queries": 120, "restarts": 2},
    "spsa": {"steps": 5, "n_samples": 8},
    "nes": {"steps": 5, "n_samples": 8},
    "boundary": {"steps": 40},
    "hopskipjump": {"steps": 3, "init_num_evals": 10, "max_num_evals": 30},
}
EPS = {"linf": 0.08, "l2": 0.6, "l1": 3.0}
WIDE = {"boundary": 2.5, "hopskipjump": 2.5}  # the decision-based attacks: eps only judges their distance
STOCHASTIC = [
    (name, norm) for name, cls in sorted(ATTACKS.items()) if cls.stochastic for norm in cls.norms if norm != "l0"
]


def test_every_stochastic_attack_has_quick_settings():
    assert {name for name, _ in STOCHASTIC} <= set(QUICK), "add the new stochastic attack to QUICK"


@pytest.mark.parametrize("name, norm", STOCHASTIC)
def test_an_examples_result_does_not_depend_on_its_batch(name, norm, rowwise_mlp_model, digits):
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    ids = torch.arange(24) * 1000 + 17
    threat = ThreatModel(norm, EPS[norm] * WIDE.get(name, 1.0))
    attack = make_attack(name, norm=norm, **QUICK[name])

    def run(rows):
        return attack(rowwise_mlp_model, x[rows], y[rows], threat, generator=ExampleRNG(4, "keyed", ids[rows]))

    whole = run(torch.arange(24))
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(2))
    shuffled = run(perm)
    assert torch.equal(shuffled.x_adv, whole.x_adv[perm])
    assert torch.equal(shuffled.success, whole.success[perm])
    for j in (0, 5, 23):
        alone = run(torch.tensor([j]))
        assert torch.equal(alone.x_adv[0], whole.x_adv[j]), f"{name}: example {j} alone"
        if whole.queries is not None:
            assert int(alone.queries[0]) == int(whole.queries[j])
    # the streams matter: another seed moves some example elsewhere (the attack does draw from them)
    other = attack(rowwise_mlp_model, x, y, threat, generator=ExampleRNG(5, "keyed", ids))
    assert not torch.equal(other.x_adv, whole.x_adv)


def test_apgd_keeps_each_examples_first_success_as_it_would_alone(rowwise_mlp_model, digits):
    """With one batch stream APGD stops when every example has succeeded, keeping each one's last successful
    iterate; per-example streams keep the first, where the example would stop alone."""
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    threat = ThreatModel("linf", 0.15)
    ids = torch.arange(24)
    apgd = make_attack("apgd", steps=20)
    batch = apgd(rowwise_mlp_model, x, y, threat, generator=ExampleRNG(0, "a", ids))
    assert bool(batch.success.all())  # everyone succeeds, at different steps
    for j in range(24):
        alone = apgd(
            rowwise_mlp_model, x[j : j + 1], y[j : j + 1], threat, generator=ExampleRNG(0, "a", ids[j : j + 1])
        )
        assert torch.equal(alone.x_adv[0], batch.x_adv[j])


@pytest.mark.parametrize("name", ["apgd", "apgd-t"])
def test_apgd_spends_no_pass_on_an_example_that_succeeded(name, rowwise_mlp_model, digits):
    """With per-example streams an example leaves the batch at its first success: the batch spends, per example,
    the backward passes the example spends alone (where the run stops when it succeeds), and each point is the
    one it gets alone. With one batch stream every example runs until the whole batch has succeeded."""
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    threat, ids = ThreatModel("linf", 0.1), torch.arange(24)
    attack = make_attack(name, steps=20, **({"n_target_classes": 2} if name == "apgd-t" else {}))
    model, counter = count_passes(rowwise_mlp_model)  # the session's model may count already: differences only
    start = counter.passes().backward
    batch = attack(model, x, y, threat, generator=ExampleRNG(0, "a", ids))
    spent = counter.passes().backward - start
    assert 0 < int(batch.success.sum()) < 24  # some succeed (at different steps), some never do
    alone_spent = 0
    for j in range(24):
        before = counter.passes().backward
        alone = attack(model, x[j : j + 1], y[j : j + 1], threat, generator=ExampleRNG(0, "a", ids[j : j + 1]))
        alone_spent += counter.passes().backward - before
        assert torch.equal(alone.x_adv[0], batch.x_adv[j])
    assert spent == alone_spent
    before = counter.passes().backward
    attack(model, x, y, threat, generator=torch.Generator().manual_seed(0))
    assert counter.passes().backward - before > spent


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.25)])
def test_square_focus_over_batches_equals_one_call(norm, eps, rowwise_mlp_model, digits):
    """square_to_focus on each batch, focus_selection over all of them, square_from_focus: one call's outcome."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    ids = torch.arange(90) * 7 + 3
    threat = ThreatModel(norm, eps)
    config = Square(max_queries=120, focus=0.25, focus_after=25, restarts=2)
    one = config(rowwise_mlp_model, x, y, threat, generator=ExampleRNG(1, "sq", ids))
    batches = list(torch.split(torch.randperm(90, generator=torch.Generator().manual_seed(0)), 25))
    points = []
    for rows in batches:
        _, point = square_to_focus(
            config, rowwise_mlp_model, x[rows], y[rows], threat, generator=ExampleRNG(1, "sq", ids[rows])
        )
        points.append(point)
    order = torch.cat(batches)
    keep = focus_selection(FocusPoint.cat(points), config.focus, ids[order])
    x_adv, queries = torch.empty_like(x), torch.empty(90, dtype=torch.int64)
    start = 0
    for rows, point in zip(batches, points, strict=True):
        mine = keep[start : start + rows.numel()]
        start += rows.numel()
        final = square_from_focus(
            config, rowwise_mlp_model, x[rows], y[rows], threat, point, mine, generator=ExampleRNG(1, "sq", ids[rows])
        )
        x_adv[rows], queries[rows] = final.x_adv, final.queries
    assert torch.equal(x_adv, one.x_adv) and torch.equal(queries, one.queries)
    # the focus stopped some examples at the focus point and let others go on
    assert (
        int((one.queries == 1 + config.focus_after).sum()) > 0 and int((one.queries > 1 + config.focus_after).sum()) > 0
    )


def test_focus_selection_breaks_ties_by_id_not_position():
    loss = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 0.5])
    point = FocusPoint(
        x_best=torch.zeros(6, 2),
        best_loss=loss,
        fooled=torch.zeros(6, dtype=torch.bool),
        entered=torch.ones(6, dtype=torch.bool),
        queries=torch.ones(6, dtype=torch.int64),
    )
    ids = torch.tensor([10, 50, 20, 30, 40, 60])
    keep = focus_selection(point, 0.3, ids)  # ceil(0.3 * 6) = 2 of the three losses of 3: ids 20 and 40
    assert keep.tolist() == [False, False, True, False, True, False]
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    assert torch.equal(focus_selection(point.rows(perm), 0.3, ids[perm]), keep[perm])


def test_square_focus_in_one_batch_is_unchanged_by_keyed_streams(rowwise_mlp_model, digits):
    """square(..., focus) on one batch still ranks within the batch: the documented single-call behaviour."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    res = square(
        rowwise_mlp_model, x, y, ThreatModel("linf", 0.03), max_queries=120, focus=0.25, focus_after=25,
        generator=ExampleRNG(0, "s", torch.arange(90)),
    )  # fmt: skip
    clean_ok = rowwise_mlp_model(x).argmax(1) == y
    went_on = clean_ok & (res.queries > 1 + 25)
    assert int(went_on.sum()) == -(-int(clean_ok.sum()) // 4)  # ceil(focus * started), none fooled before it


def test_an_example_rng_for_another_batch_is_refused(rowwise_mlp_model, digits):
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    with pytest.raises(ValueError, match="generator: an ExampleRNG with 5 streams for a batch of 8"):
        make_attack("pgd", steps=2)(
            rowwise_mlp_model, x, y, ThreatModel("linf", 0.1), generator=ExampleRNG(0, "s", torch.arange(5))
        )
    with pytest.raises(ValueError, match="generator: an ExampleRNG with 5 streams"):
        make_attack("square", max_queries=5)(
            rowwise_mlp_model, x, y, ThreatModel("linf", 0.1), generator=ExampleRNG(0, "s", torch.arange(5))
        )


def test_attack_in_batches_does_not_depend_on_the_batch_size(rowwise_mlp_model, digits):
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    pgd = make_attack("pgd", steps=5, restarts=2)
    threat = ThreatModel("linf", 0.08)
    a = attack_in_batches(pgd, rowwise_mlp_model, x, y, threat, batch_size=7, seed=3)
    b = attack_in_batches(pgd, rowwise_mlp_model, x, y, threat, batch_size=30, seed=3)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    c = attack_in_batches(pgd, rowwise_mlp_model, x, y, threat, batch_size=30, seed=4)
    assert not torch.equal(c.x_adv, b.x_adv)
