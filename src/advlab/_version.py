"""The version of advlab, written once: the package metadata (pyproject.toml) and ``advlab.__version__`` read it."""

__version__ = "0.2.0"
