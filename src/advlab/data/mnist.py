"""MNIST and Fashion-MNIST: the four official gzip-compressed IDX files per dataset, checked and decoded.

Sources:
    MNIST: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document recognition",
    Proc. IEEE 86(11), 1998. Files from http://yann.lecun.com/exdb/mnist/ (mirror
    https://ossci-datasets.s3.amazonaws.com/mnist/), derived from NIST Special Databases 1 and 3.

    Fashion-MNIST: H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
    Learning Algorithms", arXiv:1708.07747, 2017 (MIT licence, Zalando SE). Files from
    http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/.

Both: 60000 training and 10000 test images of 28x28 uint8 pixels (0 background, 255 ink), labels 0..9.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from advlab.data._files import CorruptFileError, FileSpec, ensure_files, file_stamp
from advlab.data.dataset import DATASETS, DatasetInfo, RawData
from advlab.data.idx import read_idx

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# (file, bytes, official md5, sha256) — the published values, see shared/data/README.md
_MNIST_FILES = (
    (
        "train-images-idx3-ubyte.gz",
        9912422,
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        28881,
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        1648877,
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        4542,
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
)
_FASHION_FILES = (
    (
        "train-images-idx3-ubyte.gz",
        26421880,
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        29515,
        "25c81989df183df01b3e8a0aad5dffbe",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        4422102,
        "bef4ecab320f06d8554ea6380940ec79",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        5148,
        "bb300cfdad3c16e7a12a480ee83cd310",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
)
_PREFIX = {"train": "train", "test": "t10k"}

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))


def _specs(folder: str, table: tuple, mirrors: tuple[str, ...]) -> dict[str, tuple[FileSpec, ...]]:
    out: dict[str, list[FileSpec]] = {"train": [], "test": []}
    for fname, size, md5, sha256 in table:
        split = "train" if fname.startswith("train") else "test"
        out[split].append(FileSpec(f"{folder}/{fname}", size, md5, sha256, tuple(m + fname for m in mirrors)))
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=8)
def _decode_pair(images_path: str, labels_path: str, _stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Decode and cross-check an images/labels pair (cached per process; ``_stamp`` = the files' stamps)."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise CorruptFileError(
            f"{images_path} / {labels_path}: expected unsigned-byte IDX data, got {images.dtype} / {labels.dtype}"
        )
    if images.shape[1:] != (28, 28):
        raise CorruptFileError(f"{images_path}: expected 28x28 images, got shape {images.shape}")
    if images.shape[0] != labels.shape[0]:
        raise CorruptFileError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels; "
            "the two files do not belong together"
        )
    if labels.size and int(labels.max()) > 9:
        raise CorruptFileError(f"{labels_path}: label {int(labels.max())} is outside 0..9")
    return images.reshape(-1, 1, 28, 28), labels


def _reader(key: str, classes: tuple[str, ...]):
    def read(root: Path, split: str, download: bool) -> RawData:
        info = DATASETS.get(key)
        images_spec, labels_spec = sorted(info.files[split], key=lambda s: "labels" in s.name)
        images, labels = ensure_files(root, (images_spec, labels_spec), download=download)
        x, y = _decode_pair(str(images), str(labels), (file_stamp(images), file_stamp(labels)))
        return RawData(x, y, 255.0, classes, f"{images.parent}")

    return read


DATASETS.add(
    DatasetInfo(
        name="mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        classes=DIGIT_CLASSES,
        mean=(0.1307,),
        std=(0.3081,),
        files=_specs("mnist", _MNIST_FILES, MNIST_MIRRORS),
        citation='Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document '
        'recognition", Proc. IEEE 86(11):2278-2324, 1998',
        homepage="http://yann.lecun.com/exdb/mnist/",
        reader=_reader("mnist", DIGIT_CLASSES),
    )
)

DATASETS.add(
    DatasetInfo(
        name="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        classes=FASHION_CLASSES,
        mean=(0.2860,),
        std=(0.3530,),
        files=_specs("fashion-mnist", _FASHION_FILES, FASHION_MIRRORS),
        citation='H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine '
        'Learning Algorithms", arXiv:1708.07747, 2017',
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        aliases=("fashion_mnist", "fmnist", "fashionmnist"),
        reader=_reader("fashion-mnist", FASHION_CLASSES),
    )
)
