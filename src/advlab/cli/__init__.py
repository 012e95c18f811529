"""The ``advlab`` command line: one module per sub-command, each with ``add_parser(subparsers)``.

To add a command, write ``advlab/cli/NAME.py`` with ``add_parser`` and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from advlab.cli._common import AdvlabParser, show_warning

COMMANDS = (
    "train",
    "attack",
    "attacks",
    "evaluate",
    "report",
    "demo",
    "serve",
    "blackbox",
    "transfer",
    "explain",
    "physical",
    "universal",
    "patch",
    "fooling",
    "poison",
    "malware",
    "import",
    "rl",
    "mbo",
    "text",
    "spam",
)
"""Sub-commands, in the order ``--help`` lists them; each is the module of its name (see :data:`MODULES`)."""

MODULES = {"import": "import_model"}
"""Sub-commands whose module is named otherwise (``import`` is a Python keyword)."""

EPILOG = """\
examples:
  advlab demo                                   # train, attack and defend a digits model in under 3 minutes
  advlab train --data mnist --arch wong-cnn --epochs 5 --out runs/m1
  advlab attack --model runs/m1 --data mnist --attack pgd --eps 0.3 --norm linf --n 1000 --out runs/m1-pgd
  advlab attacks --norm l2                      # list the attacks that support a norm
  advlab evaluate --model runs/m1 --data mnist --eps 0.1,0.2,0.3 --preset standard --out runs/m1-eval
  advlab evaluate --model nets.py:Net --weights w.pt --data mnist --eps 0.3 --preset fast --out runs/mine
  advlab import net.pt2 --mean 0.1307 --std 0.3081 --data mnist --out runs/net   # a model folder of a file
  advlab text --data rt-polarity --method baseline,vat --epochs 5 --out runs/text   # VAT on word embeddings

Run 'advlab COMMAND --help' for each command's options.
"""


class UsageError(Exception):
    """A CLI-level error shown to the user as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advlab",
        description="advlab: adversarial attacks, defenses and honest robustness benchmarks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from advlab import __version__

    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=AdvlabParser)
    for name in COMMANDS:
        importlib.import_module(f"advlab.cli.{MODULES.get(name, name.replace('-', '_'))}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        if not args.verbose:
            warnings.showwarning = show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command; an error the user can fix is one line and exit status 2."""
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, UsageError) as exc:
        if args.verbose:
            raise
        print(f"advlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlab {args.command}: interrupted", file=sys.stderr)
        return 130
