"""``advlab rl``: train (or load) a policy on a classic-control task and sweep observation attacks over eps."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from advlab.cli._common import add_command, check_output_dir, output_dir, parse_float_list, positive_int

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab rl --env CartPole-v1 --out runs/cartpole                       # train, then FGSM vs random noise
  advlab rl --env Acrobot-v1 --eps 0,0.1,0.2,0.5 --methods fgsm,pgd,random --out runs/acrobot
  advlab rl --policy runs/cartpole --timings every,every-4,value-0.25,preference-0.25 --eps 0.2 --out runs/cp-timing
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "rl",
        "attack a reinforcement-learning policy's observations (needs gymnasium: pip install 'advlab[rl]')",
        "Train a small actor-critic policy on a gymnasium classic-control task (or load one with --policy), then play "
        "seeded episodes while an adversary perturbs what the policy observes: FGSM or PGD toward another action than "
        "the policy's preferred one (Huang et al. 2017), or random signs of the same size, at every step or at chosen "
        "steps (every N-th; the steps the critic values most, Kos & Song 2017; the steps with the largest action-"
        "preference gap, Lin et al. 2017). eps is an L∞ radius in units of each observation dimension's standard "
        "deviation over the states the policy visits. Writes DIR/policy.safetensors (when trained), DIR/rl.json, "
        "DIR/rl.png (return versus eps) and a self-contained DIR/rl.html.",
        EXAMPLES,
    )
    p.add_argument("--env", default="CartPole-v1", help="CartPole-v1 or Acrobot-v1 (ignored with --policy)")
    p.add_argument("--policy", default=None, help="folder of a policy saved by an earlier run (skips training)")
    p.add_argument("--eps", default="0,0.05,0.1,0.2,0.5", help="comma-separated L∞ budgets (observation-std units)")
    p.add_argument("--methods", default="fgsm,random", help="comma-separated: fgsm, pgd, random")
    p.add_argument(
        "--timings", default="every", help="comma-separated: every, every-N, value-F, preference-F (F in (0, 1])"
    )
    p.add_argument("--episodes", type=positive_int, default=10, help="seeded episodes per point")
    p.add_argument("--seed", type=int, default=0, help="seed of training, the episodes and the attacks")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def settings(args: argparse.Namespace) -> tuple[list[float], list[str], list]:
    """The parsed --eps, --methods and --timings (checked before any training)."""
    from advlab.rl import METHODS, parse_timing, task
    from advlab.rl.sweep import check_eps
    from advlab.validation import did_you_mean

    if not args.policy:
        task(args.env)
    eps = check_eps(parse_float_list(args.eps, "--eps"))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"--methods: expected some of {', '.join(METHODS)}, got {m!r}.{did_you_mean(m, METHODS)}")
    timings = [parse_timing(t) for t in args.timings.split(",") if t.strip()]
    return eps, methods, timings


def policy_of(args: argparse.Namespace, out: Path):
    """The loaded policy (--policy), or one trained now and saved into ``out``; with its training record."""
    from advlab.rl import load_policy, save_policy, train_policy

    if args.policy:
        return load_policy(args.policy)
    log.info("training a policy on %s (seed %d)...", args.env, args.seed)
    policy, training = train_policy(args.env, seed=args.seed)
    save_policy(policy, out, training.to_dict())
    log.info("greedy return %.1f after %d iterations", training.best_return, training.iterations)
    return policy, training.to_dict()


def run(args: argparse.Namespace) -> int:
    from advlab.provenance import provenance
    from advlab.reports.rl import write_rl_report
    from advlab.rl import GymnasiumMissing, gymnasium, sweep

    eps, methods, timings = settings(args)
    check_output_dir(args.out)
    try:
        gymnasium()
    except GymnasiumMissing as exc:
        raise ValueError(str(exc)) from None
    out = output_dir(args.out)
    policy, training = policy_of(args, out)
    result = sweep(policy, eps, methods=methods, timings=timings, episodes=args.episodes, seed=args.seed)
    record = {
        "sweep": result.to_dict(),
        "policy": {"path": str(Path(args.policy or out).resolve()), "training": training},
        "settings": {"eps": eps, "methods": methods, "timings": [t.label for t in timings], "seed": args.seed},
        "provenance": provenance(),
    }
    json_path, html_path = write_rl_report(result, out, record)
    for c in result.curves:
        log.info("%s (%s): returns %s", c.method, c.timing, ", ".join(f"{m:.1f}" for m in c.mean_return))
    log.info("clean return %.1f; wrote %s and %s", result.clean_return, json_path, html_path)
    return 0
