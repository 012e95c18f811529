"""``advlab attacks``: list the registered attacks and what each supports."""

from __future__ import annotations

import argparse
import json

from advlab.cli._common import add_command


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "attacks",
        "list attacks and their capabilities",
        "List every registered attack with the norms it supports, whether it can be targeted, needs "
        "gradients, is random, counts queries, or minimises the perturbation.",
        "  advlab attacks\n  advlab attacks --norm l2 --json\n",
    )
    p.add_argument("--norm", choices=["linf", "l2", "l1", "l0"], help="only attacks supporting this norm")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab.attacks import ATTACKS

    rows = [cls.capabilities() for _, cls in ATTACKS.items() if args.norm is None or args.norm in cls.norms]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<14}{'norms':<18}{'targeted':<10}{'gradients':<11}{'queries':<9}paper")
    for r in rows:
        print(
            f"{r['name']:<14}{','.join(r['norms']):<18}{'yes' if r['targeted'] else 'no':<10}"
            f"{'yes' if r['needs_gradients'] else 'no':<11}{'yes' if r['query_based'] else 'no':<9}{r['paper']}"
        )
    return 0
