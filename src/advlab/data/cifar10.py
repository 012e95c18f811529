"""CIFAR-10: the official python batches (restricted unpickling), the binary record layout, and the 1000-per-batch
partial files, with checksums and a safe extraction of the official tarball.

Source: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report, University of
Toronto, 2009; files from https://www.cs.toronto.edu/~kriz/cifar.html (50000 training and 10000 test colour
images of 32x32, 10 classes).

Where the files are looked for, in order, under ``<data_dir>/cifar10/``:

1. ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch`` (the extracted official python version; md5-checked);
2. ``cifar-10-python.tar.gz`` (the official archive; md5-checked, the needed members are extracted next to it,
   or read in memory when the folder is read-only);
3. ``cifar-10-batches-bin/data_batch_1..5.bin`` and ``test_batch.bin`` (the official binary version);
4. ``partial/data_batch_N_first1000.bin`` and ``partial/test_batch_first1000.bin`` (derived files holding the first
   1000 images of each batch in the binary layout; sha256-checked) — a warning says only a subset is available;
5. otherwise the official archive is downloaded (when ``download=True``).

The official batches are Python 2 pickles. Unpickling is unavoidable for that format, so it goes through
:class:`RestrictedUnpickler`, which only rebuilds numpy arrays and plain builtins: a malicious file cannot run code.
"""

from __future__ import annotations

import builtins
import codecs
import functools
import hashlib
import io as _stdio
import logging
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from advlab import io
from advlab.data._files import (
    CorruptFileError,
    DatasetNotFoundError,
    FileSpec,
    ensure_file,
    file_stamp,
    missing_message,
    verify_file,
)
from advlab.data.dataset import DATASETS, DatasetInfo, RawData

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32
"""One record of the binary layout: a label byte, then 1024 red, 1024 green and 1024 blue pixel bytes."""

PY_DIR = "cifar10/cifar-10-batches-py"
BIN_DIR = "cifar10/cifar-10-batches-bin"
PARTIAL_DIR = "cifar10/partial"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

