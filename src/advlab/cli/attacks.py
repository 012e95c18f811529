"""``advlab attacks``: list the registered attacks and what each supports, or one attack's settings in full."""

from __future__ import annotations

import argparse
import json
from typing import Any

from advlab.attacks.registry import ALIASES, ATTACKS, AttackSpec, resolve
from advlab.cli._common import add_command
from advlab.settings import plain_text


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "attacks",
        "list attacks and their capabilities, or one attack's settings",
        "List every registered attack with the norms it supports, whether it can be targeted, needs gradients, "
        "counts queries, and its paper; the aliases (apgd-ce, illc, cw, ...) below. With a NAME, show that "
        "attack's description and every setting with its default: each is an option of 'advlab attack'.",
        "  advlab attacks\n  advlab attacks --norm l2 --json\n  advlab attacks apgd\n  advlab attacks illc\n",
    )
    p.add_argument("name", nargs="?", help="an attack or alias to describe in full")
    p.add_argument("--norm", choices=["linf", "l2", "l1", "l0"], help="only attacks supporting this norm")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name:
        return _describe(args.name, args.norm, args.json)
    rows = [cls.capabilities() for cls in ATTACKS.values() if args.norm is None or args.norm in cls.norms]
    aliases = {
        name: _alias_text(name)
        for name, alias in sorted(ALIASES.items())
        if args.norm is None or alias.covers(args.norm)
    }
    if args.json:
        print(json.dumps({"attacks": rows, "aliases": aliases}, indent=2))
        return 0
    print(f"{'name':<14}{'norms':<18}{'targeted':<10}{'gradients':<11}{'queries':<9}paper")
    for r in rows:
        print(
            f"{r['name']:<14}{','.join(r['norms']):<18}{'yes' if r['targeted'] else 'no':<10}"
            f"{'yes' if r['needs_gradients'] else 'no':<11}{'yes' if r['query_based'] else 'no':<9}{r['paper']}"
        )
    print("\naliases:")
    for name, text in aliases.items():
        print(f"  {name:<12}{text}")
    print("\n'advlab attacks NAME' shows an attack's settings.")
    return 0


def _alias_text(name: str) -> str:
    alias = ALIASES[name]
    target = alias.attack if isinstance(alias.attack, str) else ", ".join(f"{k}: {v}" for k, v in alias.attack.items())
    fixed = [f"{k}={v!r}" for k, v in alias.settings.items()] + ([f"goal={alias.goal.name}"] if alias.goal else [])
    return f"{target}{' with ' + ', '.join(fixed) if fixed else ''}" + (f" ({alias.doc})" if alias.doc else "")


def _describe(name: str, norm: str | None, as_json: bool) -> int:
    cls, fixed, goal = resolve(name, norm or _any_norm(name))
    spec = cls.spec
    if as_json:
        settings = {
            s.name: {"default": fixed.get(s.name, s.default), "help": plain_text(s.doc)} for s in spec.settings.values()
        }
        print(
            json.dumps(
                {**spec.capabilities(), "settings": settings, "renamed": dict(spec.renamed)}, indent=2, default=str
            )
        )
        return 0
    print(f"{name}: {plain_text(spec.summary)}")
    if name.strip().lower() in ALIASES:
        print(f"alias of {_alias_text(name.strip().lower())}")
    print(f"paper: {spec.paper}")
    print(f"norms: {', '.join(spec.norms)}   " + "   ".join(_flags(spec)))
    if goal is not None:
        print(f"goal: fixed to {goal.name}")
    print("\nsettings (options of 'advlab attack', or --set KEY=VALUE):")
    for s in spec.settings.values():
        default = fixed.get(s.name, s.default)
        print(
            f"  --{s.name.replace('_', '-'):<22}{s.describe()} (default: {default}{', fixed' if s.name in fixed else ''})"
        )
    for old, new in spec.renamed.items():
        print(f"  --{old.replace('_', '-'):<22}old name of --{new.replace('_', '-')}, accepted until the next release")
    return 0


def _flags(spec: AttackSpec) -> list[str]:
    return [
        f"targeted: {'yes' if spec.targeted else 'no'}",
        f"gradients: {'yes' if spec.needs_gradients else 'no'}",
        f"queries: {'yes' if spec.query_based else 'no'}",
        f"minimum-norm: {'yes' if spec.minimum_norm else 'no'}",
    ]


def _any_norm(name: str) -> str | None:
    """A norm a per-norm alias resolves for (its first), so that ``advlab attacks cw`` shows one of them."""
    alias = ALIASES.get(name.strip().lower())
    return None if alias is None or isinstance(alias.attack, str) else next(iter(alias.attack))
