"""Where dataset files live: the data-directory precedence (argument > ``$ADVLAB_DATA`` > user cache)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ADVLAB_DATA"
"""Environment variable naming the data directory when no ``data_dir`` / ``--data-dir`` is given."""


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/advlab`` when ``XDG_CACHE_HOME`` is set to an absolute path, else ``~/.cache/advlab``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "advlab"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds one sub-folder per dataset (``mnist/``, ``fashion-mnist/``, ``cifar10/``).

    Precedence: the explicit ``data_dir`` argument (the CLI's ``--data-dir``), then the ``ADVLAB_DATA``
    environment variable (when set and non-empty), then the user cache directory (``$XDG_CACHE_HOME/advlab``
    or ``~/.cache/advlab``). ``~`` is expanded. The folder is not created here; downloads create it.

    Args:
        data_dir: explicit folder, or ``None`` to fall back to the environment and the cache.

    Returns:
        The resolved absolute path (it may not exist yet).

    Raises:
        TypeError: ``data_dir`` is not a string or path.
        ValueError: ``data_dir`` is empty or names an existing file rather than a folder.

    Examples:
        >>> resolve_data_dir("/work/shared/data")
        PosixPath('/work/shared/data')
    """
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir: expected a folder path (str or Path), got {type(data_dir).__name__}")
        if str(data_dir).strip() == "":
            raise ValueError("data_dir: got an empty path; pass a folder or None to use $ADVLAB_DATA / the cache")
        source, path = "data_dir", Path(data_dir)
    elif os.environ.get(ENV_VAR, "").strip():
        source, path = f"${ENV_VAR}", Path(os.environ[ENV_VAR].strip())
    else:
        source, path = "the user cache directory", user_cache_dir()
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{source}: {path} is a file, expected a folder holding mnist/, fashion-mnist/, cifar10/")
    return path
