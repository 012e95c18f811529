"""Saved models: a folder with ``model.safetensors`` (weights, never pickle) and ``card.json`` (how to rebuild and what it is).

The card records everything needed to rebuild the :class:`advlab.Classifier` (architecture, its keyword
arguments, input shape, normalisation, bounds) and what the numbers mean (dataset, training settings,
accuracy, seed, package versions, git commit), plus the SHA-256 of the weights file so a corrupt or swapped
file is caught before it is parsed.

A card names a registered architecture (``arch``, ``format_version`` 1: loading runs no code of the folder's), or
describes a user's own network in a ``network`` entry (``format_version`` 2, see :mod:`advlab.zoo.networks`): a
``module:function`` spec, or a file copied into the folder (``network.py``, ``network.pt``, ``network.pt2``) with
its SHA-256. Loading such a folder runs that network's code. On disk the entry's ``file`` is a name inside the
folder; in ``clf.card`` it is the absolute path, so a loaded model can be saved elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from advlab import io, provenance, validation
from advlab.models import Classifier
from advlab.zoo.base import ARCHS, check_shape, count_parameters, create, resolve_kwargs
from advlab.zoo.networks import KINDS, build_network, compare_state, write_network

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FORMAT = "advlab-model"
CARD_VERSION = 1
"""The format version of a card naming a registered architecture."""
NETWORK_CARD_VERSION = 2
"""The format version of a card with a ``network`` entry (a user's own network; older advlab refuses it)."""
REQUIRED_KEYS = (
    "format",
    "format_version",
    "arch",
    "arch_kwargs",
    "input_shape",
    "num_classes",
    "normalization",
    "bounds",
    "weights",
)
"""Keys ``load_model`` needs; the others (dataset, training, accuracy, ...) are descriptive."""


# ---------------------------------------------------------------------- building
def _check_bounds(bounds: Any) -> tuple[float, float]:
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError(f"bounds: expected a pair (low, high) such as (0.0, 1.0), got {bounds!r}")
    return validation.check_bounds("bounds", list(bounds))  # either side may be infinite (standardised features)


def _check_normalization(mean: Any, std: Any, input_shape: tuple[int, ...]) -> dict[str, list[float]] | None:
    if mean is None and std is None:
        return None
    if (mean is None) != (std is None):
        raise ValueError("mean/std: give both (per-channel normalisation) or neither")
    out = {}
    for name, values in (("mean", mean), ("std", std)):
        if isinstance(values, (int, float)):
            values = [values]
        if isinstance(values, torch.Tensor):
            values = values.flatten().tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{name}: expected one number per channel such as (0.1307,), got {values!r}")
        out[name] = [validation.check_float(f"{name}[{i}]", v) for i, v in enumerate(values)]
    channels = input_shape[0]
    for name, values in out.items():
        if len(values) not in (1, channels):
            raise ValueError(
                f"{name}: expected 1 or {channels} values (one per channel of input_shape {input_shape}), "
                f"got {len(values)}"
            )
    if len(out["mean"]) != len(out["std"]):
        raise ValueError(f"mean/std: expected the same length, got {len(out['mean'])} and {len(out['std'])}")
    if any(s <= 0 for s in out["std"]):
        raise ValueError(f"std: expected positive values, got {out['std']}")
    return out


def build_classifier(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
    **arch_kwargs: Any,
) -> Classifier:
    """Build architecture ``name`` wrapped in a :class:`~advlab.Classifier` whose card says how it was built.

    Args:
        name: registered architecture (see :func:`advlab.zoo.list_archs`).
        input_shape: per-example shape, e.g. ``(1, 28, 28)``.
        num_classes: number of classes.
        mean: per-channel mean subtracted inside the classifier (raw inputs stay in ``bounds``), or ``None``.
        std: per-channel standard deviation, given together with ``mean``.
        bounds: valid raw input range.
        seed: seed of the weight initialisation (see :func:`advlab.zoo.create`).
        **arch_kwargs: the architecture's own settings.

    Returns:
        A ``Classifier`` whose ``card`` holds ``format``, ``format_version``, ``arch``, ``arch_kwargs`` (all of
        them, defaults included), ``input_shape``, ``num_classes``, ``normalization`` and ``bounds``.

    Raises:
        ValueError: unknown architecture or keyword, unsuitable input shape, bad normalisation or bounds.

    Examples:
        >>> clf = build_classifier("wong-cnn", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,))
        >>> clf.card["arch"]
        'wong-cnn'
    """
    spec = ARCHS.get(name)
    input_shape = check_shape(input_shape)
    num_classes = validation.check_int("num_classes", num_classes, minimum=2)
    normalization = _check_normalization(mean, std, input_shape)
    lo, hi = _check_bounds(bounds)
    kwargs = resolve_kwargs(spec.name, arch_kwargs)
    module = create(spec.name, input_shape, num_classes, seed=seed, **kwargs)
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "arch": spec.name,
        "arch_kwargs": kwargs,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "normalization": normalization,
        "bounds": [lo, hi],
        "init_seed": seed,
    }
    return Classifier(
        module,
        mean=normalization["mean"] if normalization else None,
        std=normalization["std"] if normalization else None,
        bounds=(lo, hi),
        num_classes=num_classes,
        input_shape=input_shape,
        card=card,
    )


