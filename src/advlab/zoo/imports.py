"""Any model a user has, as an advlab Classifier (:func:`load_model`), and as an advlab model folder (:func:`import_model`).

Besides an advlab model folder, :func:`load_model` reads a ``torch.export`` program (``.pt2``), a TorchScript
file, and a Python factory (``my_pkg.nets:make_net`` or ``path/to/nets.py:SmallCNN``) with weights from a
safetensors file or a ``state_dict`` saved by ``torch.save`` (read with ``weights_only=True``). A whole
pickled model (``torch.save(model)``) is never unpickled: it is refused with the safe conversions.

What a model folder's card would say about such a network (normalisation, bounds, input shape, classes,
dataset, the factory's arguments) comes from a :class:`ModelInfo` (the CLI's ``--mean``, ``--std``,
``--bounds``, ``--input-shape``, ``--num-classes``, ``--classes``) and from a *sidecar* JSON file next to the
model (``net.pt2`` -> ``net.advlab.json``; next to the weights file when there is one), for example::

    {"mean": [0.1307], "std": [0.3081], "bounds": [0, 1], "input_shape": [1, 28, 28],
     "num_classes": 10, "classes": ["zero", "one", ...], "dataset": "mnist", "arch_kwargs": {"width": 32}}

Every field is optional; given fields win over the sidecar's. The input shape of an exported program is read
from the program, and the number of classes from one forward pass on zeros of the input shape.

Trust: a factory spec imports and runs the user's Python code, and torch's loaders of TorchScript files and
exported programs are not safe against a malicious file; weights files are safe (safetensors, or
``torch.load(weights_only=True)``). A folder written by :func:`import_model` records the factory (and copies a
``.py`` file or the program into the folder), so loading it runs the same code: load it only where you would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io, validation
from advlab.models import Classifier
from advlab.zoo.base import check_shape
from advlab.zoo.cards import CARD_FILE, CARD_FORMAT, NETWORK_CARD_VERSION, load_folder, save_model, wrap_network
from advlab.zoo.files import ACCEPTED_MODELS, read_state_dict, sniff, unreadable
from advlab.zoo.networks import (
    ExportedModule,
    build_network,
    compare_state,
    file_sha256,
    parse_factory,
    spec_text,
)

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".advlab.json"
"""The sidecar of ``net.pt2`` is ``net.advlab.json`` (of ``w.safetensors``, ``w.advlab.json``)."""

INFERENCE_BATCH = 2
"""Examples of zeros in the forward pass that finds the number of classes."""


# ---------------------------------------------------------------------- what the card would say
@dataclass(frozen=True)
class ModelInfo:
    """What a model card says about a network that the network file alone does not; every field optional.

    Attributes:
        mean: per-channel mean subtracted inside the classifier (raw inputs stay in ``bounds``).
        std: per-channel standard deviation, given with ``mean``.
        bounds: the valid raw input range, ``(low, high)``; ``(0, 1)`` when nobody says.
        input_shape: per-example input shape, ``(C, H, W)`` or ``(D,)``.
        num_classes: number of classes (checked against the network's output).
        classes: class names in label order.
        dataset: the dataset the model was trained on (the CLI's default ``--data``).
        arch_kwargs: keyword arguments of a Python factory.

    Examples:
        >>> ModelInfo(mean=(0.1307,), std=(0.3081,), num_classes=10).over(ModelInfo(num_classes=5)).num_classes
        10
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bounds: tuple[float, float] | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    dataset: str | None = None
    arch_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, _CHECKS[f.name](f.name, value))
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"classes: expected {self.num_classes} names (num_classes), got {len(self.classes)}")

    def over(self, other: ModelInfo) -> ModelInfo:
        """This info where it says something, ``other`` elsewhere."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return dataclasses.replace(other, **given)

    def given(self) -> list[str]:
        """The names of the fields that say something."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    @classmethod
    def from_mapping(cls, data: Any, *, where: str = "info") -> ModelInfo:
        """A :class:`ModelInfo` from a dict (a sidecar JSON), refusing unknown keys with a suggestion.

        Args:
            data: ``{"mean": [...], "num_classes": 10, ...}``.
            where: what the dict came from, prefixed to errors.

        Returns:
            The info.

        Raises:
            ValueError: ``data`` is not a dict, has a key that is not a field, or a field is invalid.

        Examples:
            >>> ModelInfo.from_mapping({"input_shape": [1, 8, 8]}).input_shape
            (1, 8, 8)
        """
        if isinstance(data, ModelInfo):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(
                f'{where}: expected a JSON object such as {{"num_classes": 10}}, got {type(data).__name__}'
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(names)}."
                + validation.did_you_mean(str(unknown[0]), names)
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc


