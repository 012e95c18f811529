"""Options and helpers shared by the sub-commands (data, model, device, seed, output folder)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from advlab import validation
from advlab.data.files import LAYOUTS
from advlab.settings import Setting, parse_number


class AdvlabParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options may depend on the command line itself.

    A command sets ``before_parse`` to add options derived from what the line names (``advlab attack --attack
    apgd`` gets APGD's settings as ``--steps``, ``--rho``, ...) before argparse parses it, so that ``--help``
    shows them too.
    """

    before_parse: Callable[[argparse.ArgumentParser, list[str]], None] | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.before_parse is not None:
            self.before_parse(self, list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)


def option_value(argv: Sequence[str], option: str, default: str) -> str:
    """The value given to ``option`` on a command line (``--attack apgd`` or ``--attack=apgd``), else ``default``."""
    for i, token in enumerate(argv):
        if token == option and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return default


def setting_type(setting: Setting) -> Callable[[str], Any]:
    """An argparse ``type`` reading one setting, whose errors argparse shows as they are."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = setting.type_name
    return parse


def parse_set_options(
    pairs: Sequence[str], declared: Mapping[str, Setting], owner: str, renamed: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs read by each declared setting's type (``"8/255"``, ``"none"``, ``"true"``).

    Raises:
        ValueError: a pair without ``=``, a value that does not parse, or a key that is not a setting of ``owner``.
    """
    out: dict[str, Any] = {}
    renamed = renamed or {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set: expected KEY=VALUE, got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        setting = declared.get(renamed.get(key, key))
        if setting is None:
            raise ValueError(
                f"--set: {owner} has no setting {key!r}; its settings are {', '.join(declared) or 'none'}."
                + validation.did_you_mean(key, declared)
            )
        out[key] = setting.parse(text)
    return out


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show meaningful defaults, wrap the one-paragraph description, keep the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default is None
            or action.default is False
            or action.default == ""
            or action.required
            or "default" in text
        ):
            return text  # "(default: None)" on a required or optional-by-absence option says nothing
        return super()._get_help_string(action) or text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text.strip():  # a description paragraph: wrap it to the terminal
            return argparse.HelpFormatter._fill_text(self, text, width, indent)
        return super()._fill_text(text, width, indent)


