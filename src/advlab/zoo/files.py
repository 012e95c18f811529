"""What a model file is, read without running it, and weights read without unpickling code.

:func:`sniff` looks at a file's first bytes and, for a zip archive, at the names inside it, to tell an advlab
model folder, a safetensors file, a ``torch.save`` checkpoint, a TorchScript file, a ``torch.export`` program, a
bare Python pickle, an ONNX or HDF5 model and JSON or Python text apart; nothing in the file is executed.
:func:`read_state_dict` reads weights from a safetensors file or a ``torch.save(model.state_dict())``
checkpoint through ``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers: a whole pickled model (``torch.save(model)``) is refused with the safe conversions instead
of being unpickled. Every file that cannot be read gets :func:`unreadable`'s one line, naming the file, what it
looked like and what is accepted.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

ACCEPTED_MODELS = (
    "an advlab model folder (card.json + model.safetensors), a torch.export program (.pt2), a TorchScript file, "
    "or a Python factory with weights (my_pkg.nets:make_net or path/to/nets.py:Net with --weights "
    "w.safetensors or a state_dict .pt)"
)
"""What ``--model`` (and :func:`advlab.zoo.load_model`) accepts, for error messages."""

ACCEPTED_WEIGHTS = (
    "a safetensors file or a state_dict saved with torch.save(model.state_dict(), path) (.pt/.pth), read with "
    "torch.load(weights_only=True)"
)
"""What ``--weights`` accepts, for error messages."""

SAFE_CONVERSIONS = (
    "save the weights instead, torch.save(model.state_dict(), 'w.pt'), and pass the network's class with them "
    "(--model path/to/nets.py:Net --weights w.pt), or save the whole network without pickle: "
    "torch.export.save(torch.export.export(model, (x,)), 'net.pt2') or torch.jit.save(torch.jit.script(model), "
    "'net.pt'); 'advlab import' then makes an advlab model folder of either"
)
"""How to turn a pickled model into something advlab reads."""

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")
"""Keys under which training checkpoints commonly nest the model's state_dict (``{"model": ..., "epoch": 3}``)."""

DESCRIPTIONS = {
    "folder": "a folder",
    "empty": "an empty file",
    "safetensors": "a safetensors weights file",
    "torch-save": "a torch.save checkpoint",
    "torchscript": "a TorchScript file",
    "exported": "a torch.export program",
    "zip": "a zip archive that is not a TorchScript file, a torch.export program or a torch.save checkpoint",
    "pickle": "a Python pickle",
    "onnx": "an ONNX model",
    "hdf5": "an HDF5 file (a Keras/TensorFlow model?)",
    "json": "a JSON file",
    "python": "a Python source file",
    "text": "a text file",
    "binary": "a binary file of unknown format",
}
"""One phrase per kind that :func:`sniff` returns."""

SNIFF_BYTES = 4096
"""How much of a file :func:`sniff` reads to recognise text."""

_PICKLE_PROTOCOL = re.compile(rb"^\x80[\x02-\x05]")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def sniff(path: str | Path) -> str:
    """The kind of file ``path`` is, from its first bytes and (for a zip archive) the names inside it.

    Nothing in the file is executed or unpickled.

    Args:
        path: an existing file or folder.

    Returns:
        One of the keys of :data:`DESCRIPTIONS`: ``"folder"``, ``"empty"``, ``"safetensors"``, ``"torch-save"``,
        ``"torchscript"``, ``"exported"``, ``"zip"``, ``"pickle"``, ``"onnx"``, ``"hdf5"``, ``"json"``,
        ``"python"``, ``"text"`` or ``"binary"``.

    Examples:
        >>> sniff("runs/net.pt2")
        'exported'
    """
    path = Path(path)
    if path.is_dir():
        return "folder"
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        return "empty"
    if zipfile.is_zipfile(path):
        return _zip_kind(path)
    if _PICKLE_PROTOCOL.match(head):
        return "pickle"
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if _is_safetensors(head, path.stat().st_size):
        return "safetensors"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    return _text_kind(head, path)


