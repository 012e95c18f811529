"""The user's own data from a file or folder: ``.npz`` arrays, ``.csv`` tables and image folders, as a Dataset.

:func:`load_data_file` reads

* an **npz** file (``numpy.savez``) with the inputs under ``x`` and the labels under ``y`` (also accepted: the keys
  of :data:`advlab.validation.X_KEYS` / :data:`~advlab.validation.Y_KEYS`, e.g. ``images``/``labels``), or both
  splits under ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the layout of Keras' ``mnist.npz``); an optional
  ``classes`` array of names. Arrays are read with ``allow_pickle=False``: never a pickled object;
* a **CSV** file of numbers, one example per row, with an optional header row; the label column is the last one
  unless ``label_column`` names another (by header name or number, counted from 0; negative counts from the end);
* an **image folder** with one sub-folder per class (``root/cat/*.png``, ``root/dog/*.png``; class names are the
  sorted folder names), or ``root/train/<class>/...`` and ``root/test/<class>/...`` for two splits. Images are read
  with Pillow, must all have one size, are grey (one channel) when all are grey and RGB otherwise, and are
  divided by 255. Examples are ordered round-robin over the classes (every class's first image in name order,
  then every class's second...), so the first ``n`` are a balanced subset.

A file is **one split** (used whatever split a command asks for) unless it holds both, as above. Inputs come back
as float32 ``(N, C, H, W)`` images or ``(N, D)`` feature vectors. Nothing is rescaled silently: integer arrays
(uint8 pixels) need ``scale`` (``--scale 255`` divides by 255), and 4-D arrays are read as NCHW unless
``layout="nhwc"``; a 4-D array that looks channels-last is refused until ``layout`` says which it is.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.data.dataset import DATASETS, SPLITS, Dataset

LAYOUTS = ("nchw", "nhwc")
"""Axis orders of 4-D image arrays: channels first (advlab's own) or channels last (TensorFlow, Pillow)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""Files of an image folder that are read (others, and hidden files, are ignored)."""
FILE_SUFFIXES = (".npz", ".csv", ".tsv")
"""File suffixes :func:`load_data_file` reads (besides folders)."""
PIXEL_SCALE = 255.0
"""What the pixels of an image folder are divided by (8-bit images) unless ``scale`` says otherwise."""
ONE_SPLIT = "all"
"""The ``split`` of a Dataset read from a file that holds one split only."""
_CHANNELS = (1, 3, 4)


class DataFileError(ValueError):
    """A data file or folder that cannot be read as a dataset; the message names it and what was expected."""


@dataclass(frozen=True)
class FileOptions:
    """How to read a data file: the settings that the file itself cannot carry.

    Attributes:
        layout: ``"nchw"`` or ``"nhwc"`` for 4-D arrays (``None``: NCHW, refused when it looks channels-last).
        scale: divide the inputs by this (``255`` for uint8 pixels); required for integer arrays.
        label_column: the CSV column holding the labels (header name, or number from 0); default the last one.
    """

    layout: str | None = None
    scale: float | None = None
    label_column: str | int | None = None

    def __post_init__(self) -> None:
        if self.layout is not None:
            validation.check_choice("layout", self.layout, LAYOUTS)
        if self.scale is not None:
            object.__setattr__(self, "scale", validation.check_float("scale", self.scale, minimum=0, strict_min=True))


def is_data_path(name: str) -> bool:
    """Whether ``name`` (a ``--data`` value) means a file or folder rather than a built-in dataset name.

    A name with a path separator or a data-file suffix is a path, and so is the name of an existing file or folder
    that is not a built-in dataset (write ``./mnist`` for a folder named like one).
    """
    text = str(name)
    if "/" in text or os.sep in text or text.lower().endswith(FILE_SUFFIXES):
        return True
    return text not in DATASETS and Path(text).exists()


@dataclass
class _Read:
    """What a reader found: raw inputs, labels, class names (or None), whether the file has splits, and how many
    examples the split holds (an image folder decodes only the first ``n``)."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] | None
    has_splits: bool
    available: int = -1

    def __post_init__(self) -> None:
        if self.available < 0:
            self.available = len(self.y)


# ---------------------------------------------------------------------- npz
def _npz_key(arrays: Any, keys: Sequence[str], split: str) -> str | None:
    for key in (f"{keys[0]}_{split}", *keys):
        if key in arrays.files:
            return key
    return None


def _read_npz(path: Path, split: str, options: FileOptions) -> _Read:
    try:
        arrays = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataFileError(
            f"{path}: not a readable .npz file ({exc}); save arrays with numpy.savez(path, x=x, y=y)"
        ) from exc
    with arrays:
        x_key = _npz_key(arrays, validation.X_KEYS, split)
        y_key = _npz_key(arrays, validation.Y_KEYS, split)
        if x_key is None or y_key is None:
            what = "inputs under 'x'" if x_key is None else "labels under 'y'"
            raise DataFileError(
                f"{path}: no {what}; expected arrays 'x' and 'y' (or x_train/y_train/x_test/y_test), got "
                f"{sorted(arrays.files)}. Save them with numpy.savez(path, x=inputs, y=labels)."
            )
        try:
            x, y = arrays[x_key], arrays[y_key]
            classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays.files else None
        except ValueError as exc:  # object arrays need pickle, which is never used
            raise DataFileError(
                f"{path}: holds Python objects, which advlab does not unpickle ({exc}); save plain numeric arrays"
            ) from exc
        has_splits = x_key.endswith(("_train", "_test"))
    return _Read(x, _labels(path, y, "y"), classes, has_splits)


def _labels(path: Path, y: np.ndarray, where: str) -> np.ndarray:
    """Integer class indices from ``y``: integers, whole floats or one-hot rows."""
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all():
        y = y.argmax(1)  # one-hot rows
    if y.ndim != 1:
        raise DataFileError(f"{path}: labels {where} must be a vector of class indices (N,), got shape {y.shape}")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        sample = y[0] if y.size else None
        raise DataFileError(
            f"{path}: labels {where} must be integer class indices 0..K-1, got {y.dtype} values such as {sample!r}; "
            "map class names to numbers first"
        )
    if y.size and int(y.min()) < 0:
        raise DataFileError(f"{path}: labels {where} must be class indices >= 0, got {int(y.min())}")
    return y.astype(np.int64)


# ---------------------------------------------------------------------- csv
def _csv_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot be read as a text CSV file ({exc})") from exc
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    first = text.split("\n", 1)[0]
    if delimiter == "," and first.count(";") > first.count(","):
        delimiter = ";"
    rows = [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if any(c.strip() for c in row)]
    if not rows:
        raise DataFileError(f"{path}: the CSV file is empty; expected one example per row, labels in one column")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_index(path: Path, header: list[str] | None, width: int, column: str | int | None) -> int:
    if column is None:
        return width - 1
    if isinstance(column, str) and not column.lstrip("-").isdigit():
        if header is None or column not in header:
            names = f"its columns are {header}" if header is not None else "it has no header row: give a number"
            raise DataFileError(f"{path}: no column named {column!r} for the labels; {names}")
        return header.index(column)
    index = int(column)
    if not -width <= index < width:
        raise DataFileError(
            f"{path}: label column {index} does not exist; the rows have {width} columns (0..{width - 1})"
        )
    return index % width


def _read_csv(path: Path, split: str, options: FileOptions) -> _Read:
    rows = _csv_rows(path)
    header = [c.strip() for c in rows[0]] if not all(_is_number(c) for c in rows[0]) else None
    body = rows[1:] if header is not None else rows
    if not body:
        raise DataFileError(f"{path}: the CSV file has a header row but no examples")
    width = len(rows[0])
    if width < 2:
        raise DataFileError(f"{path}: expected at least two columns (features and a label), got {width}")
    label = _label_index(path, header, width, options.label_column)
    names = header or [str(i) for i in range(width)]
    first_row = 2 if header is not None else 1
    values = np.empty((len(body), width), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != width:
            raise DataFileError(f"{path}: row {r + first_row} has {len(row)} columns, the first row {width}")
        for c, cell in enumerate(row):
            try:
                values[r, c] = float(cell)
            except ValueError:
                what = "a class index (labels must be integers 0..K-1)" if c == label else "a number"
                raise DataFileError(
                    f"{path}: row {r + first_row}, column {names[c]!r}: {cell!r} is not {what}"
                    + ("; map class names to numbers first" if c == label else "; fill or drop missing values first")
                ) from None
    y = values[:, label]
    if not (y == np.round(y)).all():
        bad = y[y != np.round(y)][0]
        raise DataFileError(f"{path}: label column {names[label]!r} holds {bad:g}, not an integer class index")
    features = np.delete(values, label, axis=1)
    return _Read(features, _labels(path, y.astype(np.int64), f"(column {names[label]!r})"), None, False)


# ---------------------------------------------------------------------- image folders
def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _split_root(root: Path, split: str) -> tuple[Path, bool]:
    """The folder holding the class folders for ``split``, and whether ``root`` has train/ and test/ splits."""
    sub = {p.name: p for p in _class_folders(root)}
    if all(s in sub and _class_folders(sub[s]) and not _images_in(sub[s]) for s in SPLITS):
        return sub[split], True
    return root, False


def _round_robin(per_class: list[list[Path]], n: int | None) -> list[tuple[Path, int]]:
    order: list[tuple[Path, int]] = []
    for i in range(max(len(files) for files in per_class)):
        order.extend((files[i], c) for c, files in enumerate(per_class) if i < len(files))
    return order if n is None else order[:n]


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "F"):
                raise DataFileError(f"{path}: a {im.mode} image (16-bit or float); convert the images to 8-bit first")
            grey = im.mode in ("L", "1") or (im.mode == "P" and not _has_colour(im))
            return np.asarray(im.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataFileError(f"{path}: not a readable image ({exc})") from exc


def _has_colour(im: Any) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return not (rgb[..., 0] == rgb[..., 1]).all() or not (rgb[..., 1] == rgb[..., 2]).all()


def _stack_images(root: Path, picked: list[tuple[Path, int]]) -> np.ndarray:
    images = [_decode(p) for p, _ in picked]
    sizes = {im.shape[:2] for im in images}
    if len(sizes) > 1:
        first = picked[0][0]
        other = next(p for (p, _), im in zip(picked, images, strict=True) if im.shape[:2] != images[0].shape[:2])
        h0, w0 = images[0].shape[:2]
        h1, w1 = _decode(other).shape[:2]
        raise DataFileError(
            f"{root}: the images have different sizes: {first.relative_to(root)} is {w0}x{h0}, "
            f"{other.relative_to(root)} is {w1}x{h1}; resize them to one size first"
        )
    colour = any(im.ndim == 3 for im in images)
    images = [np.repeat(im[..., None], 3, axis=2) if colour and im.ndim == 2 else im for im in images]
    batch = np.stack(images)
    return batch[:, None] if batch.ndim == 3 else batch.transpose(0, 3, 1, 2)


def _read_folder(root: Path, split: str, n: int | None) -> _Read:
    folder, has_splits = _split_root(root, split)
    classes = _class_folders(folder)
    if not classes:
        raise DataFileError(
            f"{folder}: an image folder needs one sub-folder per class (e.g. {folder}/cat/1.png, {folder}/dog/2.png)"
        )
    per_class = [_images_in(c) for c in classes]
    empty = [c.name for c, files in zip(classes, per_class, strict=True) if not files]
    if empty:
        raise DataFileError(
            f"{folder}: the class folder(s) {empty} hold no images ({', '.join(IMAGE_SUFFIXES)}); every class "
            "needs at least one, or its label numbers would shift"
        )
    picked = _round_robin(per_class, n)
    x = _stack_images(folder, picked)
    y = np.array([c for _, c in picked], dtype=np.int64)
    return _Read(x, y, tuple(c.name for c in classes), has_splits, sum(len(files) for files in per_class))


# ---------------------------------------------------------------------- shared steps
def _as_float_inputs(path: Path, x: np.ndarray, scale: float | None, default_scale: float | None) -> np.ndarray:
    """``x`` as float32, divided by ``scale``; integer inputs without a scale are refused."""
    if x.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: inputs must be numbers, got dtype {x.dtype}")
    scale = default_scale if scale is None else scale
    if x.dtype.kind in "biu" and scale is None:
        hint = "--scale 255 (scale=255) to divide them by 255" if x.dtype == np.uint8 else "--scale (e.g. 1 or 255)"
        raise DataFileError(
            f"{path}: the inputs are {x.dtype} values {x.min()}..{x.max()}; models take floats inside their bounds "
            f"(pixels in [0, 1]) and advlab never rescales silently: pass {hint}"
        )
    out = x.astype(np.float32)
    if scale is not None:
        out /= np.float32(scale)
    if not np.isfinite(out).all():
        raise DataFileError(f"{path}: the inputs contain NaN or inf; clean them first")
    return out


def _apply_layout(path: Path, x: np.ndarray, layout: str | None) -> np.ndarray:
    """Images as NCHW (``(N, H, W)`` gains a channel axis); feature vectors as ``(N, D)``."""
    if x.ndim == 2:
        if layout is not None:
            raise DataFileError(f"{path}: --layout applies to images; the inputs are feature vectors {x.shape}")
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataFileError(
            f"{path}: expected inputs of shape (N, D), (N, H, W) or 4-D images, got {x.shape}; reshape them first"
        )
    if layout == "nhwc":
        return x.transpose(0, 3, 1, 2)
    if layout is None and x.shape[1] not in _CHANNELS and x.shape[3] in _CHANNELS:
        raise DataFileError(
            f"{path}: the images {x.shape} look channels-last (N, H, W, C); pass --layout nhwc (layout='nhwc'), "
            "or --layout nchw if the second axis really holds the channels"
        )
    return x


def _check_labels(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    if len(y) != len(x):
        raise DataFileError(f"{path}: {len(x)} inputs but {len(y)} labels; expected one label per example")
    if len(x) == 0:
        raise DataFileError(f"{path}: holds no examples")


def _statistics(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (per-feature for vectors) mean and standard deviation (1 where it is 0)."""
    dims = [0, *range(2, x.dim())]
    mean = x.double().mean(dim=dims)
    std = x.double().std(dim=dims, unbiased=False)
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def load_data_file(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    n: int | None = None,
    layout: str | None = None,
    scale: float | None = None,
    label_column: str | int | None = None,
) -> Dataset:
    """Read a data file or folder (npz, CSV, image folder; see the module docstring) as a :class:`Dataset`.

    Args:
        path: the ``.npz`` or ``.csv``/``.tsv`` file, or the image folder.
        split: ``"train"`` or ``"test"``: which split to read from a file that holds both; a file with one split
            gives it for either (its Dataset's ``split`` is ``"all"``).
        n: keep the first ``n`` examples (image folders: round-robin over the classes); ``None`` keeps all.
        layout: ``"nchw"`` or ``"nhwc"``, the axis order of 4-D arrays.
        scale: divide the inputs by this (``255`` for uint8 pixels; image folders default to 255).
        label_column: the CSV label column (header name or number from 0); default the last column.

    Returns:
        A :class:`Dataset` named after the file, float32 inputs ``(N, C, H, W)`` or ``(N, D)``, int64 labels, the
        class names (from the folders, an npz ``classes`` array, else ``"0"``, ``"1"``...), and the per-channel
        mean and standard deviation of the examples read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFileError: a file that cannot be read as data (a ``ValueError`` naming the file and what was
            expected: an npz without ``y``, a CSV whose label column is not integers, images of mixed sizes...).
        ValueError: bad ``split``, ``n``, ``layout`` or ``scale``; ``n`` larger than the file.

    Examples:
        >>> ds = load_data_file("tabular.csv", label_column="label")
        >>> ds = load_data_file("images.npz", layout="nhwc", scale=255, n=500)
    """
    options = FileOptions(layout, scale, label_column)
    validation.check_choice("split", split, SPLITS)
    if n is not None:
        n = validation.check_int("n", n, minimum=1)
    root = Path(path).expanduser()
    read = _read_any(root, split, options, n)
    if n is not None and n > read.available:
        raise ValueError(
            f"n: asked for {n} examples but {root} has {read.available}; use n <= {read.available} or n=None for all"
        )
    x = _as_float_inputs(root, read.x[:n], options.scale, PIXEL_SCALE if root.is_dir() else None)
    x = _apply_layout(root, x, options.layout)
    y = read.y[:n]
    _check_labels(root, x, y)
    num_classes = int(read.y.max()) + 1
    classes = read.classes or tuple(str(i) for i in range(num_classes))
    if len(classes) < num_classes:
        raise DataFileError(f"{root}: labels go up to {num_classes - 1} but 'classes' names {len(classes)} classes")
    x_t = torch.from_numpy(np.ascontiguousarray(x))
    mean, std = _statistics(x_t)
    return Dataset(
        x_t, torch.from_numpy(np.ascontiguousarray(y)), name=root.name, split=split if read.has_splits else ONE_SPLIT,
        classes=classes, mean=mean, std=std, source=str(root), single_split=not read.has_splits,
    )  # fmt: skip


def _read_any(root: Path, split: str, options: FileOptions, n: int | None) -> _Read:
    if not root.exists():
        raise FileNotFoundError(
            f"{root}: no such file or folder; expected an .npz file, a .csv file or an image folder "
            "(one sub-folder per class)"
        )
    if root.is_dir():
        if options.layout is not None:
            raise DataFileError(f"{root}: --layout does not apply to an image folder (Pillow knows the layout)")
        return _read_folder(root, split, n)
    suffix = root.suffix.lower()
    if suffix == ".npz":
        return _read_npz(root, split, options)
    if suffix in (".csv", ".tsv"):
        if options.layout is not None:
            raise DataFileError(f"{root}: --layout applies to images; a CSV file holds feature vectors")
        return _read_csv(root, split, options)
    raise DataFileError(
        f"{root}: unrecognised data file {root.suffix or '(no suffix)'!r}; expected an .npz file (arrays x and y), "
        "a .csv file (one example per row) or an image folder"
    )


__all__ = [
    "FILE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "ONE_SPLIT",
    "DataFileError",
    "FileOptions",
    "is_data_path",
    "load_data_file",
]
