"""Datasets for attacks and training: digits, MNIST, Fashion-MNIST and CIFAR-10, found, checked and decoded; and
the user's own data from an ``.npz`` file, a ``.csv`` file or an image folder (:func:`load_data_file`).

Files are looked for in the data directory (``data_dir`` argument > ``$ADVLAB_DATA`` > ``~/.cache/advlab``), one
folder per dataset with the official file names (``mnist/``, ``fashion-mnist/``, ``cifar10/``). Every file is
checked against its published checksum on first use; missing files are downloaded from the official source when
allowed, and otherwise the error says which file to put where. Text corpora (the SMS Spam Collection) have their
own small API, :mod:`advlab.data.sms_spam` (:func:`load_sms_spam`, :func:`stratified_split`): messages are not
fixed-shape images, so they are not in :data:`DATASETS`.

Examples:
    >>> from advlab.data import load_dataset
    >>> ds = load_dataset("mnist", split="test", n=1000)
    >>> ds.x.shape, ds.y[:3]
    (torch.Size([1000, 1, 28, 28]), tensor([7, 2, 1]))
    >>> own = load_data_file("my_images/", n=500)   # one sub-folder per class
"""

from __future__ import annotations

import os

import numpy as np
import torch

from advlab import validation
from advlab.data import cifar10, digits, mnist  # noqa: F401  (register the datasets)
from advlab.data._files import ChecksumError, CorruptFileError, DatasetNotFoundError, FileSpec
from advlab.data.dataset import DATASETS, SPLITS, Dataset, DatasetInfo
from advlab.data.files import DataFileError, FileOptions, is_data_path, load_data_file
from advlab.data.paths import ENV_VAR, resolve_data_dir, user_cache_dir
from advlab.data.sms_spam import TextCorpus, TextSplit, load_sms_spam, parse_labelled_lines, stratified_split

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "SPLITS",
    "ChecksumError",
    "CorruptFileError",
    "DataFileError",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FileOptions",
    "FileSpec",
    "TextCorpus",
    "TextSplit",
    "dataset_info",
    "is_data_path",
    "load_data_file",
    "load_dataset",
    "load_sms_spam",
    "parse_labelled_lines",
    "resolve_data_dir",
    "stratified_split",
    "user_cache_dir",
]


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    n: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load a split of a dataset as float32 images in [0, 1] (N, C, H, W) and int64 labels.

    Decoded files are cached per process, so loading the same split again is fast; each call returns fresh
    tensors that the caller may modify.

    Args:
        name: ``"digits"``, ``"mnist"``, ``"fashion-mnist"`` (``"fashion_mnist"``, ``"fmnist"``) or ``"cifar10"``
            (``"cifar-10"``); case-insensitive.
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding the dataset folders; default ``$ADVLAB_DATA``, then the user cache
            (see :func:`resolve_data_dir`). Ignored by ``digits``, which ships with scikit-learn.
        n: keep only the first ``n`` examples in file order (like :meth:`Dataset.head`); ``None`` keeps all.
        download: fetch missing files from the official source (checksum-verified) when True.

    Returns:
        A :class:`Dataset` with the dataset's class names and training-set normalisation ``mean``/``std``.

    Raises:
        ValueError: unknown name (with a did-you-mean hint), bad split, ``n`` out of range.
        DatasetNotFoundError: a file is missing and cannot be downloaded (a ``FileNotFoundError``; the message
            names the full path to put it at and the official URL).
        ChecksumError: a file does not match its published checksum (a ``ValueError``).
        CorruptFileError: a file cannot be decoded, e.g. a bad IDX magic number or a truncated file.

    Examples:
        >>> ds = load_dataset("digits", split="train")
        >>> len(ds), ds.input_shape, ds.mean
        (1257, (1, 8, 8), (0.3056,))
    """
    info = DATASETS.get(name)
    if not isinstance(split, str):
        raise TypeError(f"split: expected 'train' or 'test', got {type(split).__name__}")
    validation.check_choice("split", split, SPLITS)
    if n is not None:
        n = validation.check_int("n", n, minimum=1)
    if not isinstance(download, bool):
        raise TypeError(f"download: expected True or False, got {type(download).__name__}")
    root = resolve_data_dir(data_dir)
    if info.reader is None:  # pragma: no cover - every registered dataset has a reader
        raise ValueError(f"dataset {info.name!r} has no reader")
    raw = info.reader(root, split, download)
    available = len(raw.labels)
    if n is not None and n > available:
        raise ValueError(
            f"n: asked for {n} examples but the {info.name} {split} split has {available} (from {raw.source}); "
            f"use n <= {available} or n=None for all"
        )
    images = raw.images if n is None else raw.images[:n]
    labels = raw.labels if n is None else raw.labels[:n]
    x = images.astype(np.float32)  # always a fresh, writable copy: the cached arrays stay untouched
    x /= np.float32(raw.scale)
    y = labels.astype(np.int64)
    return Dataset(
        torch.from_numpy(x),
        torch.from_numpy(y),
        name=info.name,
        split=split,
        classes=list(raw.classes),
        mean=info.mean,
        std=info.std,
    )


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` for ``name`` (aliases accepted); same as ``DATASETS.get(name)``."""
    return DATASETS.get(name)