def _zip_kind(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    tails = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in tails or "serialized_exported_program.json" in tails:
        return "exported"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "torch-save"
    return "zip"


def _is_safetensors(head: bytes, size: int) -> bool:
    """A little-endian u64 header length that fits in the file, followed by a JSON object."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def _text_kind(head: bytes, path: Path) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a byte that no UTF-8 text has (not a character cut at the end)
            return "binary"
        text = head[: exc.start].decode("utf-8")
    if path.suffix == ".py":
        return "python"
    if text.lstrip().startswith(("{", "[")):
        return "json"
    return "text"


def describe(kind: str) -> str:
    """A phrase for a kind returned by :func:`sniff` (``"a Python pickle"``)."""
    return DESCRIPTIONS.get(kind, kind)


def unreadable(path: str | Path, kind: str, accepted: str, *, name: str = "", detail: str = "") -> ValueError:
    """The one-line error for a file advlab cannot read: the file, what it looked like, what is accepted.

    Args:
        path: the file.
        kind: what :func:`sniff` said it is.
        accepted: what the argument accepts (:data:`ACCEPTED_MODELS`, :data:`ACCEPTED_WEIGHTS`).
        name: the argument or option that named the file (``"--model"``), prefixed to the message.
        detail: why it was refused, when that says more than its kind; replaces the default
            ``"expected <accepted>"``.

    Returns:
        A ``ValueError`` to raise.

    Examples:
        >>> str(unreadable("w.bin", "binary", ACCEPTED_WEIGHTS, name="--weights"))[:40]
        '--weights: w.bin is a binary file of un'
    """
    prefix = f"{name}: " if name else ""
    reason = detail or f"expected {accepted}"
    return ValueError(f"{prefix}{path} is {describe(kind)}; {reason}")


def pickled_model_error(path: str | Path, exc: BaseException | None = None, *, name: str = "") -> ValueError:
    """The refusal of a whole pickled model (``torch.save(model)``), naming its class when torch said it."""
    found = _UNSUPPORTED_GLOBAL.search(str(exc or ""))
    what = f" (it pickles {found.group(1)})" if found else ""
    return unreadable(
        path,
        "pickle",
        ACCEPTED_MODELS,
        name=name,
        detail=f"a whole pickled model{what}, which advlab never unpickles because unpickling runs code. "
        + SAFE_CONVERSIONS[0].upper()
        + SAFE_CONVERSIONS[1:],
    )


def read_state_dict(path: str | os.PathLike[str], *, name: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read without executing anything in it.

    Args:
        path: a safetensors file, or a ``torch.save`` checkpoint of a ``state_dict`` (possibly nested in a
            training checkpoint under one of :data:`STATE_DICT_KEYS`, e.g. ``{"model": ..., "epoch": 3}``).
        name: the argument that named the file, for messages (``"--weights"``).

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file and what it is, for anything else: a whole pickled model (with
            the safe conversions), a TorchScript file or exported program (a network, not weights), a
            checkpoint that holds no state_dict (its keys listed), a corrupt or unknown file.

    Examples:
        >>> state = read_state_dict("w.safetensors")
        >>> net.load_state_dict(state)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path}: no such file")
    kind = sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path, name)
    if kind in ("torch-save", "pickle"):
        return _tensors_of(_torch_load(path, name), path, name)
    if kind in ("torchscript", "exported"):
        raise unreadable(
            path,
            kind,
            ACCEPTED_WEIGHTS,
            name=name,
            detail="that is a whole network: pass it as --model, without --weights",
        )
    raise unreadable(path, kind, ACCEPTED_WEIGHTS, name=name)


def _read_safetensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise unreadable(path, "safetensors", ACCEPTED_WEIGHTS, name=name, detail=f"it is corrupt ({exc})") from exc


def _torch_load(path: Path, name: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise pickled_model_error(path, exc, name=name) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise unreadable(
            path, "torch-save", ACCEPTED_WEIGHTS, name=name, detail=f"torch cannot read it ({str(exc).splitlines()[0]})"
        ) from exc


def _tensors_of(obj: Any, path: Path, name: str) -> dict[str, torch.Tensor]:
    """``obj`` if it is a ``{name: tensor}`` mapping, else the one nested under a usual checkpoint key."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        nested = [k for k in STATE_DICT_KEYS if _is_state_dict(obj.get(k))]
        if nested:
            return dict(obj[nested[0]])
        keys = ", ".join(map(repr, list(obj)[:8]))
        detail = f"it holds no state_dict of tensors (top-level keys: {keys or 'none'}); expected {ACCEPTED_WEIGHTS}"
    else:
        detail = f"it holds a {type(obj).__name__}, not a state_dict; expected {ACCEPTED_WEIGHTS}"
    raise unreadable(path, "torch-save", ACCEPTED_WEIGHTS, name=name, detail=detail)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )
