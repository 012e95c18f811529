"""The in-memory :class:`Dataset` (float32 NCHW images or feature vectors, int64 labels) and the ``DATASETS`` registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab import validation
from advlab.data._files import FileSpec
from advlab.registry import Registry

SPLITS = ("train", "test")


@dataclass(frozen=True)
class RawData:
    """What a dataset's reader returns: undecoded pixels and labels, plus the divisor that maps pixels to [0, 1].

    ``images`` has shape (N, C, H, W) (uint8 for the image datasets), ``labels`` shape (N,).
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float
    classes: tuple[str, ...]
    source: str


Reader = Callable[[Path, str, bool], RawData]
"""``reader(data_dir, split, download) -> RawData``."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, as listed in :data:`DATASETS`.

    Attributes:
        name: canonical name (``"mnist"``).
        input_shape: per-example shape ``(C, H, W)``.
        num_classes: number of classes.
        classes: class names in label order.
        mean: per-channel mean of the training set on the [0, 1] scale (the usual normalisation constant).
        std: per-channel standard deviation of the training set on the [0, 1] scale.
        files: official files per split (``{"train": (FileSpec, ...), "test": (...)}``); empty for digits.
        citation: the paper to cite.
        homepage: where the dataset is described.
        aliases: other accepted names.
        reader: the function that loads a split (internal).
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: dict[str, tuple[FileSpec, ...]]
    citation: str
    homepage: str
    aliases: tuple[str, ...] = ()
    reader: Reader | None = field(default=None, repr=False, compare=False)


class _DatasetRegistry(Registry[DatasetInfo]):
    """A :class:`~advlab.registry.Registry` that also accepts aliases (``"fmnist"`` -> ``"fashion-mnist"``).

    ``names()`` lists canonical names only; ``get`` and ``in`` accept aliases too.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._aliases: dict[str, str] = {}

    def add(self, info: DatasetInfo) -> DatasetInfo:
        self.register(info.name)(info)
        for alias in info.aliases:
            self._aliases[alias.lower()] = info.name
        return info

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` (an alias or a name in any case); unknown names pass through."""
        key = name.lower() if isinstance(name, str) else name
        return self._aliases.get(key, key)

    def get(self, name: str) -> DatasetInfo:
        if isinstance(name, str):
            name = self.canonical(name.strip())
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self.canonical(name))


DATASETS: _DatasetRegistry = _DatasetRegistry("dataset")
"""Dataset name -> :class:`DatasetInfo` (digits, mnist, fashion-mnist, cifar10; aliases accepted by ``get``)."""


class Dataset(torch.utils.data.Dataset):
    """A labelled set held in memory: ``x`` float32 images (N, C, H, W) or feature vectors (N, D), ``y`` (N,) int64.

    Indexing gives ``(x[i], y[i])``, so a ``Dataset`` also works as a ``torch.utils.data.Dataset``.

    Attributes:
        x: inputs, float32: images (N, C, H, W) with values in [0, 1] for the built-in datasets, or whatever a
            data file holds (:func:`advlab.data.load_data_file`), e.g. standardised features (N, D).
        y: labels, int64, shape (N,).
        name: canonical dataset name (the file name for a data file).
        split: ``"train"`` or ``"test"`` (``"all"`` for a data file that holds one split).
        classes: class names in label order.
        mean: per-channel training-set mean (normalisation constant; give it to ``Classifier(mean=...)``); for a
            data file, the mean of the examples read.
        std: per-channel standard deviation, likewise.
        source: the file or folder the data was read from (``None`` for the built-in datasets).
        single_split: whether the source holds one split only, served for "train" and "test" alike.

    Examples:
        >>> ds = load_dataset("digits", split="test")
        >>> ds.x.shape, ds.num_classes
        (torch.Size([540, 1, 8, 8]), 10)
        >>> for xb, yb in ds.loader(128): ...
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        name: str,
        split: str,
        classes: list[str] | tuple[str, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        source: str | None = None,
        single_split: bool = False,
    ) -> None:
        if x.dim() < 2 or x.dtype != torch.float32:
            raise ValueError(
                f"x: expected a float32 tensor (N, C, H, W) or (N, D), got {x.dtype} of shape {tuple(x.shape)}"
            )
        validation.check_labels(y, x.shape[0], len(classes))
        if y.dtype != torch.int64:
            raise TypeError(f"y: expected int64 labels, got {y.dtype}; use y.long()")
        self.x = x
        self.y = y
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.source = source
        self.single_split = single_split

    # ------------------------------------------------------------------ facts
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape ``(C, H, W)`` (``(D,)`` for feature vectors)."""
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )

    # ------------------------------------------------------------------ subsets
    def _take(self, index: torch.Tensor) -> Dataset:
        return Dataset(
            self.x[index],
            self.y[index],
            name=self.name,
            split=self.split,
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            source=self.source,
            single_split=self.single_split,
        )

    def _check_n(self, n: Any) -> int:
        n = validation.check_int("n", n, minimum=1)
        if n > len(self):
            raise ValueError(
                f"n: asked for {n} examples but the {self.name} {self.split} split here has {len(self)}; "
                f"use n <= {len(self)} (or None for all)"
            )
        return n

    def head(self, n: int) -> Dataset:
        """The first ``n`` examples in file order (deterministic; what the CLI's ``--n`` uses).

        Raises:
            ValueError: ``n < 1`` or ``n > len(self)``.
        """
        n = self._check_n(n)
        return self._take(torch.arange(n))

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """A seeded, class-stratified random subset of ``n`` examples, kept in file order.

        Each class gets a share of ``n`` proportional to its frequency (largest-remainder rounding, ties to the
        lower class index), drawn without replacement with a ``torch.Generator`` seeded by ``seed`` (the global RNG
        is untouched). The same ``(n, seed)`` always gives the same subset.

        Args:
            n: number of examples, ``1 <= n <= len(self)``.
            seed: random seed.

        Raises:
            ValueError: ``n`` out of range.
        """
        n = self._check_n(n)
        seed = validation.check_int("seed", seed)
        gen = torch.Generator().manual_seed(seed)
        labels = self.y.cpu()
        counts = torch.bincount(labels, minlength=self.num_classes).double()
        quota_f = counts * (n / len(self))
        quota = quota_f.floor().long()
        remainder = quota_f - quota
        short = n - int(quota.sum())
        if short:
            order = sorted(range(self.num_classes), key=lambda c: (-float(remainder[c]), c))
            for c in order[:short]:
                quota[c] += 1
        picked = []
        for c in range(self.num_classes):
            k = int(quota[c])
            if k == 0:
                continue
            members = (labels == c).nonzero().flatten()
            picked.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
        index = torch.cat(picked).sort().values
        return self._take(index)

    # ------------------------------------------------------------------ iteration
    def loader(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None) -> DataLoader:
        """A ``DataLoader`` over ``(x, y)`` batches.

        Args:
            batch_size: examples per batch (the last batch may be smaller).
            shuffle: reshuffle every epoch.
            generator: the generator that drives shuffling; default a fresh one seeded with 0, so the order is
                reproducible and the global RNG is untouched.
        """
        batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle: expected True or False, got {type(shuffle).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size, shuffle=shuffle, generator=generator)