TAR = FileSpec(
    "cifar10/cifar-10-python.tar.gz",
    170498071,
    md5="c58f30108f718f92721af3b95e74349a",
    urls=(URL,),
    note="(the official CIFAR-10 python version; advlab extracts the batches it needs)",
)
# official python batches: name -> (bytes, official md5)
_PY_CHECKSUMS = {
    "data_batch_1": (31035704, "c99cafc152244af753f735de768cd75f"),
    "data_batch_2": (31035320, "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": (31035999, "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": (31035696, "634d18415352ddfa80567beed471001a"),
    "data_batch_5": (31035623, "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": (31035526, "40351d587109b95175f43aff81a1287e"),
    "batches.meta": (158, "5ff9c542aee3614f3951f8cda6e48888"),
}
# derived partial files (first 1000 records of each batch): name -> sha256, see shared/data/README.md
_PARTIAL_SHA256 = {
    "data_batch_1": "1c5f9ea0fc1111d586f29115efd3db25eecf7db27b29aaebbe84721446b052cc",
    "data_batch_2": "4f979f9b23aaa1ed4caa123051abf301d1bf3efaafb71eb652c88915b5724f2d",
    "data_batch_3": "b22c7fc2fb3577032913fa43c14b40b539abf70f40cfc257fa90f035d3728e34",
    "data_batch_4": "998398a620412db9b26cad6a83aff2d049fef005e171474ed2676c0397c7157f",
    "data_batch_5": "d427e63de6374fb63b5a1d61a35cf7a9457aaac5f1af2ef2ac87ecfef4877085",
    "test_batch": "8314c96d7cd65618193bab23acdd5d4c4af15bf6dd00a1781d55beedf3be1ef5",
}
PARTIAL_RECORDS = 1000


def py_spec(name: str, folder: str = PY_DIR) -> FileSpec:
    """The :class:`FileSpec` of an official python-version file (``data_batch_1``, ``test_batch``, ``batches.meta``)."""
    size, md5 = _PY_CHECKSUMS[name]
    return FileSpec(f"{folder}/{name}", size, md5=md5, note=f"(extracted from {URL})")


def partial_spec(name: str) -> FileSpec:
    """The :class:`FileSpec` of a derived ``partial/<name>_first1000.bin`` file (first 1000 records of a batch)."""
    return FileSpec(
        f"{PARTIAL_DIR}/{name}_first1000.bin",
        PARTIAL_RECORDS * RECORD_BYTES,
        sha256=_PARTIAL_SHA256[name],
        note="(a derived file: the first 1000 records of the official batch in the binary layout)",
    )


# ---------------------------------------------------------------------- restricted unpickling
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.arange(1).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes in protocol-2 pickles
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _SCALAR
    _ALLOWED_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _FROMBUFFER
_SAFE_BUILTINS = frozenset(
    {"list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes", "bytearray"}
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (code execution attempt or not a CIFAR-10 file)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays/dtypes/scalars and plain builtin containers.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes) raises ``pickle.UnpicklingError``
    before it is looked up, so loading a malicious file cannot execute code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        raise ForbiddenGlobal(f"global '{module}.{name}' is not allowed")


def restricted_loads(data: bytes, *, source: str) -> Any:
    """Unpickle ``data`` (Python 2 strings decoded as latin1) with :class:`RestrictedUnpickler`.

    Raises:
        CorruptFileError: the pickle is truncated, invalid or references a forbidden global.
    """
    try:
        return RestrictedUnpickler(_stdio.BytesIO(data), encoding="latin1").load()
    except ForbiddenGlobal as exc:
        raise CorruptFileError(
            f"{source}: refused to unpickle ({exc}); an official CIFAR-10 file only holds numpy arrays, lists and "
            "strings, so this file is corrupt or not the official one"
        ) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CorruptFileError(f"{source}: not a valid CIFAR-10 pickle ({type(exc).__name__}: {exc})") from exc


def decode_python_batch(data: bytes, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one official python batch to ``(images (N, 3, 32, 32) uint8, labels (N,) uint8)``."""
    batch = restricted_loads(data, source=source)
    if not isinstance(batch, dict):
        raise CorruptFileError(f"{source}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise CorruptFileError(f"{source}: expected the keys 'data' and 'labels', got {sorted(map(str, batch))}")
    images, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise CorruptFileError(f"{source}: 'data' should be a uint8 array of shape (N, 3072), got {got}")
    if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
        raise CorruptFileError(f"{source}: 'labels' should hold {images.shape[0]} integers, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptFileError(f"{source}: labels outside 0..9")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def decode_binary_batch(data: bytes, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode binary-layout records (label byte + 3072 CHW pixel bytes each) to ``(images, labels)``."""
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise CorruptFileError(
            f"{source}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records; the file is "
            "truncated or corrupt"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if int(labels.max()) > 9:
        raise CorruptFileError(f"{source}: label byte {int(labels.max())} is outside 0..9; not a CIFAR-10 file")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


# ---------------------------------------------------------------------- cached decoding
@functools.lru_cache(maxsize=16)
def _decode_file(path: str, kind: str, _stamp: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    data = Path(path).read_bytes()
    images, labels = (decode_python_batch if kind == "py" else decode_binary_batch)(data, source=path)
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(labels)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _tar_members(tar_path: str) -> dict[str, bytes]:
    """Read the known members of the official archive (md5-checked), never trusting the archive's paths."""
    wanted = {f"cifar-10-batches-py/{name}": name for name in _PY_CHECKSUMS}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                fh = tar.extractfile(member)
                data = fh.read() if fh is not None else b""
                size, md5 = _PY_CHECKSUMS[name]
                got = hashlib.md5(data).hexdigest()
                if len(data) != size or got != md5:
                    raise CorruptFileError(f"{tar_path}: member {member.name} has md5 {got}, expected {md5}")
                out[name] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptFileError(f"{tar_path}: cannot read the archive ({exc}); delete it and download it again") from exc
    missing = sorted(set(_PY_CHECKSUMS) - set(out))
    if missing:
        raise CorruptFileError(f"{tar_path}: the archive lacks {', '.join(missing)}; it is not the official archive")
    return out


@functools.lru_cache(maxsize=2)
def _decode_tar_split(tar_path: str, split: str, _stamp: tuple[int, int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    members = _tar_members(tar_path)
    return [decode_python_batch(members[b], source=f"{tar_path}:{b}") for b in BATCHES[split]]


def _from_tar(root: Path, split: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Extract the official archive's batches into ``cifar-10-batches-py/`` (or read them in memory) and decode."""
    tar_path = verify_file(root / TAR.relpath, TAR)
    targets = {name: root / PY_DIR / name for name in _PY_CHECKSUMS}
    if not all(t.is_file() for t in targets.values()):
        members = _tar_members(str(tar_path))
        try:  # extract next to the archive so later loads read the batches directly
            for name, target in targets.items():
                if not target.is_file():
                    io.write_bytes(target, members[name])
        except OSError as exc:  # read-only folder: decode from memory
            log.info("cannot extract %s (%s); reading the batches from the archive in memory", tar_path, exc)
            return _decode_tar_split(str(tar_path), split, file_stamp(tar_path)), str(tar_path)
    return [_decode_checked(root, py_spec(b), "py") for b in BATCHES[split]], str(root / PY_DIR)


# ---------------------------------------------------------------------- class names
def class_names(root: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta`` (md5-checked, restricted unpickling) when present, else the built-in list."""
    for folder in (PY_DIR, "cifar10"):
        path = root / folder / "batches.meta"
        if path.is_file():
            verify_file(path, py_spec("batches.meta", folder))
            meta = restricted_loads(path.read_bytes(), source=str(path))
            names = meta.get("label_names") if isinstance(meta, dict) else None
            if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, str) for n in names):
                raise CorruptFileError(f"{path}: expected 'label_names' with 10 strings")
            return tuple(names)
    txt = root / BIN_DIR / "batches.meta.txt"
    if txt.is_file():
        names = [line.strip() for line in txt.read_text(encoding="latin1").splitlines() if line.strip()]
        if len(names) == 10:
            return tuple(names)
    return CLASSES


# ---------------------------------------------------------------------- the reader
_WARNED: set[tuple[str, str]] = set()


def _all_files(root: Path, relpaths: list[str]) -> bool:
    return all((root / r).is_file() for r in relpaths)


def _decode_checked(root: Path, spec: FileSpec, kind: str) -> tuple[np.ndarray, np.ndarray]:
    path = verify_file(root / spec.relpath, spec)
    return _decode_file(str(path), kind, file_stamp(path))


def _read(root: Path, split: str, download: bool) -> RawData:
    names = BATCHES[split]
    py = [py_spec(b) for b in names]
    binary = [FileSpec(f"{BIN_DIR}/{b}.bin") for b in names]  # no published per-file checksum
    partial = [partial_spec(b) for b in names]
    if _all_files(root, [s.relpath for s in py]):
        parts, source = [_decode_checked(root, s, "py") for s in py], str(root / PY_DIR)
    elif (root / TAR.relpath).is_file():
        parts, source = _from_tar(root, split)
    elif _all_files(root, [s.relpath for s in binary]):
        parts, source = [_decode_checked(root, s, "bin") for s in binary], str(root / BIN_DIR)
    elif _all_files(root, [s.relpath for s in partial]):
        parts, source = [_decode_checked(root, s, "bin") for s in partial], str(root / PARTIAL_DIR)
    else:
        alternatives = (
            f"Alternatively put the extracted official folder cifar-10-batches-py/ ({', '.join(names)}) under "
            f"{root / 'cifar10'}, or the binary version cifar-10-batches-bin/ "
            f"({', '.join(b + '.bin' for b in names)}) there.",
        )
        if not download:
            raise DatasetNotFoundError(missing_message(root / TAR.relpath, TAR, "download=False", alternatives))
        ensure_file(root, TAR, download=True, alternatives=alternatives)
        parts, source = _from_tar(root, split)
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    full = 10000 * len(names)
    if len(labels) < full and (str(root), split) not in _WARNED:
        _WARNED.add((str(root), split))
        log.warning(
            "cifar10 %s: only a subset is available (%d of %d images, the first %d of each batch, from %s); results "
            "are not comparable with the full split. For the full data put %s from %s into %s.",
            split,
            len(labels),
            full,
            len(labels) // len(names),
            source,
            TAR.name,
            URL,
            root / "cifar10",
        )
    return RawData(images, labels, 255.0, class_names(root), source)


DATASETS.add(
    DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        classes=CLASSES,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        files={
            "train": (TAR, *(py_spec(b) for b in BATCHES["train"]), *(partial_spec(b) for b in BATCHES["train"])),
            "test": (TAR, py_spec("test_batch"), partial_spec("test_batch")),
        },
        citation='A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report, '
        "University of Toronto, 2009",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        aliases=("cifar-10", "cifar_10"),
        reader=_read,
    )
)