# ---------------------------------------------------------------------- saving
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_mapping(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a dict, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


FRACTION_KEYS = ("train", "test")
"""Accuracy entries that must be fractions in [0, 1] (a percentage such as 98.7 is refused)."""


def _check_numbers(name: str, value: Any) -> Any:
    """A number, or a dict of numbers (nested); numbers stay numbers, never strings."""
    if isinstance(value, Mapping):
        return {str(k): _check_numbers(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return validation.check_float(name, value)


def _check_accuracy(accuracy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    accuracy = _check_mapping("accuracy", accuracy)
    if accuracy is None:
        return None
    out = {k: _check_numbers(f"accuracy[{k!r}]", v) for k, v in accuracy.items()}
    for key in FRACTION_KEYS:
        if key in out:
            out[key] = validation.check_float(f"accuracy[{key!r}]", out[key], minimum=0.0, maximum=1.0)
    return out


def _normalization_of(clf: Classifier, recorded: Any) -> dict[str, list[float]] | None:
    """The classifier's normalisation, keeping the card's exact decimals when they agree with the tensors."""
    if not clf.has_normalization:
        return None
    current = {"mean": clf.mean.tolist(), "std": clf.std.tolist()}
    if isinstance(recorded, Mapping) and all(
        isinstance(recorded.get(k), list)
        and len(recorded[k]) == len(current[k])
        and torch.allclose(torch.tensor(recorded[k], dtype=torch.float32), getattr(clf, k).cpu())
        for k in ("mean", "std")
    ):
        return {"mean": list(recorded["mean"]), "std": list(recorded["std"])}
    return current


def save_model(
    clf: Classifier,
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    training: Mapping[str, Any] | None = None,
    accuracy: Mapping[str, float] | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
    network: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``clf`` to the folder ``path`` as ``model.safetensors`` + ``card.json``, both atomically.

    The card starts from ``clf.card`` (set by :func:`build_classifier` or :func:`advlab.zoo.load_model`,
    possibly extended by a trainer); the arguments given here override its ``dataset``, ``training``,
    ``accuracy``, ``seed`` and ``extra`` fields. Weights are written first and the card last, so a crash in
    between leaves a card whose SHA-256 does not match and :func:`load_folder` refuses the folder instead of
    loading mismatched weights. On success ``clf.card`` is replaced by the card written.

    A network that is not a registered architecture (your own class) is saved when ``network`` says how to
    rebuild it, or when ``clf`` was loaded from a file or factory (its card already says): the card then holds
    a ``network`` entry (see :mod:`advlab.zoo.networks`) and, for a file, the folder a copy of it
    (``network.py``, ``network.pt`` or ``network.pt2``). Loading such a folder runs that network's code.

    Args:
        clf: a classifier built by :func:`build_classifier`, loaded by :func:`advlab.zoo.load_model`, or any
            ``Classifier`` (with ``network``).
        path: output folder (created when missing); an existing model there is overwritten.
        dataset: dataset name, e.g. ``"mnist"``.
        training: training settings, e.g. ``{"defense": "pgd-at", "epochs": 5, "eps": 0.3, "lr": 1e-3}``.
        accuracy: numbers (or dicts of numbers), e.g. ``{"train": 0.99, "test": 0.987, "pgd": {"0.3": 0.89}}``;
            ``train`` and ``test`` must be fractions in [0, 1].
        seed: the training seed.
        extra: anything else JSON-serialisable (stored under ``card["extra"]``), e.g. a defense's state.
        network: how to rebuild a network of your own: ``"my_pkg.nets:make_net"`` (imported from the
            environment when loaded), ``"path/to/nets.py:Net"`` (the file is copied into the folder),
            ``"export"`` (``torch.export``, needs ``clf.input_shape``) or ``"torchscript"``
            (``torch.jit.script``). A factory is called once here to check that it builds these weights.
        arch_kwargs: keyword arguments of the ``network`` factory (stored as the card's ``arch_kwargs``).

    Returns:
        The folder path.

    Raises:
        ValueError: the classifier has no architecture in its card and no ``network``, a factory builds other
            weights, torch cannot export or script the network, an accuracy is not a number or its
            train/test value is not in [0, 1], a field cannot be written to JSON, or ``path`` is an existing file.
        TypeError: ``training``/``accuracy``/``extra`` are not dicts.

    Examples:
        >>> save_model(clf, "runs/m1", dataset="mnist", training={"epochs": 5}, accuracy={"test": 0.987}, seed=0)
        PosixPath('runs/m1')
    """
    base = _card_of(clf, network, arch_kwargs)
    folder = _output_folder(path)
    given = _given_fields(base, dataset=dataset, training=training, accuracy=accuracy, seed=seed, extra=extra)
    card = _new_card(clf, base, given)
    try:  # fail before writing anything when a field cannot be stored as JSON
        json.dumps(card, default=io.json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"save_model: the card cannot be written as JSON ({exc}); pass plain numbers, strings, lists and dicts"
        ) from exc
    _write_model(clf, folder, card)
    log.debug("saved %s to %s", card_summary(card), folder)
    return folder


def _card_of(clf: Classifier, network: str | None, arch_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card of a classifier that :func:`save_model` can rebuild: a registered architecture or a network entry."""
    if not isinstance(clf, Classifier):
        raise TypeError(
            f"clf: expected an advlab.Classifier built by advlab.zoo.build_classifier, got {type(clf).__name__}"
        )
    base = dict(clf.card)
    if network is not None:
        if not isinstance(network, str):
            raise TypeError(f"network: expected a string such as 'path/to/nets.py:Net', got {type(network).__name__}")
        base["network"] = network
        base["arch"] = network if ":" in network else type(clf.module).__name__
        base["arch_kwargs"] = _check_mapping("arch_kwargs", arch_kwargs) or {}
    elif arch_kwargs is not None:
        raise ValueError("arch_kwargs: given without network; they are the arguments of the network factory")
    if base.get("network") is None and (not isinstance(base.get("arch"), str) or base["arch"] not in ARCHS):
        raise ValueError(
            "clf: its card names no registered architecture (card['arch'] is "
            f"{base.get('arch')!r}); build the model with advlab.zoo.build_classifier(...), or say how to rebuild "
            "your own network: network='path/to/nets.py:Net' (or 'my_pkg.nets:make_net', 'export', 'torchscript')"
        )
    return base


def _output_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: {folder} is an existing file; save_model writes a folder. Choose another path.")
    return folder


def _given_fields(
    base: Mapping[str, Any],
    *,
    dataset: str | None,
    training: Mapping[str, Any] | None,
    accuracy: Mapping[str, float] | None,
    seed: int | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The fields :func:`save_model` was given, checked, each falling back to the classifier's card."""
    if seed is not None:
        seed = validation.check_int("seed", seed)
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError(f"dataset: expected a name such as 'mnist', got {type(dataset).__name__}")
    return {
        "dataset": dataset if dataset is not None else base.get("dataset"),
        "training": _check_mapping("training", training) if training is not None else base.get("training"),
        "accuracy": _check_accuracy(accuracy) if accuracy is not None else base.get("accuracy"),
        "seed": seed if seed is not None else base.get("seed"),
        "extra": _check_mapping("extra", extra) if extra is not None else base.get("extra"),
    }


def _new_card(clf: Classifier, base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The card to write: how to rebuild the classifier, the given fields, versions and time (weights added later)."""
    input_shape = clf.input_shape or tuple(base.get("input_shape") or ())
    num_classes = clf.num_classes or base.get("num_classes")
    if not input_shape or not num_classes:
        raise ValueError(
            "clf: input_shape and num_classes are unknown; give them to the classifier (Classifier(net, "
            "input_shape=(1, 28, 28), num_classes=10)) or build the model with advlab.zoo.build_classifier"
        )
    network = base.get("network")
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION if network is None else NETWORK_CARD_VERSION,
        "arch": base["arch"],
        "arch_kwargs": dict(base.get("arch_kwargs") or {}),
        "dataset": given["dataset"],
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "normalization": _normalization_of(clf, base.get("normalization")),
        "bounds": list(clf.bounds),
        "training": given["training"],
        "accuracy": given["accuracy"],
        "seed": given["seed"],
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if network is not None:
        card["network"] = network  # resolved into a file of the folder by _write_model
    if base.get("classes") is not None:
        card["classes"] = list(base["classes"])
    if "init_seed" in base:
        card["init_seed"] = base["init_seed"]
    if given["extra"] is not None:
        card["extra"] = given["extra"]
    return card


def _write_model(clf: Classifier, folder: Path, card: dict[str, Any]) -> None:
    """Network file, weights, then the card with their SHA-256 (a crash in between leaves a folder load_model refuses)."""
    if card.get("network") is not None:
        card["network"] = write_network(
            folder, clf.module, card["network"], kwargs=card["arch_kwargs"], input_shape=tuple(card["input_shape"])
        )
    state = clf.module.state_dict()
    weights_path = folder / WEIGHTS_FILE
    io.save_safetensors(weights_path, state, metadata={"format": "pt", "advlab_arch": card["arch"]})
    card["weights"] = {
        "file": WEIGHTS_FILE,
        "sha256": _sha256(weights_path),
        "parameters": count_parameters(clf.module),
        "tensors": len(state),
    }
    io.write_json(folder / CARD_FILE, card)
    clf.card = _in_memory(json.loads(json.dumps(card, default=io.json_default)), folder)


def _in_memory(card: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A loaded or saved card as ``clf.card`` holds it: its network file as an absolute path (on disk, a name)."""
    network = card.get("network")
    if isinstance(network, dict) and isinstance(network.get("file"), str):
        card["network"] = {**network, "file": str((folder / network["file"]).resolve())}
    return card


# ---------------------------------------------------------------------- loading
def _resolve_folder(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    given = Path(path)
    if not given.exists():
        raise FileNotFoundError(
            f"{given}: no such model folder; pass the folder written by advlab.zoo.save_model "
            "(e.g. the --out of 'advlab train') or its card.json"
        )
    if given.is_dir():
        folder, card_path = given, given / CARD_FILE
    elif given.name == WEIGHTS_FILE or given.suffix == ".safetensors":
        folder, card_path = given.parent, given.parent / CARD_FILE
    else:
        folder, card_path = given.parent, given
    if not card_path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
        raise FileNotFoundError(
            f"{card_path}: missing; {folder} is not a model folder written by advlab.zoo.save_model "
            f"(it holds: {', '.join(found) or 'nothing'}). Pass the folder that contains card.json and "
            "model.safetensors."
        )
    return folder, card_path


def _card_error(card_path: Path, what: str) -> ValueError:
    return ValueError(f"{card_path}: {what}. Re-save the model with advlab.zoo.save_model, or fix the card.")


def _read_card(card_path: Path) -> dict[str, Any]:
    try:
        card = io.read_json(card_path)
    except UnicodeDecodeError as exc:
        raise _card_error(
            card_path,
            f"not UTF-8 text, as a card.json is ({exc.reason}: byte 0x{exc.object[exc.start]:02x} at {exc.start})",
        ) from exc
    except ValueError as exc:  # not valid JSON
        raise _card_error(
            card_path, f"not valid JSON ({exc.__cause__ or exc}); a card.json is what save_model writes"
        ) from exc
    if not isinstance(card, dict):
        raise _card_error(card_path, f"expected a JSON object, got {type(card).__name__}")
    if card.get("format") != CARD_FORMAT:
        raise _card_error(
            card_path, f"not an advlab model card (format is {card.get('format')!r}, expected {CARD_FORMAT!r})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise _card_error(card_path, f"missing key(s) {', '.join(missing)}")
    version = card["format_version"]
    if not isinstance(version, int) or version > NETWORK_CARD_VERSION or version < 1:
        raise ValueError(
            f"{card_path}: format_version {version!r} is not supported (this advlab reads versions 1 to "
            f"{NETWORK_CARD_VERSION}); upgrade advlab or re-save the model"
        )
    if card.get("network") is not None:
        _check_network_entry(card_path, card["network"])
    elif not isinstance(card["arch"], str) or card["arch"] not in ARCHS:
        raise _card_error(card_path, f"unknown arch {card['arch']!r}; known: {', '.join(ARCHS.names())}")
    if not isinstance(card["arch_kwargs"], dict):
        raise _card_error(card_path, f"arch_kwargs must be an object, got {type(card['arch_kwargs']).__name__}")
    weights = card["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("file"), str):
        raise _card_error(card_path, 'weights must be an object with a "file" name')
    _check_file_name(card_path, "weights", weights["file"])
    return card


def _check_file_name(card_path: Path, what: str, name: str) -> None:
    if Path(name).name != name or name in ("", ".", ".."):
        raise _card_error(card_path, f"{what} file {name!r} must be a plain file name inside the model folder")


def _check_network_entry(card_path: Path, network: Any) -> None:
    if not isinstance(network, dict) or network.get("kind") not in KINDS:
        raise _card_error(card_path, f"network must be an object whose kind is one of {', '.join(KINDS)}")
    if "file" in network:
        if not isinstance(network["file"], str):
            raise _card_error(card_path, 'network "file" must be a file name')
        _check_file_name(card_path, "network", network["file"])


def _card_fields(card: Mapping[str, Any], *, complete: bool = True) -> dict[str, Any]:
    """The card's input shape, classes, normalisation and bounds, checked (shape and classes may be ``None``
    when not ``complete``)."""
    norm = card["normalization"]
    if norm is not None and (not isinstance(norm, dict) or "mean" not in norm or "std" not in norm):
        raise ValueError('normalization: expected null or {"mean": [...], "std": [...]}')
    shape, classes = card.get("input_shape"), card.get("num_classes")
    input_shape = check_shape(shape) if complete or shape is not None else None
    num_classes = validation.check_int("num_classes", classes, minimum=2) if complete or classes is not None else None
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    normalization = _check_normalization(mean, std, input_shape or (len(mean or ()),))
    return {
        "input_shape": input_shape,
        "num_classes": num_classes,
        "mean": normalization["mean"] if normalization else None,
        "std": normalization["std"] if normalization else None,
        "bounds": _check_bounds(card["bounds"]),
    }


def wrap_network(module: torch.nn.Module, card: dict[str, Any], *, where: str) -> Classifier:
    """``module`` as the :class:`~advlab.Classifier` a card describes, every field of the card checked.

    Args:
        module: the network.
        card: a model card; its ``input_shape`` and ``num_classes`` may be ``None`` (unknown).
        where: what the card came from (a file, an option), prefixed to errors.

    Returns:
        The classifier, with ``card`` as its ``.card``.

    Raises:
        ValueError: a field of the card is invalid (naming it).

    Examples:
        >>> clf = wrap_network(net, {"normalization": None, "bounds": [0, 1], "input_shape": [64]}, where="net")
    """
    try:
        fields = _card_fields(card, complete=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return Classifier(module, card=card, **fields)


def _build_from_card(card: dict[str, Any], card_path: Path) -> Classifier:
    """The card's classifier: a registered architecture with its tensors on the meta device (shapes only,
    nothing initialised), or the user's network its ``network`` entry describes."""
    try:
        fields = _card_fields(card)
        if card.get("network") is not None:
            module = build_network(card["network"], card["arch_kwargs"], folder=card_path.parent)
        else:
            with torch.device("meta"):  # the weights come from the file: skip the random initialisation
                module = create(
                    card["arch"], fields["input_shape"], fields["num_classes"], seed=0, **card["arch_kwargs"]
                )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{card_path}: cannot rebuild the model from the card: {exc}") from exc
    return Classifier(module, card=card, **fields)


def load_folder(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Classifier:
    """Load a model folder written by :func:`save_model`: rebuild the network from ``card.json``, load the weights.

    Weights are read with safetensors only; pickle is never executed, so a model folder of a registered
    architecture from an untrusted source cannot run code. The weights file is checked against the SHA-256 in
    the card before it is parsed. A card with a ``network`` entry (a user's own network) is different: loading
    it imports that network's Python code or loads its TorchScript or exported program, so load such folders
    only from sources whose code you would run. :func:`advlab.zoo.load_model` calls this for folders.

    Args:
        path: the model folder, or its ``card.json`` (or ``model.safetensors``) file.
        device: where to put the weights (``"cpu"``, ``"cuda"``, a ``torch.device``); ``None`` means CPU.

    Returns:
        A :class:`~advlab.Classifier` in eval mode, with the normalisation and bounds of the card and the card
        itself as ``.card``.

    Raises:
        FileNotFoundError: the folder, its ``card.json`` or the weights file is missing.
        ValueError: the card is not valid JSON, misses keys, names an unknown architecture or arguments it
            cannot be rebuilt with; the weights file is corrupt (SHA-256 mismatch, not a safetensors file — a
            pickle ``.pt`` file included) or does not match the architecture (missing, unexpected or
            mis-shaped tensors, the first few listed).

    Examples:
        >>> clf = load_folder("runs/m1")
        >>> clf.card["accuracy"]["test"]
        0.987
    """
    folder, card_path = _resolve_folder(path)
    card = _read_card(card_path)
    weights_path = _checked_weights(folder, card, card_path)
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot use {device!r} ({exc}); pass 'cpu', 'cuda' or 'cuda:N'") from exc
    clf = _build_from_card(card, card_path)
    state = _read_weights(weights_path, dev)
    problems = compare_state(clf.module.state_dict(), state)
    if problems:
        raise ValueError(
            f"{weights_path}: the weights do not match the architecture {card['arch']} described in "
            f"{card_path.name} ({'; '.join(problems)}). The card and weights come from different models; "
            "re-save the model."
        )
    # a registered architecture was built on the meta device: its tensors become the file's
    clf.module.load_state_dict(state, strict=True, assign=card.get("network") is None)
    left = [n for n, t in [*clf.module.named_parameters(), *clf.module.named_buffers()] if t.is_meta]
    if left:  # a tensor that is neither a parameter nor a persistent buffer: cannot come from the file
        raise RuntimeError(f"{card['arch']}: tensors {left[:5]} are not saved in the weights file (advlab bug)")
    clf.to(dev)
    clf.eval()
    clf.card = _in_memory(card, folder)
    return clf


def _checked_weights(folder: Path, card: Mapping[str, Any], card_path: Path) -> Path:
    """The weights file the card names, present and with the card's SHA-256."""
    weights_path = folder / card["weights"]["file"]
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path}: weights file missing (named in {card_path}); copy the whole model folder, "
            "or re-train and save the model"
        )
    expected_sha = card["weights"].get("sha256")
    if expected_sha is not None:
        actual = _sha256(weights_path)
        if actual != expected_sha:
            raise ValueError(
                f"{weights_path}: corrupt or replaced weights file: its SHA-256 is {actual[:16]}..., the card "
                f"{card_path.name} says {str(expected_sha)[:16]}.... Copy the folder again or re-save the model."
            )
    return weights_path


def _read_weights(weights_path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_path), device=str(device))
    except SafetensorError as exc:
        raise ValueError(
            f"{weights_path}: not a valid safetensors file ({exc}). advlab loads weights with safetensors only "
            "and never unpickles; convert a torch.save/.pt checkpoint you trust with "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')."
        ) from exc


# ---------------------------------------------------------------------- summary
def card_summary(card: Mapping[str, Any]) -> str:
    """A one-line description of a model card for CLIs and logs.

    Args:
        card: a model card (``clf.card`` or the parsed ``card.json``).

    Returns:
        For example ``"wong-cnn on mnist (defense pgd-at), test acc 98.7%, trained 5 epochs"``.

    Examples:
        >>> card_summary({"arch": "wong-cnn", "dataset": "mnist", "accuracy": {"test": 0.987},
        ...               "training": {"epochs": 5}})
        'wong-cnn on mnist, test acc 98.7%, trained 5 epochs'
    """
    if not isinstance(card, Mapping):
        raise TypeError(f"card: expected a dict (a model card), got {type(card).__name__}")
    text = str(card.get("arch") or "unknown arch")
    if card.get("dataset"):
        text += f" on {card['dataset']}"
    training: Mapping[str, Any] = card["training"] if isinstance(card.get("training"), Mapping) else {}
    defense = training.get("defense")
    if defense and defense not in ("standard", "none"):
        text += f" (defense {defense})"
    parts = [text]
    accuracy: Mapping[str, Any] = card["accuracy"] if isinstance(card.get("accuracy"), Mapping) else {}
    for key in ("test", "train"):
        value = accuracy.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key} acc {100 * value:.1f}%")
            break
    epochs = training.get("epochs")
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool):
        parts.append(f"trained {epochs:g} epoch{'s' if epochs != 1 else ''}")
    return ", ".join(parts)
