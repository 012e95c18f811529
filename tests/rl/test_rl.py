"""advlab.rl against independent oracles: a hand-built linear controller that balances CartPole (gymnasium's physics
says so), the analytic FGSM flip condition of a linear controller, counted attack frequencies, and the one-line
errors of bad input and of a missing gymnasium."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advlab.cli import main
from advlab.rl import (
    Adversary,
    Policy,
    Timing,
    load_policy,
    mean_return,
    parse_timing,
    run_episodes,
    save_policy,
    sweep,
    task,
)
from advlab.rl.train import returns_to_go

gymnasium = pytest.importorskip("gymnasium")

GAINS = (0.0, 0.0, 1.0, 0.5)  # push toward the side the pole falls to: theta + 0.5 * theta_dot (a known balancer)
SCALE = (0.1, 0.2, 0.02, 0.2)  # a fixed observation scale for the hand controller


def hand_controller(gains=GAINS) -> Policy:
    """A Policy whose greedy action is 1 exactly when gains . obs > 0 (one path through its tanh layers)."""
    policy = Policy(4, 2, hidden=4, env="CartPole-v1")
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        policy.trunk[0].weight[0] = torch.tensor(gains)
        policy.trunk[2].weight[0, 0] = 1.0
        policy.actor.weight[:, 0] = torch.tensor([-1.0, 1.0])
        policy.obs_scale.copy_(torch.tensor(SCALE))
    return policy.eval()


def test_hand_controller_balances_and_fgsm_hurts_more_than_random_noise():
    policy = hand_controller()
    clean, _, freq = mean_return(policy, "CartPole-v1", None, 2, 0)
    assert clean == 500.0 and freq == 0.0  # the oracle: the linear controller balances for the whole episode
    fgsm, _, f_fgsm = mean_return(policy, "CartPole-v1", Adversary(policy, "fgsm", 1.0), 2, 0)
    noise, _, f_noise = mean_return(policy, "CartPole-v1", Adversary(policy, "random", 1.0), 2, 0)
    assert f_fgsm == f_noise == 1.0
    assert fgsm < noise - 100  # measured: 114 vs 396 over four episodes


def test_fgsm_flips_the_linear_controller_exactly_where_the_analytic_condition_says():
    policy = hand_controller()
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(400, 4, generator=g) * torch.tensor(SCALE) * 0.5
    preferred = policy.act(obs)
    eps = 0.5
    k, s = torch.tensor(GAINS), torch.tensor(SCALE)
    # FGSM moves k . obs by eps * sum_i |k_i| s_i against the preferred side: the action flips iff that is more
    flips_expected = (obs @ k).abs() < eps * (k.abs() * s).sum()
    adv = Adversary(policy, "fgsm", eps).perturb(obs, preferred)
    assert torch.equal(policy.act(adv) != preferred, flips_expected)
    moved = ((adv - obs) / s).abs()
    assert moved.max() <= eps * (1 + 1e-5)
    pgd_adv = Adversary(policy, "pgd", eps).perturb(obs, preferred)  # PGD-10 reaches the same corner
    assert torch.equal(policy.act(pgd_adv) != preferred, flips_expected)
    assert ((pgd_adv - obs) / s).abs().max() <= eps * (1 + 1e-5)
    random_adv = Adversary(policy, "random", eps).perturb(obs, preferred)
    assert torch.allclose(((random_adv - obs) / s).abs(), torch.full_like(obs, eps), atol=1e-5)  # same L∞ size
    assert (policy.act(random_adv) != preferred).sum() < flips_expected.sum()


def test_every_n_timing_attacks_the_counted_steps_and_eps_zero_changes_nothing():
    policy = hand_controller()
    run = run_episodes("CartPole-v1", 2, 3, Adversary(policy, "random", 0.01, parse_timing("every-4")).choose)
    lengths = [len(a) for a in run.actions]
    assert run.attacked == sum(math.ceil(n / 4) for n in lengths)
    result = sweep(policy, [0.0], methods=("fgsm",), timings=(Timing(),), episodes=1, seed=5)
    assert result.curve("fgsm").mean_return == [result.clean_return]
    assert result.curve("fgsm").attack_frequency == [0.0]


def test_value_timing_attacks_about_the_calibrated_fraction():
    policy = hand_controller()
    with torch.no_grad():
        policy.critic.weight[0, 0] = 1.0  # the value head reads the controller's hidden unit
    result = sweep(policy, [1e-4], methods=("random",), timings=(parse_timing("value-0.25"),), episodes=2, seed=0)
    freq = result.curve("random", "value-0.25").attack_frequency[0]
    assert 0.1 < freq < 0.4  # a tiny eps leaves the trajectories as calibrated: about a quarter of the steps


def test_returns_to_go_and_policy_file_round_trip(tmp_path):
    assert torch.allclose(returns_to_go(torch.tensor([1.0, 2.0, 3.0]), 0.5), torch.tensor([2.75, 3.5, 3.0]))
    policy = hand_controller()
    save_policy(policy, tmp_path, {"best_return": 500.0})
    loaded, training = load_policy(tmp_path)
    obs = torch.randn(5, 4)
    assert torch.equal(loaded(obs), policy(obs)) and torch.equal(loaded.obs_scale, policy.obs_scale)
    assert training == {"best_return": 500.0} and loaded.env == "CartPole-v1"


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="Did you mean 'CartPole-v1'"):
        task("cartpole-v0")
    with pytest.raises(ValueError, match="must be >= 0"):
        sweep(hand_controller(), [0.1, -0.1])
    with pytest.raises(ValueError, match="every, every-N"):
        parse_timing("sometimes")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        parse_timing("value-2")


def test_cli_writes_json_html_and_figure(tmp_path, capsys):
    save_policy(hand_controller(), tmp_path / "policy")
    out = tmp_path / "out"
    rc = main(["rl", "--policy", str(tmp_path / "policy"), "--eps", "0,1", "--episodes", "1", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "rl.json").read_text())
    curve = record["sweep"]["curves"][0]
    assert curve["method"] == "fgsm" and curve["mean_return"][0] == record["sweep"]["clean_return"] == 500.0
    assert curve["mean_return"][1] < 500.0
    assert (out / "rl.png").stat().st_size > 1000 and "return" in (out / "rl.html").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "CartPol-v1"], "Did you mean 'CartPole-v1'"),
        (["--eps", "0.1,-0.2"], "must be >= 0"),
        (["--methods", "fgsm,randm"], "Did you mean 'random'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main(["rl", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_training_is_seeded_and_measures_the_observation_scale():
    from advlab.rl import train_policy

    a, record = train_policy("CartPole-v1", seed=1, iterations=3)
    b, _ = train_policy("CartPole-v1", seed=1, iterations=3)
    assert record.iterations == 3 and not a.training
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    visited = torch.cat(run_episodes("CartPole-v1", 8, 2 * 10**6 + 1, lambda o, t: (a.act(o), t < 0)).observations)
    assert torch.allclose(a.obs_scale, visited.std(dim=0).clamp_min(1e-3))
