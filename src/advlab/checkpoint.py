"""Resumable state for long runs (evaluations, training): one atomic safetensors file per folder, keyed by config.

A :class:`Checkpoint` holds tensors and a JSON-friendly state dict in one ``.safetensors`` file (the state rides in
the file's metadata), written atomically, so a run killed at any moment leaves either the previous checkpoint or
the new one. It remembers a hash of the run's configuration: a later run with the same configuration resumes, one
with another configuration is refused (naming what differs) unless it asks to start over.

Examples:
    >>> ckpt = Checkpoint("runs/eval", {"eps": [0.3], "seed": 0})
    >>> saved = ckpt.load()            # None on a fresh start
    >>> ckpt.save({"x_adv": x_adv}, {"done": False})
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advlab import io

log = logging.getLogger(__name__)

FORMAT = 2
"""Version of the checkpoint layout; a checkpoint of another format is refused like one of another config."""


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration's canonical JSON (sorted keys; non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Saved:
    """What :meth:`Checkpoint.load` found: the tensors and the state dict."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


class Checkpoint:
    """The resumable state of one run in ``directory`` (``None``: a run without checkpoints, saves are no-ops).

    Args:
        directory: the folder; created on the first save.
        config: everything that must match for a run to resume (settings, data and model fingerprints).
        file: file name inside the folder.
        overwrite: discard a checkpoint of another configuration instead of refusing it.
        argument: the argument or option that gave ``directory``, for error messages.
    """

    def __init__(
        self,
        directory: str | Path | None,
        config: Mapping[str, Any],
        *,
        file: str = "state.safetensors",
        overwrite: bool = False,
        argument: str = "checkpoint_dir",
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.config = dict(config)
        self.hash = config_hash({"format": FORMAT, **self.config})
        self.file = file
        self.overwrite = overwrite
        self.argument = argument

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / self.file

    def load(self) -> Saved | None:
        """The saved tensors and state, or ``None`` when there is nothing to resume.

        Raises:
            ValueError: the file is not a readable checkpoint, or holds another configuration (unless
                ``overwrite``, which then starts afresh).
        """
        path = self.path
        if path is None or not path.exists():
            return None
        try:
            meta = self._read_meta(path)
        except ValueError:
            if not self.overwrite:
                raise
            log.info("discarding the unreadable checkpoint %s (overwrite asked)", path)
            return None
        if meta.get("config_hash") != self.hash:
            if self.overwrite:
                log.info("discarding the checkpoint in %s (another configuration; overwrite asked)", self.directory)
                return None
            raise ValueError(self._mismatch(meta.get("config") or {}))
        from safetensors.torch import load_file

        log.info("resuming from the checkpoint in %s", self.directory)
        return Saved(load_file(str(path)), dict(meta.get("state") or {}))

    def save(self, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
        """Write ``tensors`` and ``state`` atomically (booleans are stored as uint8, restored by the caller)."""
        if self.path is None:
            return
        meta = {"format": FORMAT, "config_hash": self.hash, "config": self.config, "state": dict(state)}
        plain = {k: (v.to(torch.uint8) if v.dtype == torch.bool else v) for k, v in tensors.items()}
        io.save_safetensors(self.path, plain, metadata={"checkpoint": json.dumps(meta, default=io.json_default)})

    def _read_meta(self, path: Path) -> dict[str, Any]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                raw = (fh.metadata() or {}).get("checkpoint")
        except Exception as exc:  # a truncated or foreign file
            raise ValueError(
                f"{self.argument}: {path} is not a readable advlab checkpoint ({exc}); delete it or start over "
                "with overwrite=True (--overwrite)"
            ) from exc
        if raw is None:
            return {"config": {"format": "an older advlab version"}}
        return dict(json.loads(raw))

    def _mismatch(self, old: Mapping[str, Any]) -> str:
        diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
        return (
            f"{self.argument}: {self.directory} holds a checkpoint of another configuration (differs in: "
            f"{', '.join(diff) or 'format'}); resume with the same settings, choose another folder, or pass "
            "overwrite=True (--overwrite) to start over"
        )
