"""Options and helpers shared by the sub-commands (data, model, device, seed, output folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the examples' line breaks."""


def add_command(sub: Any, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Create a sub-command parser with a description and an ``examples:`` epilog."""
    return sub.add_parser(
        name, help=help, description=description, epilog="examples:\n" + examples, formatter_class=Formatter
    )


def add_data_options(p: argparse.ArgumentParser, *, default: str | None = "digits") -> None:
    p.add_argument("--data", default=default, help="dataset: digits, mnist, fashion-mnist, cifar10")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding mnist/, fashion-mnist/, cifar10/ (default: $ADVLAB_DATA, then the user cache)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, random starts)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (cuda when available)")
    p.add_argument("--batch-size", type=int, default=250, help="examples per forward/backward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; anything else is passed to ``torch.device`` with a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device: {exc}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: CUDA was requested but is not available on this machine; use --device cpu")
    return dev


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal and when not ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def parse_float_list(text: str, name: str) -> list[float]:
    """Parse ``"0.1,0.2,8/255"`` into floats; fractions like ``8/255`` are allowed."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                out.append(float(num) / float(den))
            else:
                out.append(float(part))
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"{name}: cannot read {part!r} as a number (examples: 0.3, 8/255)") from exc
    return out


def output_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
