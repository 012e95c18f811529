"""A user's own network, rebuilt from what describes it: a Python factory, a TorchScript file or a torch.export program.

A network is described by an *entry* (the ``network`` object of a model card):

- ``{"kind": "python", "module": "my_pkg.nets", "name": "make_net"}``: imports ``my_pkg.nets`` (found on
  ``sys.path``, the working directory included) and calls ``make_net(**arch_kwargs)``;
- ``{"kind": "python", "file": "nets.py", "name": "SmallCNN"}``: runs the file ``nets.py`` as a module and calls
  ``SmallCNN(**arch_kwargs)``;
- ``{"kind": "torchscript", "file": "net.pt"}``: ``torch.jit.load``;
- ``{"kind": "exported", "file": "net.pt2"}``: ``torch.export.load``, wrapped in :class:`ExportedModule`.

Trust: a Python entry imports and runs the user's code, and torch's own loaders of TorchScript files and
exported programs are not safe against a malicious file either (``torch.export.load`` unpickles). Load these
only from sources whose code you would run. Weights, in contrast, are only ever read with safetensors or
``torch.load(weights_only=True)`` (:mod:`advlab.zoo.files`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io, validation
from advlab.models import device_of
from advlab.zoo.files import ACCEPTED_MODELS, unreadable

log = logging.getLogger(__name__)

KINDS = ("python", "torchscript", "exported")
"""The kinds of network entry."""

FILE_NAMES = {"python": "network.py", "torchscript": "network.pt", "exported": "network.pt2"}
"""The name of each kind's network file inside a model folder."""

MAX_LISTED = 5
"""How many mismatching weight names an error message lists."""

