"""Provenance for every number advlab writes: package versions, git commit, machine, time."""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy
import torch

from advlab._version import __version__


def versions() -> dict[str, str]:
    """Versions of advlab, Python and the main dependencies."""
    out = {
        "advlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    for dist in ("scikit-learn", "safetensors"):  # read from metadata: importing scikit-learn takes seconds
        with contextlib.suppress(metadata.PackageNotFoundError):  # hard dependencies, but never fail here
            out[dist] = metadata.version(dist)
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the advlab source tree (``None`` when not run from a checkout); ``-dirty`` if modified."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: Any = None) -> str:
    """A short description of the compute device, e.g. ``cpu (2 threads)`` or the CUDA device name."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def provenance(**extra: Any) -> dict[str, Any]:
    """A provenance record: versions, git commit, host, UTC time, plus ``extra`` fields."""
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
