"""Stages that attack only the examples closest to breaking (``Closest``, ``"name@fraction"``)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open

from advlab import evaluate
from advlab.attacks import PGD, Square
from advlab.evaluation import Closest, resolve_attacks
from advlab.evaluation.engine import STATE_FILE, example_ids
from advlab.evaluation.shards import closest_selection


def _margins(model, x, y):
    """``max_{j != y} z_j - z_y`` of every example, computed here, apart from the engine."""
    with torch.no_grad():
        z = model(x)
    other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
    return other - z.gather(1, y[:, None])[:, 0]


def test_names_and_objects_resolve_to_the_same_entry():
    _, a = resolve_attacks("apgd-ce,square@0.1", "linf")
    _, b = resolve_attacks(["apgd-ce", Closest("square", 0.1)], "linf")
    assert (
        [(e.label, e.closest) for e in a] == [(e.label, e.closest) for e in b] == [("apgd-ce", None), ("square", 0.1)]
    )
    assert a[1].describe()["closest"] == 0.1
    _, c = resolve_attacks([Closest(PGD(steps=3), 0.5)], "l2")
    assert c[0].closest == 0.5 and c[0].config.steps == 3
    _, d = resolve_attacks("square@1", "linf")
    assert d[0].closest == 1.0


@pytest.mark.parametrize("bad", ["square@0", "square@1.5", "square@x", "square@-0.2"])
def test_bad_fractions_are_refused_naming_the_fix(bad):
    with pytest.raises(ValueError, match=r"fraction|\(0, 1\]"):
        resolve_attacks(bad, "linf")


def test_standard_runs_its_expensive_attacks_on_the_closest_examples():
    _, entries = resolve_attacks("standard", "linf")
    assert [(e.label, e.closest, e.extend) for e in entries] == [
        ("apgd-ce", None, None),
        ("apgd-t", 0.2, 0.1),
        ("apgd-t#2", 0.05, None),
        ("square", 0.15, None),
    ]
    # the second APGD-T is a second random start on the closest 5%: its own streams, keyed by its own label
    assert entries[1].config == entries[2].config and entries[1].config.n_target_classes == 3
    assert entries[3].config.focus == 0.5 and entries[3].config.focus_min_fooled == 1


def test_closest_selection_takes_the_highest_margins_and_breaks_ties_by_id():
    margins = torch.tensor([-3.0, -0.5, -2.0, -0.5, -1.0])
    ids = torch.tensor([50, 40, 30, 20, 10])
    assert closest_selection(margins, 0.4, ids).tolist() == [False, True, False, True, False]
    # three of five: the two at -0.5, then -1.0; with a tie at the cut, the smaller id goes in
    assert closest_selection(margins, 0.6, ids).tolist() == [False, True, False, True, True]
    tied = torch.zeros(4)
    assert closest_selection(tied, 0.5, torch.tensor([4, 1, 3, 2])).tolist() == [False, True, False, True]
    assert not closest_selection(margins[:0], 0.5, ids[:0]).any()


def test_a_closest_stage_attacks_the_share_with_the_highest_clean_margins(rowwise_mlp_model, digits, tmp_path):
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    report = evaluate(
        rowwise_mlp_model, (x, y), 0.5, attacks=[Closest(PGD(steps=20), 0.25)], checks=False,
        checkpoint_dir=tmp_path / "state",
    )  # fmt: skip
    correct = torch.tensor([p == lab for p, lab in zip(report.examples["pred_clean"], report.examples["label"])])
    idx = correct.nonzero().flatten()
    n_keep = math.ceil(0.25 * idx.numel())
    stage = report.results[0].stages[0]
    assert stage.n_attacked == n_keep
    # the examples attacked are the ones with the highest clean margins (ties: smaller id), computed here
    keep = torch.zeros(len(y), dtype=torch.bool)
    keep[idx] = closest_selection(_margins(rowwise_mlp_model, x, y)[idx], 0.25, example_ids(x, y)[idx])
    broken = torch.tensor([b == "pgd" for b in report.examples["broken_by"]])
    assert stage.n_broken == n_keep  # at eps 0.5 PGD breaks every example it attacks ...
    assert torch.equal(broken, keep)  # ... so the broken ones are exactly the chosen ones
    # the decision is kept in the checkpoint, so a resumed run attacks the same examples
    with safe_open(str(tmp_path / "state" / STATE_FILE), "pt") as f:
        stored = f.get_tensor("closest_slice_0_0") == 0
    assert torch.equal(stored, keep)


def test_a_later_closest_stage_takes_its_share_of_what_the_earlier_stages_left(rowwise_mlp_model, digits):
    """The share is of the examples still robust when the stage begins, not of every correctly classified one."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    first = PGD(steps=2, restarts=1)
    report = evaluate(rowwise_mlp_model, (x, y), 0.05, attacks=[first, Closest(PGD(steps=20), 0.3)], checks=False)
    stages = report.results[0].stages
    left = stages[0].n_attacked - stages[0].n_broken
    assert stages[1].n_attacked == math.ceil(0.3 * left)


