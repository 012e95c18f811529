"""scikit-learn's 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits"), split train/test.

Source: ``sklearn.datasets.load_digits`` (1797 images of 8x8 pixels with values 0..16, shipped inside
scikit-learn, no download). Original data: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits",
UCI Machine Learning Repository, 1998, doi:10.24432/C50P49.

The split is deterministic: ``train_test_split(test_size=0.3, random_state=0, stratify=labels)`` gives 1257
training and 540 test images (52 to 55 per class in test); each split keeps the original ``load_digits`` order.
Pixels are divided by 16 to lie in [0, 1].
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from advlab.data.dataset import DATASETS, DatasetInfo, RawData

TEST_FRACTION = 0.3
SPLIT_SEED = 0
DIGITS_MEAN = 0.3056
"""Mean pixel value (/16) of the 1257-image training split (``tests/data`` recomputes it)."""
DIGITS_STD = 0.3761
"""Pixel standard deviation (/16) of the training split."""


@functools.lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    images = images.reshape(-1, 1, 8, 8).astype(np.float32)
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, np.sort(train), np.sort(test)


def _read(root: Path, split: str, download: bool) -> RawData:
    images, labels, train, test = _split_indices()
    index = train if split == "train" else test
    return RawData(images[index], labels[index], 16.0, tuple(str(i) for i in range(10)), "sklearn.datasets.load_digits")


DATASETS.add(
    DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        classes=tuple(str(i) for i in range(10)),
        mean=(DIGITS_MEAN,),
        std=(DIGITS_STD,),
        files={"train": (), "test": ()},
        citation='E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning '
        "Repository, 1998 (via sklearn.datasets.load_digits)",
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        aliases=("sklearn-digits",),
        reader=_read,
    )
)