def _floats(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name}: expected one number per channel such as [0.1307], got {value!r}")
    return tuple(validation.check_float(f"{name}[{i}]", v) for i, v in enumerate(value))


def _bounds(name: str, value: Any) -> tuple[float, float]:
    """A pair ``low < high``; either side may be infinite (standardised features)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name}: expected a pair low < high such as [0, 1], got {value!r}")
    return validation.check_bounds(name, tuple(value))


def _names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: expected a list of class names such as ['cat', 'dog'], got {value!r}")
    return tuple(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected a name such as 'mnist', got {value!r}")
    return value


def _kwargs(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f'{name}: expected an object of keyword arguments such as {{"width": 32}}, got {value!r}')
    return {str(k): v for k, v in value.items()}


_CHECKS = {
    "mean": _floats,
    "std": _floats,
    "bounds": _bounds,
    "input_shape": lambda name, value: check_shape(value, name=name),
    "num_classes": lambda name, value: validation.check_int(name, value, minimum=2),
    "classes": _names,
    "dataset": _text,
    "arch_kwargs": _kwargs,
}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the sidecar JSON of a model or weights file is: ``net.pt2`` -> ``net.advlab.json``.

    Args:
        path: the model file (or the weights file, when the model is a factory with weights).

    Returns:
        The sidecar's path (which may not exist).

    Examples:
        >>> sidecar_path("runs/net.pt2")
        PosixPath('runs/net.advlab.json')
    """
    path = Path(path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike[str]) -> ModelInfo:
    """The :class:`ModelInfo` of a sidecar JSON file.

    Args:
        path: the JSON file.

    Returns:
        The info it gives.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 JSON, not an object, an unknown field or an invalid value (naming the file).

    Examples:
        >>> read_sidecar("runs/net.advlab.json").num_classes
        10
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sidecar JSON file")
    try:
        data = io.read_json(path)
    except UnicodeDecodeError as exc:
        raise unreadable(
            path, sniff(path), "a JSON object (UTF-8 text)", detail=f"not UTF-8 text ({exc.reason})"
        ) from exc
    return ModelInfo.from_mapping(data, where=str(path))


# ---------------------------------------------------------------------- loading
def load_model(
    source: str | os.PathLike[str],
    device: str | torch.device | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    sidecar: str | os.PathLike[str] | None = None,
    fallback: ModelInfo | Mapping[str, Any] | None = None,
) -> Classifier:
    """Load any model as an :class:`~advlab.Classifier`: an advlab model folder, an exported program, a
    TorchScript file, or a Python factory with weights.

    Args:
        source: a model folder written by :func:`advlab.zoo.save_model` (or its ``card.json``); a
            ``torch.export`` program (``torch.export.save``, ``.pt2``); a TorchScript file (``torch.jit.save``);
            or a factory spec, ``"my_pkg.nets:make_net"`` (imported from ``sys.path`` and the working directory)
            or ``"path/to/nets.py:SmallCNN"``, called with the info's ``arch_kwargs``.
        device: where to put the model (``"cpu"``, ``"cuda"``); ``None`` means CPU.
        weights: the weights of a factory's network (or to replace a program's): a safetensors file or a
            ``torch.save(model.state_dict())`` file, possibly nested in a training checkpoint (``{"model":
            ...}``); a ``module.`` prefix (``DataParallel``) is removed.
        info: what the card would say (:class:`ModelInfo` or a dict of its fields); wins over the sidecar.
        sidecar: the sidecar JSON; default :func:`sidecar_path` of the weights file, else of the model file,
            used when it exists.
        fallback: fields used only where neither ``info``, the sidecar nor the network says (the CLI passes
            the input shape of the ``--data`` dataset).

    Returns:
        The classifier in eval mode; its ``card`` describes the network as a folder's would (``network``,
        ``arch``, ``input_shape``, ``num_classes``, ``normalization``, ``bounds``, ``classes``, ``dataset``).

    Raises:
        FileNotFoundError: no such folder, file or sidecar.
        ValueError: one line naming the file, what it looked like and what is accepted, for any file that
            cannot be read (a whole pickled model is refused with the safe conversions); weights that do not
            match the network; a network output that does not fit the info; ``weights`` or ``info`` given with a
            model folder (its card already says).

    Examples:
        >>> clf = load_model("nets.py:SmallCNN", weights="w.safetensors", info={"input_shape": (1, 28, 28)})
        >>> clf = load_model("net.pt2", info=ModelInfo(mean=(0.1307,), std=(0.3081,)))
    """
    given = ModelInfo.from_mapping(info or {}, where="info")
    target = _source(source)
    if isinstance(target, Path):
        _refuse_options_for_folder(target, weights, given, sidecar)
        return load_folder(target, device)
    dev = _device(device)
    side = _sidecar_info(sidecar, weights, target)
    merged = given.over(side)
    state = read_state_dict(weights) if weights is not None else None  # before any user code runs
    module = build_network(target, merged.arch_kwargs or {}).eval()  # eval: the forward below must not touch batch norm
    if state is not None:
        _load_weights(module, state, Path(str(weights)))
    elif target["kind"] == "python":
        validation.warn(
            f"{spec_text(target)}: no weights given, so the network keeps the weights its factory made (random "
            "unless it loads its own); pass weights (--weights FILE)"
        )
    program_shape = module.input_shape if isinstance(module, ExportedModule) else None
    found = merged.over(ModelInfo(input_shape=program_shape)).over(
        ModelInfo.from_mapping(fallback or {}, where="fallback")
    )
    found = _with_classes(module, found, str(source))
    card = _card(target, found, weights)
    clf = wrap_network(module, card, where=str(source))
    return clf.to(dev).eval()


def _source(source: str | os.PathLike[str]) -> Path | dict[str, Any]:
    """A model folder (its path) or a network entry, from what ``source`` is; one line for anything else."""
    text = os.fspath(source)
    path = Path(text)
    if not path.exists():
        entry = parse_factory(text)
        if entry is not None:
            return entry
        raise FileNotFoundError(f"{path}: no such model folder or file; expected {ACCEPTED_MODELS}")
    kind = sniff(path)
    if kind in ("folder", "json") or (kind == "safetensors" and (path.parent / CARD_FILE).is_file()):
        return path
    if kind in ("torchscript", "exported"):
        return {"kind": kind, "file": str(path.resolve())}
    raise _not_a_model(path, kind)


def _not_a_model(path: Path, kind: str) -> ValueError:
    """Why a file that exists is not a model, in one line."""
    if kind in ("torch-save", "pickle"):
        try:
            read_state_dict(path, name="")  # torch.load(weights_only=True): a whole pickled model is refused, not run
        except ValueError as exc:
            return exc
        kind, detail = "torch-save", "a state_dict: weights without the network"
    elif kind == "safetensors":
        detail = "weights without the network (and no card.json beside it)"
    elif kind == "python":
        return unreadable(
            path,
            kind,
            ACCEPTED_MODELS,
            detail=f"name the class or function in it that builds the network: --model {path}:Net --weights w.pt",
        )
    elif kind == "onnx":
        return unreadable(
            path,
            kind,
            ACCEPTED_MODELS,
            detail="advlab does not read ONNX (the converter onnx2torch needs torchvision and is no longer "
            "released). Convert it where you have onnx2torch and save a torch.export program: "
            "torch.export.save(torch.export.export(onnx2torch.convert('m.onnx'), (x,)), 'm.pt2')",
        )
    else:
        return unreadable(path, kind, ACCEPTED_MODELS)
    return unreadable(
        path, kind, ACCEPTED_MODELS, detail=f"{detail}; pass --model path/to/nets.py:Net --weights {path.name}"
    )


def _refuse_options_for_folder(folder: Path, weights: Any, given: ModelInfo, sidecar: Any) -> None:
    named = (["weights"] if weights is not None else []) + (["sidecar"] if sidecar is not None else []) + given.given()
    if named:
        raise ValueError(
            f"{folder}: a model folder's card.json already says what {', '.join(named)} would; those apply to "
            "model files and factories. Edit the card, or load the network file instead"
        )


def _device(device: str | torch.device | None) -> torch.device:
    try:
        return torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot use {device!r} ({exc}); pass 'cpu', 'cuda' or 'cuda:N'") from exc


def _sidecar_info(sidecar: Any, weights: Any, entry: Mapping[str, Any]) -> ModelInfo:
    """The explicit sidecar, else the one next to the weights or the model file when it exists."""
    if sidecar is not None:
        return read_sidecar(sidecar)
    near = weights if weights is not None else entry.get("file")
    if near is None:
        return ModelInfo()
    path = sidecar_path(near)
    if not path.is_file():
        return ModelInfo()
    log.info("reading %s", path)
    return read_sidecar(path)


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """The tensors of the weights file ``path`` into ``module``, all names and shapes matching."""
    expected = module.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from DataParallel
    problems = compare_state(expected, state)
    if problems:
        raise ValueError(f"{path}: the weights do not match the network ({'; '.join(problems)})")
    module.load_state_dict(state, strict=True)


def _with_classes(module: nn.Module, info: ModelInfo, where: str) -> ModelInfo:
    """``info`` with ``num_classes`` from a forward pass on zeros of the input shape (checked when given)."""
    if info.input_shape is None:
        return info
    x = torch.zeros(INFERENCE_BATCH, *info.input_shape)
    try:
        with torch.no_grad():
            logits = module(x)
    except Exception as exc:
        raise ValueError(
            f"{where}: a forward pass on zeros of shape {tuple(x.shape)} failed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); is the input shape "
            f"{info.input_shape} right? Give it as --input-shape / input_shape"
        ) from exc
    single = isinstance(logits, torch.Tensor) and logits.dim() == 1 and logits.shape[0] == INFERENCE_BATCH
    if not single and (not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != INFERENCE_BATCH):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{where}: expected logits of shape (N, classes) or (N,) from the network, got {shape}")
    outputs = 1 if single else int(logits.shape[1])
    classes = 2 if outputs == 1 else outputs  # one logit z: a binary classifier, read as logits [0, z]
    if info.num_classes is not None and info.num_classes not in (classes, outputs):
        raise ValueError(f"{where}: num_classes is {info.num_classes} but the network outputs {outputs} logits")
    return dataclasses.replace(info, num_classes=classes)


def _card(entry: Mapping[str, Any], info: ModelInfo, weights: Any) -> dict[str, Any]:
    """The card of a network loaded from a file or factory, as :func:`save_model` will write it."""
    normalization = None
    if info.mean is not None or info.std is not None:
        normalization = {"mean": list(info.mean or ()), "std": list(info.std or ())}
        if info.mean is None or info.std is None:
            raise ValueError("mean/std: give both (per-channel normalisation) or neither")
    return {
        "format": CARD_FORMAT,
        "format_version": NETWORK_CARD_VERSION,
        "arch": spec_text(entry),
        "arch_kwargs": dict(info.arch_kwargs or {}),
        "network": dict(entry),
        "dataset": info.dataset,
        "input_shape": list(info.input_shape) if info.input_shape is not None else None,
        "num_classes": info.num_classes,
        "classes": list(info.classes) if info.classes is not None else None,
        "normalization": normalization,
        "bounds": list(info.bounds or (0.0, 1.0)),
        "weights": {"file": str(Path(weights).resolve())} if weights is not None else None,
    }


# ---------------------------------------------------------------------- importing
PROBE_BATCH = 4
"""Random inputs on which an imported folder must give the source's logits."""