_SPEC = re.compile(r"^(?P<target>.+):(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_NOT_WORD = re.compile(r"\W")
_MODULE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


# ---------------------------------------------------------------------- factory specs
def parse_factory(text: str) -> dict[str, str] | None:
    """The network entry of a factory spec, or ``None`` when ``text`` is not one.

    Args:
        text: ``"my_pkg.nets:make_net"`` (a module on ``sys.path``) or ``"path/to/nets.py:SmallCNN"`` (a file);
            the name after the colon may be dotted (``"nets.py:Models.small"``).

    Returns:
        ``{"kind": "python", "module": ..., "name": ...}`` or ``{"kind": "python", "file": <absolute path>,
        "name": ...}``; ``None`` for anything else (a path, a folder).

    Examples:
        >>> parse_factory("my_pkg.nets:make_net")
        {'kind': 'python', 'module': 'my_pkg.nets', 'name': 'make_net'}
    """
    match = _SPEC.match(str(text))
    if match is None or Path(text).exists():
        return None
    target, name = match["target"], match["name"]
    if target.endswith(".py"):
        return {"kind": "python", "file": str(Path(target).resolve()), "name": name}
    if _MODULE.match(target):
        return {"kind": "python", "module": target, "name": name}
    return None


def spec_text(entry: Mapping[str, Any]) -> str:
    """How an entry reads on a command line: ``my_pkg.nets:make_net``, ``nets.py:SmallCNN``, ``net.pt2``."""
    if entry.get("kind") == "python":
        where = entry.get("module") or Path(str(entry.get("file"))).name
        return f"{where}:{entry.get('name')}"
    return Path(str(entry.get("file"))).name


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` for the duration (a user's file may import its neighbours)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _import_file(file: Path) -> Any:
    """Run ``file`` as a module under a name of its own (kept in ``sys.modules``, as TorchScript needs)."""
    digest = hashlib.sha256(str(file).encode()).hexdigest()[:12]
    module_name = "advlab_user_" + _NOT_WORD.sub("_", file.stem) + "_" + digest
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"{file}: cannot be imported as a Python module; expected a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _on_sys_path(str(file.parent)):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def import_factory(entry: Mapping[str, Any]) -> Callable[..., Any]:
    """The callable a Python entry names, importing (and so running) the user's module.

    Args:
        entry: ``{"kind": "python", "module" or "file": ..., "name": ...}`` (see :func:`parse_factory`).

    Returns:
        The class or function.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the module cannot be imported (the error raised inside it, in one line) or has no such
            attribute (with the names it has).

    Examples:
        >>> net_class = import_factory({"kind": "python", "file": "nets.py", "name": "SmallCNN"})
    """
    spec = spec_text(entry)
    try:
        if "file" in entry:
            file = Path(entry["file"])
            if not file.is_file():
                raise FileNotFoundError(f"{file}: no such Python file (from {spec})")
            module = _import_file(file)
        else:
            with _on_sys_path(os.getcwd()):
                module = importlib.import_module(str(entry["module"]))
    except FileNotFoundError:
        raise
    except Exception as exc:
        hint = "" if "file" in entry else "; run from the folder that holds the package, install it, or give the file"
        raise ValueError(f"importing {spec} failed: {type(exc).__name__}: {exc}{hint}") from exc
    target: Any = module
    for part in str(entry["name"]).split("."):
        if not hasattr(target, part):
            public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
            close = difflib.get_close_matches(part, public, n=3)  # class names keep their case
            hint = f". Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{spec}: the module has no {entry['name']!r}; it defines {', '.join(public[:10]) or 'nothing callable'}"
                + hint
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is a {type(target).__name__}, not a class or function that builds a network")
    return target


def build_python(entry: Mapping[str, Any], kwargs: Mapping[str, Any]) -> nn.Module:
    """Import a Python entry's factory and call it with ``kwargs``; the result must be an ``nn.Module``.

    Args:
        entry: a Python network entry (see :func:`parse_factory`).
        kwargs: keyword arguments of the factory (a card's ``arch_kwargs``).

    Returns:
        The network, as the factory built it (its own initial weights).

    Raises:
        ValueError: the import fails, or the call raises (its error in one line).
        TypeError: the factory does not return a ``torch.nn.Module``.

    Examples:
        >>> net = build_python({"kind": "python", "file": "nets.py", "name": "SmallCNN"}, {"width": 16})
    """
    factory = import_factory(entry)
    spec = spec_text(entry)
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise ValueError(
            f"calling {spec}(**{dict(kwargs)}) failed: {type(exc).__name__}: {exc}. Give its arguments as "
            'arch_kwargs in the sidecar JSON ({"arch_kwargs": {...}})'
        ) from exc
    if not isinstance(module, nn.Module):
        raise TypeError(f"{spec} returned a {type(module).__name__}, expected a torch.nn.Module")
    return module


# ---------------------------------------------------------------------- programs
class ExportedModule(nn.Module):
    """A ``torch.export`` program as a module that advlab can put in eval mode and feed any batch size.

    An exported program is specialised to the mode it was exported in (batch norm and dropout are fixed in its
    graph) and its module refuses ``.eval()``; this wrapper's :meth:`train` only records the flag, so
    :meth:`advlab.Classifier.attack_mode` works. A program exported with a fixed batch size is run on chunks of
    that size (the last one padded), so attacks can use any batch. Its ``state_dict`` uses the program's own
    names (those of the exported network), so weights saved from the network load into it and back.

    Args:
        program: a ``torch.export.ExportedProgram``.

    Attributes:
        program: the program's module.
        batch: the fixed batch size the program was exported with, or ``None`` for a dynamic one.
        input_shape: the per-example input shape when the program fixes it, else ``None``.

    Examples:
        >>> net = ExportedModule(torch.export.load("net.pt2"))
        >>> net.input_shape
        (1, 28, 28)
    """

    def __init__(self, program: Any) -> None:
        super().__init__()
        self.batch, self.input_shape = _input_spec(program)
        self.program = program.module()
        self.training = False
        self.register_state_dict_post_hook(_without_program_prefix)
        self.register_load_state_dict_pre_hook(_with_program_prefix)

    def train(self, mode: bool = True) -> ExportedModule:
        if mode:
            validation.warn(
                "the model is a torch.export program: it runs as it was exported (batch norm and dropout as in "
                "the mode of export); train() only records the flag"
            )
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        out = []
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            out.append(self.program(chunk)[:n])
        return torch.cat(out)


def _without_program_prefix(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    """``state_dict`` post-hook: ``program.conv.weight`` is saved as ``conv.weight``."""
    inner = prefix + "program."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _with_program_prefix(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: ``conv.weight`` is loaded into ``program.conv.weight``."""
    inner = prefix + "program."
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(inner)]:
        state[inner + key[len(prefix) :]] = state.pop(key)


def _input_spec(program: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """The fixed batch size (or ``None``) and per-example shape (or ``None``) of an exported program's one input."""
    names = set(program.graph_signature.user_inputs)
    nodes = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    if len(nodes) != 1:
        raise ValueError(
            f"the program takes {len(nodes)} inputs; an advlab classifier takes one batch of inputs. Export a "
            "module whose forward takes x alone"
        )
    shape = getattr(nodes[0].meta.get("val"), "shape", None)
    if shape is None or len(shape) < 2:
        return None, None
    batch = shape[0] if isinstance(shape[0], int) else None
    rest = tuple(shape[1:])
    return batch, rest if all(isinstance(d, int) for d in rest) else None


def load_exported(path: str | Path) -> ExportedModule:
    """Load a ``torch.export`` program (``torch.export.save``) as an :class:`ExportedModule`.

    Args:
        path: the ``.pt2`` file.

    Returns:
        The wrapped program on the CPU, with its training flag off.

    Raises:
        ValueError: torch cannot read the file, or the program does not take exactly one input.

    Examples:
        >>> net = load_exported("net.pt2")
    """
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise unreadable(
            path, "exported", ACCEPTED_MODELS, detail=f"torch.export.load failed ({_first_line(exc)})"
        ) from exc
    try:
        module = ExportedModule(program)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if module.batch is not None:
        log.info(
            "%s was exported for batches of exactly %d: it runs on chunks of that size (slower); export with "
            "dynamic_shapes=({0: torch.export.Dim('batch')},) to take any batch at once",
            path,
            module.batch,
        )
    return module


def load_torchscript(path: str | Path) -> nn.Module:
    """Load a TorchScript file (``torch.jit.save``) on the CPU, in eval mode.

    Args:
        path: the file.

    Returns:
        The ``torch.jit.ScriptModule``.

    Raises:
        ValueError: torch cannot read the file.

    Examples:
        >>> net = load_torchscript("net.pt")
    """
    try:
        with _torchscript_quietly():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise unreadable(
            path, "torchscript", ACCEPTED_MODELS, detail=f"torch.jit.load failed ({_first_line(exc)})"
        ) from exc
    return module.eval()


@contextmanager
def _torchscript_quietly() -> Iterator[None]:
    """TorchScript without torch's deprecation warning: the file is the user's, the warning not theirs to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------- entries
def build_network(entry: Mapping[str, Any], kwargs: Mapping[str, Any], *, folder: Path | None = None) -> nn.Module:
    """The network an entry describes (see the module docstring), with its own weights.

    Args:
        entry: a network entry (a card's ``network``).
        kwargs: keyword arguments of a Python factory (a card's ``arch_kwargs``); ignored by programs.
        folder: the model folder the entry's ``file`` is relative to; ``None`` when the path is absolute.

    Returns:
        The network on the CPU.

    Raises:
        ValueError: an unknown kind, a file that changed since it was recorded (its SHA-256), or any error of
            the loaders above.
        FileNotFoundError: the file is missing.

    Examples:
        >>> net = build_network({"kind": "exported", "file": "network.pt2"}, {}, folder=Path("runs/m1"))
    """
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {', '.join(KINDS)}")
    resolved = dict(entry)
    if "file" in entry:
        file = Path(str(entry["file"]))
        resolved["file"] = str(folder / file if folder is not None else file)
        check_file(Path(resolved["file"]), entry.get("sha256"))
    if kind == "python":
        return build_python(resolved, kwargs)
    if kind == "torchscript":
        return load_torchscript(resolved["file"])
    return load_exported(resolved["file"])


def compare_state(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]) -> list[str]:
    """What differs between two state dicts: missing, unexpected and mis-shaped tensors, the first few of each.

    Args:
        expected: the network's own ``state_dict()``.
        loaded: the tensors read from a file.

    Returns:
        One phrase per kind of difference (empty when the names and shapes agree).

    Examples:
        >>> compare_state(net.state_dict(), {})
        ['missing in the file (2): weight, bias']
    """
    problems = []
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    shapes = [
        f"{k} (file {tuple(loaded[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)
    ]
    for label, names in (
        ("missing in the file", missing),
        ("unexpected in the file", unexpected),
        ("shape mismatch", shapes),
    ):
        if names:
            more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
            problems.append(f"{label} ({len(names)}): {', '.join(names[:MAX_LISTED])}{more}")
    return problems


def check_file(path: Path, sha256: Any) -> None:
    """The file exists and, when ``sha256`` is given, has that SHA-256 (a changed network file is refused)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such network file")
    if sha256 is not None and file_sha256(path) != sha256:
        raise ValueError(
            f"{path}: the network file changed since the card was written (SHA-256 mismatch); copy the "
            "model folder again or re-import the model"
        )


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- saving
SAVE_CHOICES = "'export', 'torchscript', 'my_pkg.nets:make_net' or 'path/to/nets.py:Net'"
"""What ``save_model(..., network=...)`` accepts, for messages."""


def write_network(
    folder: Path,
    module: nn.Module,
    network: str | Mapping[str, Any],
    *,
    kwargs: Mapping[str, Any],
    input_shape: tuple[int, ...] | None,
) -> dict[str, Any]:
    """Record in the model folder how to rebuild ``module``; returns the card's ``network`` entry.

    Args:
        folder: the model folder; a network file is written into it atomically (:data:`FILE_NAMES`).
        module: the network whose weights the folder will hold.
        network: ``"export"`` (``torch.export`` on zeros of ``input_shape``, batch size left dynamic),
            ``"torchscript"`` (``torch.jit.script``), a factory spec (``"my_pkg.nets:make_net"`` is recorded
            as it is; ``"path/to/nets.py:Net"`` copies the file into the folder), or an existing entry (a
            loaded model's card; its file is copied).
        kwargs: the factory's keyword arguments (checked by building it: the weights must match ``module``).
        input_shape: per-example input shape (needed by ``"export"``).

    Returns:
        The entry, its ``file`` a plain name inside ``folder`` with the file's ``sha256``.

    Raises:
        ValueError: an unknown request, a factory whose network's weights do not match ``module``, or a
            network that torch cannot export or script.

    Examples:
        >>> write_network(Path("runs/m1"), net, "nets.py:SmallCNN", kwargs={}, input_shape=(1, 8, 8))["file"]
        'network.py'
    """
    if isinstance(network, str):
        entry, data = _requested(module, network, kwargs=kwargs, input_shape=input_shape)
    else:
        entry = dict(network)
        if "file" not in entry:
            return entry
        source = Path(str(entry["file"]))
        check_file(source, entry.get("sha256"))
        data = source.read_bytes()
    if data is None:
        return entry
    target = folder / FILE_NAMES[entry["kind"]]
    io.write_bytes(target, data)
    return {**entry, "file": target.name, "sha256": hashlib.sha256(data).hexdigest()}


def _requested(
    module: nn.Module, network: str, *, kwargs: Mapping[str, Any], input_shape: tuple[int, ...] | None
) -> tuple[dict[str, Any], bytes | None]:
    """The entry and file contents for ``save_model(..., network=...)`` given as a string."""
    if network == "export":
        return {"kind": "exported"}, _export_bytes(module, input_shape)
    if network == "torchscript":
        return {"kind": "torchscript"}, _script_bytes(module)
    entry = parse_factory(network)
    if entry is None:
        raise ValueError(f"network: expected {SAVE_CHOICES}, got {network!r}")
    built = build_python(entry, kwargs)
    problems = compare_state(built.state_dict(), module.state_dict())
    if problems:
        raise ValueError(
            f"network: {network}(**{dict(kwargs)}) builds a network whose weights do not match the classifier's "
            f"({'; '.join(problems)}); name the class or function that built it, with its arguments"
        )
    data = Path(entry["file"]).read_bytes() if "file" in entry else None
    return entry, data


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _export_bytes(module: nn.Module, input_shape: tuple[int, ...] | None) -> bytes:
    if input_shape is None:
        raise ValueError("network='export' needs the input shape: build the Classifier with input_shape=(C, H, W)")
    x = torch.zeros(2, *input_shape, device=device_of(module))
    try:
        with _eval_mode(module):
            program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise ValueError(
            f"network='export': torch.export cannot export the network ({_first_line(exc)}); save it with a factory "
            "spec instead (network='path/to/nets.py:Net')"
        ) from exc
    buffer = BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _script_bytes(module: nn.Module) -> bytes:
    try:
        with _eval_mode(module), _torchscript_quietly():
            scripted = torch.jit.script(module)
    except Exception as exc:
        raise ValueError(
            f"network='torchscript': torch.jit.script fails on the network ({_first_line(exc)}); use "
            "network='export' or a factory spec (network='path/to/nets.py:Net')"
        ) from exc
    buffer = BytesIO()
    with _torchscript_quietly():
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()
