"""Return versus eps of policies under observation attacks (Huang et al. 2017) and timed attacks (Kos & Song 2017).

For CartPole-v1 and Acrobot-v1: train a policy in place (seed 0), then play the same seeded episodes under FGSM,
PGD-10 and random signs of the same L∞ size at every step, for each eps (units of each observation dimension's
std over visited states); then FGSM at one eps with the timing strategies (every N-th step, the steps the critic
values most, the steps with the largest action-preference gap), with the measured attack frequency.

    OMP_NUM_THREADS=1 python bench/rl_observation.py [--episodes 10] [--envs CartPole-v1,Acrobot-v1]

Writes bench/out/rl_observation.json and prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch

from advlab.rl import parse_timing, sweep, train_policy

EPS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
TIMING_EPS = {"CartPole-v1": 0.2, "Acrobot-v1": 0.5}
TIMINGS = ["every", "every-2", "every-4", "value-0.5", "value-0.25", "preference-0.5", "preference-0.25"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--envs", default="CartPole-v1,Acrobot-v1")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "rl_observation.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict[str, object] = {"eps": EPS, "episodes": args.episodes, "torch": torch.__version__}
    for env in args.envs.split(","):
        start = time.perf_counter()
        policy, training = train_policy(env, seed=0)
        train_s = time.perf_counter() - start
        curves = sweep(policy, EPS, methods=("fgsm", "pgd", "random"), episodes=args.episodes, seed=0)
        timed = sweep(
            policy,
            [TIMING_EPS[env]],
            methods=("fgsm", "random"),
            timings=[parse_timing(t) for t in TIMINGS],
            episodes=args.episodes,
            seed=0,
        )
        record[env] = {
            "training": training.to_dict(),
            "train_seconds": train_s,
            "sweep": curves.to_dict(),
            "timing": timed.to_dict(),
        }
        print(f"\n### {env} (trained in {train_s:.0f} s, greedy return {training.best_return:.1f})")
        print("| eps | " + " | ".join(f"{e:g}" for e in EPS) + " |")
        print("|---|" + "---|" * len(EPS))
        for c in curves.curves:
            print(f"| {c.method} | " + " | ".join(f"{m:.1f}" for m in c.mean_return) + " |")
        print(f"\nFGSM and random at eps {TIMING_EPS[env]:g} (clean {timed.clean_return:.1f}):")
        print("| timing | FGSM return | random return | attack frequency (FGSM) |\n|---|---|---|---|")
        for t in TIMINGS:
            f, r = timed.curve("fgsm", t), timed.curve("random", t)
            print(f"| {t} | {f.mean_return[0]:.1f} | {r.mean_return[0]:.1f} | {100 * f.attack_frequency[0]:.0f}% |")
        print(f"sweep {curves.seconds:.0f} s, timing {timed.seconds:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