def import_model(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    sidecar: str | os.PathLike[str] | None = None,
    fallback: ModelInfo | Mapping[str, Any] | None = None,
) -> Path:
    """Turn any model :func:`load_model` reads into an advlab model folder (``card.json`` + ``model.safetensors``).

    The weights are written with safetensors (never pickled), every file atomically. The folder records how
    to rebuild the network: a ``module:function`` spec as it is (it must stay importable), a ``.py`` file,
    TorchScript file or exported program as a copy inside the folder (``network.py``, ``network.pt``,
    ``network.pt2``); loading the folder runs that code (see the module's trust note). The card's
    ``extra.imported_from`` names the source files and their SHA-256. The folder is loaded back and must give
    the source's logits on random inputs.

    Args:
        source: the model (see :func:`load_model`).
        out: the folder to write (created when missing; a model there is replaced).
        weights: the weights of a factory's network.
        info: what the card should say (see :class:`ModelInfo`); wins over the sidecar.
        sidecar: the sidecar JSON (default: next to the weights or model file).
        fallback: fields used where nothing else says (see :func:`load_model`).

    Returns:
        The folder.

    Raises:
        ValueError: everything :func:`load_model` raises; an input shape nobody gives (the card needs it); a
            folder that does not give the source's logits.

    Examples:
        >>> import_model("nets.py:SmallCNN", "runs/mine", weights="w.pt", info={"input_shape": [1, 28, 28]})
        PosixPath('runs/mine')
    """
    clf = load_model(source, weights=weights, info=info, sidecar=sidecar, fallback=fallback)
    if clf.input_shape is None or clf.num_classes is None:
        raise ValueError(
            f"{source}: the input shape is unknown, and a model folder records it; give it (--input-shape 1,28,28, "
            'or "input_shape": [1, 28, 28] in the sidecar JSON)'
        )
    origin: dict[str, Any] = {"model": os.fspath(source), "weights": os.fspath(weights) if weights else None}
    for key in ("model", "weights"):
        value = origin[key]
        if value is not None and Path(value).is_file():
            origin[f"{key}_sha256"] = file_sha256(Path(value))
    folder = save_model(clf, out, extra={"imported_from": origin})
    _check_same_logits(clf, load_folder(folder), f"{folder} (imported from {source})")
    return folder


def _check_same_logits(source: Classifier, saved: Classifier, where: str) -> None:
    """The saved folder's model computes the source's logits (unless the source itself is random)."""
    lo, hi = source.bounds
    g = torch.Generator().manual_seed(0)
    x = torch.rand(PROBE_BATCH, *(source.input_shape or ()), generator=g)
    x = lo + (hi - lo) * x if math.isfinite(lo) and math.isfinite(hi) else torch.randn(x.shape, generator=g)
    with torch.no_grad():
        first, again, loaded = source(x), source(x), saved(x)
    if not torch.equal(first, again):
        log.info("%s: the model is random at inference; its logits are not compared", where)
        return
    if not torch.allclose(first, loaded, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"{where}: the folder's model gives other logits than the source (largest difference "
            f"{(first - loaded).abs().max().item():.3g}); its network code or a tensor that is not in its "
            "state_dict differs. Export the network (torch.export) and import the .pt2 instead"
        )