@pytest.mark.parametrize("bad", [{"extend": 1.5}, {"extend": -0.1}, {"fraction": 0.0}])
def test_bad_closest_settings_are_refused(bad):
    with pytest.raises(ValueError, match="extend|fraction"):
        Closest("pgd", **{"fraction": 0.2, **bad})


def test_extend_takes_the_next_share_while_the_last_one_pays(rowwise_mlp_model, digits, tmp_path):
    """At eps 0.5 PGD breaks every example it attacks: every share pays, so the stage goes on to the last example,
    and the shares are stored in order."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    pgd = PGD(steps=20)
    one = evaluate(rowwise_mlp_model, (x, y), 0.5, attacks=[Closest(pgd, 0.25)], checks=False)
    every = evaluate(
        rowwise_mlp_model, (x, y), 0.5, attacks=[Closest(pgd, 0.25, extend=0.5)], checks=False,
        checkpoint_dir=tmp_path / "state",
    )  # fmt: skip
    m = sum(p == lab for p, lab in zip(one.examples["pred_clean"], one.examples["label"]))
    assert one.results[0].stages[0].n_attacked == math.ceil(0.25 * m)  # without extend: one share
    assert every.results[0].stages[0].n_attacked == m == every.results[0].stages[0].n_broken
    assert every.results[-1].robust_accuracy == 0.0
    with safe_open(str(tmp_path / "state" / STATE_FILE), "pt") as f:
        shares = f.get_tensor("closest_slice_0_0")
    # each share is a quarter (rounded up) of the examples not attacked before it, closest first
    left, sizes = m, []
    while left:
        sizes.append(math.ceil(0.25 * left))
        left -= sizes[-1]
    assert [int((shares == j).sum()) for j in range(len(sizes))] == sizes
    assert int((shares >= 0).sum()) == m


def test_extend_stops_when_a_share_does_not_pay(rowwise_mlp_model, digits):
    """A weak attack (one tiny step) breaks few of its share: with extend 0.9 the stage stops after one share."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    weak = PGD(steps=1, step_size=1e-4, random_start=False)
    report = evaluate(rowwise_mlp_model, (x, y), 0.05, attacks=[Closest(weak, 0.25, extend=0.9)], checks=False)
    stage = report.results[0].stages[0]
    n_correct = sum(p == lab for p, lab in zip(report.examples["pred_clean"], report.examples["label"]))
    assert stage.n_broken < 0.9 * stage.n_attacked
    assert stage.n_attacked == math.ceil(0.25 * n_correct)


def test_a_focused_square_cannot_go_on_share_by_share():
    """Square's own focus ranks one share's examples; extending it over several shares is refused up front."""
    with pytest.raises(ValueError, match="focus"):
        resolve_attacks([Closest(Square(focus=0.5), 0.2, extend=0.1)], "linf")
    _, (entry,) = resolve_attacks([Closest(Square(focus=1.0), 0.2, extend=0.1)], "linf")
    assert entry.extend == 0.1
