"""Outcomes that do not depend on how the work is cut: batch size, the examples' order, a kill and a resume.

Every example draws from its own stream keyed by its content (``example_ids``), so ``evaluate`` must give the same
per-example outcomes and the same report numbers whatever the batch size and the order of the data, Square's
focus included (decided over the whole stage). The model computes each row on its own (``rowwise_mlp_model``), so
the float arithmetic does not depend on the batch either.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from torch import nn

from advlab import Classifier, ThreatModel, evaluate
from advlab.attacks import PGD, Square
from advlab.evaluation.checks import CHECK_EXAMPLES, check_examples
from advlab.evaluation.engine import FOCUS_TENSORS, STATE_FILE, example_ids
from advlab.rng import ExampleRNG

COSTS = ("wall_time_s", "forward_passes", "backward_passes", "forward_per_example", "backward_per_example")
"""What a stage spent: its time, and its passes, which may depend on the cut (APGD looks at one example per call to
learn the number of classes: two batches spend one forward pass more than one batch)."""


def _numbers(report):
    """Everything the report says except what the stages spent, with the per-example outcomes."""
    d = report.to_dict()
    for r in d["results"]:
        for s in r["stages"]:
            for key in COSTS:
                s.pop(key)
    return d["results"], d["checks"], d["clean_accuracy"]


def _in_order(examples: dict, order: torch.Tensor) -> dict:
    """Per-example outcomes of a permuted run, put back in data order (``order`` = the permutation's inverse)."""
    return {k: [v[j] for j in order.tolist()] for k, v in examples.items()}


@pytest.mark.parametrize("preset, eps, n", [("fast", [0.05, 0.1], 120), ("standard", [0.05], 60)])
def test_outcomes_do_not_depend_on_batch_size_or_order(preset, eps, n, rowwise_mlp_model, digits):
    x, y = digits["x_test"][:n], digits["y_test"][:n]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    by50 = evaluate(rowwise_mlp_model, (x, y), eps, attacks=preset, batch_size=50)
    by250 = evaluate(rowwise_mlp_model, (x[perm], y[perm]), eps, attacks=preset, batch_size=250)
    assert _numbers(by250) == _numbers(by50)
    inverse = perm.argsort()
    assert _in_order(by250.examples, inverse) == by50.examples
    assert torch.equal(by250.x_adv[inverse], by50.x_adv)
    # the cascade broke something and left something: the comparison is not between two empty runs
    assert (
        0
        < by50.results[-1].n_robust
        < sum(by50.examples["label"][j] == p for j, p in enumerate(by50.examples["pred_clean"]))
    )
    if preset == "fast":  # and a third cut: batches of 7
        by7 = evaluate(rowwise_mlp_model, (x, y), eps, attacks=preset, batch_size=7)
        assert _numbers(by7) == _numbers(by50) and by7.examples == by50.examples


FOCUSED = Square(max_queries=120, focus=0.3, focus_after=25, restarts=2)


class Flaky(nn.Module):
    """A model that dies after ``limit`` forward passes (a killed run); ``limit`` is not in its state."""

    limit: int | None = None
    calls = 0

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Flaky.calls += 1
        if Flaky.limit is not None and Flaky.calls > Flaky.limit:
            raise RuntimeError("simulated kill")
        return self.inner(x)


def _stage_state(folder) -> dict:
    with safe_open(str(folder / STATE_FILE), "pt") as f:
        tensors = set(f.keys())
        state = json.loads(f.metadata()["checkpoint"])["state"]
    return {"tensors": tensors, **state["stages"]["0:0"]}


@pytest.mark.parametrize("part", [1, 2])
def test_focused_square_stage_resumes_after_a_kill_in_either_part(part, rowwise_mlp_model, digits, tmp_path):
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    model = Classifier(Flaky(rowwise_mlp_model.module), num_classes=10, input_shape=(1, 8, 8)).eval()
    kwargs = dict(attacks=[FOCUSED], batch_size=20, checks=False)
    Flaky.limit, Flaky.calls = None, 0
    reference = evaluate(model, (x, y), [0.03], **kwargs)
    total = Flaky.calls
    # the first part makes about 25 forward passes per batch (to the focus point); the second part most of the rest
    Flaky.limit, Flaky.calls = (40 if part == 1 else total - 50), 0
    with pytest.raises(RuntimeError, match="simulated kill"):
        evaluate(model, (x, y), [0.03], checkpoint_dir=tmp_path, **kwargs)
    stage = _stage_state(tmp_path)
    assert set(FOCUS_TENSORS) <= stage["tensors"]  # the points of the first part are in the checkpoint
    if part == 1:
        assert 0 < stage["focus_batches_done"] < stage["n_batches"]
    else:
        assert stage["focus_batches_done"] == stage["n_batches"] and stage["batches_done"] >= 1
    Flaky.limit = None
    resumed = evaluate(model, (x, y), [0.03], checkpoint_dir=tmp_path, **kwargs)
    assert _numbers(resumed) == _numbers(reference)
    assert resumed.examples == reference.examples and torch.equal(resumed.x_adv, reference.x_adv)
    assert not set(FOCUS_TENSORS) & _stage_state(tmp_path)["tensors"]  # dropped once the stage is done


def test_focused_stage_equals_one_square_call_on_all_its_examples(rowwise_mlp_model, digits):
    """The stage's focus is Square's own focus over all the stage's examples: the outcome of one call holding them."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    rep = evaluate(rowwise_mlp_model, (x, y), [0.03], attacks=[FOCUSED], batch_size=20, checks=False)
    correct = torch.tensor(rep.examples["pred_clean"]) == y
    rng = ExampleRNG(0, ("attack", 0, "square"), example_ids(x, y)[correct])
    one = FOCUSED(rowwise_mlp_model, x[correct], y[correct], ThreatModel("linf", 0.03), generator=rng)
    robust = torch.tensor([r[0] for r in rep.examples["robust"]])
    assert torch.equal(robust[correct], ~one.success)
    assert torch.equal(rep.x_adv[correct][one.success], one.x_adv[one.success])
    stage = rep.results[0].stages[0]
    assert stage.queries_mean == pytest.approx(one.queries.double().mean().item())
    # the focus acted: some examples stopped at the focus point, some went on past it
    stopped, went_on = one.queries == 1 + FOCUSED.focus_after, one.queries > 1 + FOCUSED.focus_after
    assert int(stopped.sum()) > 0 and int(went_on.sum()) > 0


def test_example_ids_follow_the_content_not_the_position(digits):
    x, y = digits["x_test"][:50], digits["y_test"][:50]
    ids = example_ids(x, y)
    assert ids.dtype == torch.int64 and bool((ids >= 0).all()) and ids.unique().numel() == 50
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(example_ids(x[perm], y[perm]), ids[perm])
    assert torch.equal(example_ids(x[:7], y[:7]), ids[:7])  # a prefix keeps its ids
    # another label is another example; a copy gets an id of its own, the first keeps the original's
    assert int(example_ids(x[:1], (y[:1] + 1) % 10)[0]) != int(ids[0])
    twice = example_ids(torch.cat([x[:3], x[:1]]), torch.cat([y[:3], y[:1]]))
    assert torch.equal(twice[:3], ids[:3]) and twice.unique().numel() == 4


def test_check_examples_are_the_smallest_ids_in_any_order(digits):
    x, y = digits["x_test"], digits["y_test"]
    ids = example_ids(x, y)
    correct = torch.arange(x.shape[0]) % 3 != 0
    idx = check_examples(correct, ids)
    assert idx.numel() == CHECK_EXAMPLES and bool(correct[idx].all())
    assert bool((ids[idx][1:] > ids[idx][:-1]).all())  # in id order
    assert int(ids[idx].max()) < int(ids[correct & ~torch.isin(torch.arange(x.shape[0]), idx)].min())
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    assert torch.equal(perm[check_examples(correct[perm], ids[perm])], idx)


def test_a_random_model_is_the_exception_and_still_reproducible():
    """A model's own randomness is drawn per batch (documented); the same settings still give the same numbers."""

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = 10 * (x[:, 0] - 0.5)
            out = torch.stack([torch.zeros_like(s), s], dim=1)
            return out + 0.1 * torch.randn_like(out)

    j = torch.arange(40, dtype=torch.float32)
    x = torch.stack([0.5 + 0.013 + (j * 0.37) % 0.43, torch.full((40,), 0.5)], dim=1)
    y = torch.ones(40, dtype=torch.int64)
    model = Classifier(Noisy(), num_classes=2, input_shape=(2,)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = evaluate(model, (x, y), [0.1], attacks=[PGD(steps=5)], checks=False, eot_samples=3, batch_size=16)
        b = evaluate(model, (x, y), [0.1], attacks=[PGD(steps=5)], checks=False, eot_samples=3, batch_size=16)
    assert a.randomized and _numbers(a) == _numbers(b)


class OutOfMemoryAbove(nn.Module):
    """``net``, raising CUDA's out-of-memory error on a batch of more than ``limit`` examples (a GPU, simulated)."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (a batch of {x.shape[0]})")
        return self.net(x)


@pytest.mark.parametrize("attacks", ["fast", [FOCUSED]])
def test_a_batch_out_of_memory_is_halved_and_the_outcomes_stay(attacks, rowwise_mlp_model, digits, caplog):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    fits = evaluate(rowwise_mlp_model, (x, y), [0.05, 0.1], attacks=attacks, batch_size=20, checks=False)
    limited = Classifier(OutOfMemoryAbove(rowwise_mlp_model.module, 30), num_classes=10, input_shape=(1, 8, 8)).eval()
    with caplog.at_level("WARNING", logger="advlab.devices"):
        halved = evaluate(limited, (x, y), [0.05, 0.1], attacks=attacks, batch_size=80, checks=False)
    assert "out of memory on a batch of 80 examples; retrying with batches of 40" in caplog.text
    assert "retrying with batches of 20" in caplog.text
    assert _numbers(halved) == _numbers(fits) and halved.examples == fits.examples


def test_focused_stage_with_min_fooled_is_one_square_call_and_gives_up_over_all_batches(rowwise_mlp_model, digits):
    """``focus_min_fooled`` counts the breaks of every batch of the stage, as one Square call holding them would."""
    x, y = digits["x_test"][:90], digits["y_test"][:90]
    config = FOCUSED.replace(focus_min_fooled=1)
    for eps, give_up in ((0.002, True), (0.03, False)):
        rep = evaluate(rowwise_mlp_model, (x, y), [eps], attacks=[config], batch_size=20, checks=False)
        correct = torch.tensor(rep.examples["pred_clean"]) == y
        ids, threat = example_ids(x, y)[correct], ThreatModel("linf", eps)
        usual = FOCUSED(
            rowwise_mlp_model, x[correct], y[correct], threat, generator=ExampleRNG(0, ("attack", 0, "square"), ids)
        )
        one = config(
            rowwise_mlp_model, x[correct], y[correct], threat, generator=ExampleRNG(0, ("attack", 0, "square"), ids)
        )
        assert (int((usual.success & (usual.queries <= 1 + FOCUSED.focus_after)).sum()) == 0) == give_up
        robust = torch.tensor([r[0] for r in rep.examples["robust"]])
        assert torch.equal(robust[correct], ~one.success)
        assert rep.results[0].stages[0].queries_mean == pytest.approx(one.queries.double().mean().item())
        if give_up:  # nothing broke by the focus point, in any batch: every example stopped there
            assert bool((one.queries == 1 + FOCUSED.focus_after).all())
        else:  # something broke: the rule of 0 holds, bit for bit
            assert torch.equal(one.queries, usual.queries) and torch.equal(one.x_adv, usual.x_adv)