def add_command(sub: Any, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Create a sub-command parser with a description and an ``examples:`` epilog."""
    return sub.add_parser(
        name, help=help, description=description, epilog="examples:\n" + examples, formatter_class=Formatter
    )


DATA_HELP = (
    "dataset: digits, mnist, fashion-mnist, cifar10, or your own data: an .npz file (arrays x and y), a .csv file "
    "(one example per row; see --label-column) or an image folder (one sub-folder per class, read with Pillow). A "
    "file is one split, used whatever split the command reads (a command that trains and tests uses the same "
    "examples for both), unless it holds both: an npz with x_train/y_train/x_test/y_test, a folder with train/ and "
    "test/ sub-folders. --n takes the first N examples (of an image folder: round-robin over the classes)"
)


def add_data_options(
    p: argparse.ArgumentParser, *, default: str | None = "digits", scale_flag: str = "--scale"
) -> None:
    """``--data`` (a built-in dataset or a data file or folder), ``--data-dir``, and how to read a data file:
    ``--layout``, ``--scale`` (``scale_flag`` where a command's ``--scale`` means something else) and
    ``--label-column``."""
    p.add_argument(
        "--data",
        default=default,
        help=DATA_HELP + (" (default: the dataset named in the model's card)" if default is None else ""),
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding mnist/, fashion-mnist/, cifar10/ (default: $ADVLAB_DATA, then the user cache)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="axis order of 4-D image arrays in an .npz --data: nchw (channels first, advlab's) or nhwc (channels "
        "last); a channels-last array is refused until this says so",
    )
    p.add_argument(
        scale_flag,
        dest="data_scale",
        type=positive_float,
        default=None,
        metavar="S",
        help=f"divide the inputs of a --data file by S, e.g. {scale_flag} 255 for uint8 pixels 0..255 (required for "
        "integer arrays: nothing is rescaled silently; image folders are divided by 255 unless this says otherwise)",
    )
    p.add_argument(
        "--label-column",
        default=None,
        metavar="COL",
        help="the label column of a .csv --data: a header name or a number counted from 0 (negative from the end); "
        "default the last column. Labels must be integers 0..K-1",
    )


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number > 0 (fractions such as ``255/1`` allowed)."""
    try:
        value = parse_number(text, "value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def whole_number(text: str, minimum: int) -> int:
    """``text`` as an int of at least ``minimum``, or the ``argparse`` error that names the bound."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An ``argparse`` type: an int >= 1 (``--n 0`` or ``--batch-size -1`` is refused with the option's name)."""
    return whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """An ``argparse`` type: an int >= 0 (``--trigger-margin -1`` is refused with the option's name)."""
    return whole_number(text, 0)


def batch_size_option(text: str) -> int | str:
    """An ``argparse`` type: an int >= 1, or ``auto`` (the largest batch that fits the device)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or auto, got {text!r}") from None
    return positive_int(text)  # a number: refused as --n's are (0 and negatives)


def add_run_options(p: argparse.ArgumentParser, *, auto_batch_size: bool = False) -> None:
    """``--seed``, ``--device``, ``--batch-size`` (also ``auto`` with ``auto_batch_size``) and ``--quiet``."""
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, random starts)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (cuda when available)")
    if auto_batch_size:
        p.add_argument(
            "--batch-size", type=batch_size_option, default=250, metavar="N|auto",
            help="examples per forward/backward pass; auto: the largest batch that fits the device's memory, probed "
            "with the attacks shortened (on CPU: 250). A batch that runs out of GPU memory is halved and run again",
        )  # fmt: skip
    else:
        p.add_argument("--batch-size", type=positive_int, default=250, help="examples per forward/backward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_speed_options(p: argparse.ArgumentParser) -> None:
    """``--precision``, ``--channels-last`` and ``--compile``: how the model's forward passes run (see
    :func:`apply_speed_options`)."""
    group = p.add_argument_group(
        "speed",
        "how the model's forward passes run inside the attacks; the adversarial points stay float32 and every "
        "prediction counted in the results (success, robust accuracy) is made at full precision",
    )
    group.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
        help="autocast the gradient attacks' forward passes to bfloat16 (CPU and recent GPUs) or float16 (CUDA "
        "only); gradient-free attacks and the success checks run in fp32",
    )  # fmt: skip
    group.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last weights and inputs (faster convolutions on GPUs; on the CPU, attacks hold the kernels "
        "channels-last anyway)",
    )
    group.add_argument(
        "--compile", action="store_true",
        help="torch.compile the model (compiled at the first batch; skipped with a note where it cannot run)",
    )  # fmt: skip


def apply_speed_options(model: Any, args: argparse.Namespace, device: torch.device) -> None:
    """Give the classifier the precision, memory format and compilation of :func:`add_speed_options`' options.

    Raises:
        ValueError: ``--precision`` not supported on ``device`` (fp16 off CUDA, bf16 on an old GPU).
    """
    from advlab.devices import check_precision

    try:
        check_precision(args.precision, device)
    except ValueError as exc:
        raise ValueError(f"--precision: {str(exc).split(': ', 1)[-1]}") from None
    model.speed_up(precision=args.precision, channels_last=args.channels_last, compile=args.compile)


def speed_record(model: Any, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """What result.json and the report record of the speed options: precision, channels-last, compilation (as it
    ran: ``False`` when it could not), the batch size and whether it was probed."""
    return {**model.speed(), "batch_size": batch_size, "batch_size_auto": args.batch_size == "auto"}


def resolve_batch_size(
    args: argparse.Namespace, attacks: Sequence[Any], model: Any, x: torch.Tensor, y: torch.Tensor, threat: Any,
    goal: Any = None,
) -> int:  # fmt: skip
    """``--batch-size`` as a number: ``auto`` probes the largest batch on which every attack fits the device."""
    if args.batch_size != "auto":
        return int(args.batch_size)
    from advlab.attacks.base import probe_batch_size

    return probe_batch_size(attacks, model, x, y, threat, goal=goal)


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
    return [parse_number(part.strip(), name) for part in str(text).split(",") if part.strip()]


def check_output_dir(path: str, name: str = "--out") -> Path:
    """Refuse an output folder that cannot be one (a file, or under a file) before any work is done."""
    out = Path(path)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(
                    f"{name}: {str(p)!r} is a file, not a folder; give a folder path (it is created when missing)"
                )
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{name}: cannot write in {str(p)!r} (permission denied); pick a writable folder")
            break
    return out


def output_dir(path: str, name: str = "--out") -> Path:
    """Create the output folder (checked with :func:`check_output_dir`) and return it."""
    out = check_output_dir(path, name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"{name}: cannot create the folder {str(out)!r} ({exc.strerror}); pick a writable folder"
        ) from exc
    return out


FILE_OPTIONS = {"layout": "layout", "data_scale": "scale", "label_column": "label_column"}
"""The options of :func:`add_data_options` that say how to read a data file: argparse dest -> keyword of
``advlab.data.load_data_file``."""


class AtMost(int):
    """The default of a ``--n`` option: at most this many examples, all of them when the data has fewer.

    A number the user types is a plain ``int`` (from :func:`positive_int`), and asking for more examples than the
    data has is then an error; only the default adapts to a small dataset or file.
    """


def load_split(
    name: str,
    split: str,
    data_dir: str | None,
    n: int | None,
    option: str = "--n",
    files: argparse.Namespace | None = None,
) -> Any:
    """The ``split`` of ``--data``: a built-in dataset (``advlab.data.load_dataset``) or a data file or folder
    (``advlab.data.load_data_file``, read as ``files`` says: ``--layout``, ``--scale``, ``--label-column``).

    The "too many examples" error names the command-line ``option``, not ``n``. A file that holds one split serves
    both; reading its "train" split warns that training and testing share the examples.
    """
    from advlab.data import is_data_path, load_data_file, load_dataset

    given = {kw: getattr(files, dest) for dest, kw in FILE_OPTIONS.items() if getattr(files, dest, None) is not None}
    at_most, n = (int(n), None) if isinstance(n, AtMost) else (None, n)
    try:
        if not is_data_path(name):
            if given:
                flags = ", ".join("--" + k.replace("_", "-") for k in given)
                raise ValueError(f"{flags}: read a data file (--data FILE); {name} is a built-in dataset")
            data = load_dataset(name, split=split, data_dir=data_dir, n=n)
        else:
            data = load_data_file(name, split, n=n, **given)
    except ValueError as exc:
        text = str(exc)
        if not text.startswith("n: "):
            raise
        text = text[3:].replace(" or n=None for all", "").replace("use n <=", f"use {option} <=")
        raise ValueError(f"{option}: {text}") from exc
    if at_most is not None and len(data) > at_most:
        data = data.head(at_most)
    if split == "train" and data.single_split:
        validation.warn(
            f"--data {name} holds one split: its examples serve for training and for testing alike. Give an npz "
            "with x_train/y_train/x_test/y_test or a folder with train/ and test/ to test on held-out data."
        )
    return data


def dataset_name(option: str | None, model: Any) -> str:
    """The dataset named by ``--data``, else by the model's card; a clear error when neither names one."""
    name = option or (getattr(model, "card", None) or {}).get("dataset")
    if not name:
        raise ValueError("--data: the model card names no dataset; pass --data")
    return str(name)


def check_data_for_model(data: Any, model: Any, name: str = "--data") -> None:
    """The dataset's inputs and classes fit the model (an MNIST model cannot be attacked on CIFAR-10).

    For a data file, the messages say which option fixes a mismatch (``--layout nhwc``, ``--scale 255``); its
    labels may cover fewer classes than the model has when the file names no classes.
    """
    shape = getattr(model, "input_shape", None)
    trained_on = (getattr(model, "card", None) or {}).get("dataset")
    source = getattr(data, "source", None)
    hint = f"; pass --data {trained_on} (the model's dataset) or leave --data out" if trained_on and not source else ""
    if shape is not None and tuple(shape) != tuple(data.x.shape[1:]):
        what = "images" if data.x.dim() == 4 else "inputs"
        raise ValueError(
            f"{name}: {data.name} {what} have shape {tuple(data.x.shape[1:])} but the model expects "
            f"{tuple(shape)}{hint or _shape_hint(tuple(data.x.shape[1:]), tuple(shape))}"
        )
    classes = getattr(model, "num_classes", None)
    numbered = list(data.classes) == [str(i) for i in range(data.num_classes)]
    if classes is not None and data.num_classes != classes and not (source and numbered and data.num_classes < classes):
        raise ValueError(f"{name}: {data.name} has {data.num_classes} classes but the model has {classes}{hint}")
    if source:
        _check_file_range(data, model, name)


def _shape_hint(got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if len(got) == 3 and got == (expected[1], expected[2], expected[0]):
        return "; the file seems to hold channels-last images read as channels-first: pass --layout nhwc"
    if len(got) == 3 and len(expected) == 3 and (got[2], got[0], got[1]) == expected:
        return "; the file seems to hold channels-first images read as channels-last: pass --layout nchw"
    return ""


def _check_file_range(data: Any, model: Any, name: str) -> None:
    """A data file's values lie inside the model's bounds; the message suggests ``--scale``."""
    lo, hi = getattr(model, "bounds", (float("-inf"), float("inf")))
    xmin, xmax = float(data.x.min()), float(data.x.max())
    if lo <= xmin and xmax <= hi:
        return
    hint = " (pixels 0..255?): pass --scale 255" if (lo, hi) == (0.0, 1.0) and 1.0 < xmax <= 255.0 else ""
    raise ValueError(
        f"{name}: the values of {data.source} lie in [{xmin:.4g}, {xmax:.4g}] but the model takes inputs in "
        f"({lo:g}, {hi:g}){hint or '; rescale the data into the model bounds (--scale divides it)'}"
    )


# ---------------------------------------------------------------------- models from anywhere
MODEL_HELP = (
    "the model: a folder written by 'advlab train' or 'advlab import', a torch.export program (.pt2), a "
    "TorchScript file, or a Python factory with --weights (my_pkg.nets:make_net or path/to/nets.py:Net)"
)
"""The help of ``--model`` in every command that loads one."""

MODEL_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--weights",
        {
            "metavar": "FILE",
            "help": "weights of a --model factory: a .safetensors file or a state_dict .pt/.pth (read with "
            "torch.load(weights_only=True); a whole pickled model is refused)",
        },
    ),
    ("--mean", {"metavar": "M[,M...]", "help": "per-channel mean the network subtracts (inputs stay raw)"}),
    ("--std", {"metavar": "S[,S...]", "help": "per-channel standard deviation the network divides by"}),
    (
        "--bounds",
        {"metavar": "LOW,HIGH", "help": "valid raw input range (default 0,1; --bounds=-1,1 for a negative low)"},
    ),
    (
        "--input-shape",
        {"metavar": "C,H,W", "help": "per-example input shape (default: from the program, else the --data dataset)"},
    ),
    (
        "--num-classes",
        {"type": positive_int, "metavar": "N", "help": "number of classes (default: from a forward pass)"},
    ),
    ("--classes", {"metavar": "NAMES", "help": "comma-separated class names, in label order"}),
    (
        "--model-card",
        {"metavar": "JSON", "help": "sidecar JSON with these fields (default: NAME.advlab.json next to the file)"},
    ),
)
"""What a model file's card would say, as options (see :func:`add_model_options`)."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options that tell what a model file or factory's card would: ``--weights``, ``--mean``, ``--std``, ...

    They apply to ``--model`` when it is not a model folder (a folder's card.json already says). An option a
    command already has is left as it is; ``--model``'s help is set to :data:`MODEL_HELP`.
    """
    group = p.add_argument_group(
        "model from a file or factory",
        "what a model folder's card.json would say, for a --model that is a file or factory; also read from a "
        "sidecar JSON (NAME.advlab.json next to the weights or model file, with the fields mean, std, bounds, "
        "input_shape, num_classes, classes, dataset, arch_kwargs)",
    )
    existing = p._option_string_actions
    for flag, kwargs in MODEL_OPTIONS:
        if flag not in existing:
            group.add_argument(flag, default=None, **kwargs)
    if "--model" in existing:
        existing["--model"].help = MODEL_HELP


def _shape(text: str) -> list[int]:
    parts = [s for s in text.replace("x", ",").split(",") if s.strip()]
    try:
        return [int(s) for s in parts]
    except ValueError:
        raise ValueError(f"--input-shape: expected whole numbers such as 1,28,28, got {text!r}") from None


def model_info(args: argparse.Namespace) -> dict[str, Any]:
    """The card fields given by :func:`add_model_options`' options, each checked under its option's name."""
    from advlab.zoo import ModelInfo

    readers: dict[str, tuple[str, Callable[[str], Any]]] = {
        "mean": ("--mean", lambda t: parse_float_list(t, "--mean")),
        "std": ("--std", lambda t: parse_float_list(t, "--std")),
        "bounds": ("--bounds", lambda t: parse_float_list(t, "--bounds")),
        "input_shape": ("--input-shape", _shape),
        "num_classes": ("--num-classes", int),
        "classes": ("--classes", lambda t: [s.strip() for s in t.split(",") if s.strip()]),
    }
    info: dict[str, Any] = {}
    for field, (flag, read) in readers.items():
        text = getattr(args, field, None)
        if text is None:
            continue
        value = read(text) if isinstance(text, str) else text
        try:
            ModelInfo(**{field: value})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{flag}: {str(exc).split(': ', 1)[-1]}") from exc
        info[field] = value
    return info


def load_cli_model(
    args: argparse.Namespace | None,
    source: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    option: str = "--model",
    card_options: bool = True,
) -> Any:
    """The model ``--model`` (or ``source``) names, in any form :func:`advlab.zoo.load_model` reads.

    Args:
        args: the parsed command line (``None``: no card options, no ``--data``).
        source: the model, when it is not ``args.model`` (``--target``, a ``--compare`` or ``--models`` entry).
        device: where to put it.
        option: the option that named it, prefixed to errors.
        card_options: apply ``--weights``, ``--mean``, ... (see :func:`add_model_options`); ``False`` for the
            other models of a command (they need a folder or a sidecar JSON).

    Returns:
        The :class:`advlab.Classifier`.

    Raises:
        ValueError, FileNotFoundError: one line naming the option and the file.
    """
    from advlab.zoo import load_model

    args = args if args is not None else argparse.Namespace()
    source = args.model if source is None else source
    info = model_info(args) if card_options else {}
    weights = getattr(args, "weights", None) if card_options else None
    sidecar = getattr(args, "model_card", None) if card_options else None
    fallback = dataset_shape(getattr(args, "data", None))
    try:
        return load_model(source, device, weights=weights, info=info, sidecar=sidecar, fallback=fallback)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise model_error(exc, option) from exc


def dataset_shape(name: Any) -> dict[str, Any]:
    """``{"input_shape": ...}`` of a built-in dataset named by ``--data``, else ``{}`` (a model's fallback)."""
    from advlab.data import DATASETS

    return {"input_shape": list(DATASETS.get(name).input_shape)} if isinstance(name, str) and name in DATASETS else {}


def model_error(exc: BaseException, option: str) -> Exception:
    """A model-loading error as one line naming the option: ``--weights: ...`` for the weights, else ``option: ...``."""
    text = str(exc)
    text = "--weights: " + text[len("weights: ") :] if text.startswith("weights: ") else f"{option}: {text}"
    return FileNotFoundError(text) if isinstance(exc, FileNotFoundError) else ValueError(text)


# ---------------------------------------------------------------------------------------------- several processes
def command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The options every rank must share (all but the function to run and ``--nproc``), compared before any work."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "nproc")}


def start_local_processes(
    worker: Callable[[argparse.Namespace], int], args: argparse.Namespace, device: torch.device, command: str
) -> int:
    """``--nproc N``: ``worker(args)`` in N local processes started by torch's elastic agent (as torchrun does).

    Each process computes on ``cores // N`` threads. The processes come from a fork server that imported torch and
    the command's module once (``spawn`` where there is none). A failed rank stops the others: the error is logged,
    naming the rank, and the exit code is 1.

    Args:
        worker: a module-level function: one rank's work, returning its exit code.
        args: the parsed command line (the same for every rank).
        device: the device option, resolved (the backend follows it: gloo on CPUs, NCCL on GPUs).
        command: the command's name, for messages (``"advlab train"``).
    """
    from advlab import distributed

    if distributed.launched():
        raise ValueError("--nproc: this process was already started by torchrun as one of several; drop --nproc")
    threads = max(1, (os.cpu_count() or 1) // args.nproc)
    print(f"{command}: starting {args.nproc} local processes ({threads} thread(s) each)", file=sys.stderr)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver":  # import torch and advlab once in the server, not once per process
        multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", worker.__module__])
    try:
        codes = distributed.launch(
            worker, args, nproc=args.nproc, backend=distributed.backend_for(device), threads=threads,
            start_method=method,
        )  # fmt: skip
    except distributed.DistributedError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    return max(codes)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Show a library warning on the command line as one ``warning: ...`` line, without Python's source excerpt.

    The library warns through :mod:`warnings` (a failed gradient-masking check, a random model attacked through
    EOT); on the command line the file, line number and source line of the ``warnings.warn`` call mean nothing to
    the user. ``-v`` keeps Python's full format.
    """
    kind = "" if category is UserWarning else f" ({category.__name__})"
    logging.getLogger("advlab").warning("warning%s: %s", kind, message)


@contextlib.contextmanager
def worker_output(args: argparse.Namespace) -> Iterator[None]:
    """In a process of ``--nproc``: log and show warnings as the command line does (one line each, ``-v``: all)."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    with warnings.catch_warnings():
        if not args.verbose:
            warnings.showwarning = show_warning
        yield
