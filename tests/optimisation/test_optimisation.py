"""advlab.optimisation against independent oracles: the design function's documented optimum (checked by calculus
and by random search), the analytic highest-scored design of a linear surrogate, and the true score of what the
optimiser finds (the known function, never the surrogate)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advlab.cli import main
from advlab.optimisation import DesignProblem, MBOSettings, Surrogate, ascend, fit_surrogate, highest_scored


def test_the_documented_optimum_is_the_maximum():
    problem = DesignProblem(dim=12, seed=3)
    o = problem.optimum
    assert float(problem.score(o[None])[0]) == pytest.approx(1.0, abs=1e-12)
    x = o[None].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.score(x).sum(), x)
    assert grad.abs().max() < 1e-9  # a stationary point ...
    g = torch.Generator().manual_seed(0)
    designs = torch.rand(20_000, 12, generator=g)
    assert problem.score(designs).max() < 1.0  # ... that no random design beats
    best, value = problem.domain_optimum()
    inside = problem.sample(20_000, g)
    assert problem.score(inside).max() <= value + 1e-9 and value < 1.0  # the data domain does not hold the optimum
    assert ((best >= problem.low) & (best <= problem.high)).all()
    # per coordinate: the bowl's maximum t* = o_i where o_i is inside, else a ripple crest or an edge of the domain
    ripple = torch.cos(2 * math.pi * 3 * (best - o)) - 10 * (best - o) ** 2
    edges = torch.stack([torch.full_like(o, problem.low), torch.full_like(o, problem.high)])
    at_edges = torch.cos(2 * math.pi * 3 * (edges - o)) - 10 * (edges - o) ** 2
    assert (ripple >= at_edges.max(dim=0).values - 1e-12).all()


def test_out_of_domain_distance():
    problem = DesignProblem(dim=2, low=0.2, high=0.6)
    x = torch.tensor([[0.3, 0.5], [0.0, 0.5], [0.9, 1.0]])
    assert torch.allclose(problem.out_of_domain(x), torch.tensor([0.0, 0.2, 0.5]))


def test_highest_scored_matches_the_analytic_optimum_of_a_linear_surrogate():
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Linear(6, 1), torch.nn.Flatten(0))
    x = torch.rand(32, 6) * 0.8 + 0.1
    eps = 0.05
    w = linear[0].weight[0].detach()
    expected = (x + eps * w.sign()).clamp(0, 1)  # a linear score rises fastest along sign(w), to the ball's corner
    found = highest_scored(linear, x, eps, steps=20, seed=0)
    assert torch.allclose(found, expected, atol=1e-5)


@pytest.fixture(scope="module")
def trained():
    problem = DesignProblem(dim=8, seed=0)
    g = torch.Generator().manual_seed(0)
    x = problem.sample(300, g)
    y = problem.score(x).float()
    return problem, x, y, fit_surrogate(x, y, epochs=25, seed=0)


def test_the_free_ascent_overrates_its_designs_and_leaves_the_domain(trained):
    problem, x, y, surrogate = trained
    starts = x[y.argsort(descending=True)[:8]]
    free = ascend(surrogate, starts, problem, in_domain=False, steps=100)
    assert free.predicted[-1] > free.predicted[0]  # the ascent does what it is asked ...
    assert free.predicted[-1] > free.true[-1] + 0.2  # ... and the known function says the prediction is wrong
    assert free.out_of_domain[-1] > 0.05 and free.designs.min() >= 0 and free.designs.max() <= 1
    truth = problem.score(free.designs).mean()
    assert free.true[-1] == pytest.approx(float(truth))
    kept = ascend(surrogate, starts, problem, in_domain=True, steps=100)
    assert max(kept.out_of_domain) == 0.0
    assert ((kept.designs >= problem.low - 1e-7) & (kept.designs <= problem.high + 1e-7)).all()


def test_adversarial_training_runs_and_bad_settings_name_the_fix(trained):
    _, x, y, _ = trained
    robust = fit_surrogate(x[:64], y[:64], eps=0.05, epochs=1, steps=2, seed=0)
    assert isinstance(robust, Surrogate) and not robust.training
    with pytest.raises(ValueError, match="low, high"):
        DesignProblem(low=0.6, high=0.2)
    with pytest.raises(ValueError, match="starts"):
        MBOSettings(n=10, starts=20)
    with pytest.raises(ValueError, match="eps"):
        MBOSettings(eps=0.0)


def test_cli_writes_json_html_and_figure(tmp_path):
    out = tmp_path / "mbo"
    argv = ["mbo", "--dim", "6", "--n", "100", "--epochs", "5", "--steps", "20", "--starts", "4", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "mbo.json").read_text())
    variants = record["study"]["variants"]
    assert [(v["surrogate"], v["constraint"]) for v in variants] == [
        ("standard", "none"),
        ("standard", "domain"),
        ("robust", "none"),
        ("robust", "domain"),
    ]
    assert all(v["out_of_domain"] == 0.0 for v in variants if v["constraint"] == "domain")
    assert record["study"]["optimum_value"] == 1.0
    assert (out / "mbo.png").stat().st_size > 1000 and "out of domain" in (out / "mbo.html").read_text()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["mbo", "--low", "0.7", "--high", "0.3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "expected 0 <= low < high <= 1" in err and "Traceback" not in err
