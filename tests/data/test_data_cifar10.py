"""CIFAR-10 readers on synthetic files: python pickles (restricted), the official tarball, the binary layout,
the partial fallback and its warning, checksums, and refusal of malicious pickles."""

from __future__ import annotations

import functools
import hashlib
import io as stdio
import logging
import operator
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from advlab.data import ChecksumError, CorruptFileError, DatasetNotFoundError, FileSpec, _files, cifar10, load_dataset
from advlab.data.cifar10 import decode_binary_batch, decode_python_batch, restricted_loads

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # not the built-in list


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    monkeypatch.setattr(_files, "_VERIFIED", {})
    monkeypatch.setattr(cifar10, "_WARNED", set())


def _batch(seed: int, n: int = 4) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, size=n)]


def _pickle_batch(data: np.ndarray, labels: list[int], *, py2_names: bool = True) -> bytes:
    blob = pickle.dumps(
        {"batch_label": "testing batch", "labels": labels, "data": data, "filenames": ["a.png"]}, protocol=2
    )
    # the official files were written by Python 2 / numpy 1, which name numpy.core, not numpy._core
    return blob.replace(b"numpy._core.", b"numpy.core.") if py2_names else blob


def _meta() -> bytes:
    return pickle.dumps({"num_cases_per_batch": 10000, "label_names": NAMES, "num_vis": 3072}, protocol=2)


def _records(data: np.ndarray, labels: list[int]) -> bytes:
    return np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1).tobytes()


def _register_checksums(monkeypatch, files: dict[str, bytes]) -> None:
    for name, blob in files.items():
        monkeypatch.setitem(cifar10._PY_CHECKSUMS, name, (len(blob), hashlib.md5(blob).hexdigest()))


# ---------------------------------------------------------------------- decoding and restricted unpickling
def test_python_batch_decodes_to_chw():
    data, labels = _batch(0)
    for py2 in (True, False):
        images, y = decode_python_batch(_pickle_batch(data, labels, py2_names=py2), source="b")
        assert images.shape == (4, 3, 32, 32) and y.tolist() == labels
        # CHW: red plane first, each plane row-major
        assert images[2, 1, 3, 5] == data[2, 1024 + 3 * 32 + 5]


def test_binary_records_decode_and_refuse_truncation():
    data, labels = _batch(1)
    images, y = decode_binary_batch(_records(data, labels), source="b")
    assert y.tolist() == labels and np.array_equal(images.reshape(4, -1), data)
    with pytest.raises(CorruptFileError, match="f.bin: 12291 bytes is not a whole number of 3073-byte"):
        decode_binary_batch(_records(data, labels)[:-1], source="f.bin")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": _Evil(marker)}, protocol=2)
    with pytest.raises(CorruptFileError, match=r"evil_batch: refused to unpickle \(global '(posix|os)\.system'"):
        restricted_loads(blob, source="evil_batch")
    assert not marker.exists()
    for payload in (pickle.dumps(eval, protocol=2), pickle.dumps(Path("/x"), protocol=2)):
        with pytest.raises(CorruptFileError, match="refused to unpickle"):
            restricted_loads(payload, source="f")
    with pytest.raises(CorruptFileError, match="not a valid CIFAR-10 pickle"):
        restricted_loads(_meta()[:40], source="f")


# ---------------------------------------------------------------------- the sources, in order of preference
def _write_python_dir(root: Path, monkeypatch) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {name: _batch(i) for i, name in enumerate(BATCHES)}
    files = {name: _pickle_batch(*batches[name]) for name in BATCHES}
    files["batches.meta"] = _meta()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    _register_checksums(monkeypatch, files)
    return batches


def test_python_batches_are_preferred(tmp_path, monkeypatch, caplog):
    batches = _write_python_dir(tmp_path, monkeypatch)
    (tmp_path / "cifar10" / "partial").mkdir()  # present but ignored
    with caplog.at_level(logging.WARNING, logger="advlab.data.cifar10"):
        test = load_dataset("cifar-10", split="test", data_dir=tmp_path, download=False)
        train = load_dataset("cifar10", split="train", data_dir=tmp_path, download=False)
    assert len(test) == 4 and len(train) == 20
    assert np.array_equal(test.x.numpy().reshape(4, -1) * 255, batches["test_batch"][0].astype(np.float32))
    assert train.y.tolist() == functools.reduce(operator.iadd, (batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert test.classes == NAMES  # read from batches.meta
    assert test.mean == (0.4914, 0.4822, 0.4465) and test.input_shape == (3, 32, 32)
    assert "subset" in caplog.text  # fewer than 10000 per batch here: the subset warning fires
    with pytest.raises(ValueError, match="asked for 5 examples but the cifar10 test split has 4"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, n=5)


def test_python_batch_checksum_mismatch_refused(tmp_path, monkeypatch):
    _write_python_dir(tmp_path, monkeypatch)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=r"test_batch: md5 is .* will not be used"):
        load_dataset("cifar10", split="test", data_dir=tmp_path)


def _official_tar(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    batches = {name: _batch(10 + i) for i, name in enumerate(BATCHES)}
    files = {name: _pickle_batch(*batches[name]) for name in BATCHES}
    files["batches.meta"] = _meta()
    _register_checksums(monkeypatch, files)
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in {
            **{f"cifar-10-batches-py/{k}": v for k, v in files.items()},
            "../escape": b"x",
            "cifar-10-batches-py/readme.html": b"<p>",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, stdio.BytesIO(blob))
    blob = buf.getvalue()
    tar_path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tar_path.write_bytes(blob)
    monkeypatch.setattr(
        cifar10,
        "TAR",
        FileSpec(cifar10.TAR.relpath, len(blob), md5=hashlib.md5(blob).hexdigest(), urls=cifar10.TAR.urls),
    )
    return tar_path, batches


def test_official_tarball_is_extracted_safely(tmp_path, monkeypatch):
    _, batches = _official_tar(tmp_path, monkeypatch)
    ds = load_dataset("cifar10", split="test", data_dir=tmp_path / ".", download=False)
    assert ds.y.tolist() == batches["test_batch"][1] and ds.classes == NAMES
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    extracted = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".verified"))
    assert extracted == sorted(BATCHES + ["batches.meta"])  # only the known members, nothing else
    assert not (tmp_path / "escape").exists() and not (tmp_path / "cifar10" / "escape").exists()


def test_tarball_read_in_memory_when_folder_is_read_only(tmp_path, monkeypatch):
    _, batches = _official_tar(tmp_path, monkeypatch)

    def refuse(path, data):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(cifar10.io, "write_bytes", refuse)
    ds = load_dataset("cifar10", split="train", data_dir=tmp_path, download=False)
    assert len(ds) == 20 and ds.y[:4].tolist() == batches["data_batch_1"][1]


def test_download_of_the_tarball_via_file_url(tmp_path, monkeypatch):
    tar_path, batches = _official_tar(tmp_path / "mirror", monkeypatch)
    monkeypatch.setattr(
        cifar10, "TAR", FileSpec(cifar10.TAR.relpath, cifar10.TAR.size, md5=cifar10.TAR.md5, urls=(tar_path.as_uri(),))
    )
    ds = load_dataset("cifar10", split="test", data_dir=tmp_path / "data")
    assert ds.y.tolist() == batches["test_batch"][1]
    assert (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == tar_path.read_bytes()


def test_official_binary_version(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    data, labels = _batch(5, n=3)
    (folder / "test_batch.bin").write_bytes(_records(data, labels))
    ds = load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    assert ds.y.tolist() == labels and ds.classes == list(cifar10.CLASSES)
    assert np.array_equal((ds.x.numpy() * 255).round().reshape(3, -1), data)
    (folder / "test_batch.bin").write_bytes(_records(data, labels)[:-7])
    with pytest.raises(CorruptFileError, match="test_batch.bin: .* not a whole number"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)


def test_partial_fallback_warns_and_checks_sha256(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "cifar10" / "partial"
    folder.mkdir(parents=True)
    data, labels = _batch(6, n=5)
    blob = _records(data, labels)
    (folder / "test_batch_first1000.bin").write_bytes(blob)
    # the real sha256 (and size) refuse the synthetic file
    with pytest.raises(ChecksumError, match="test_batch_first1000.bin: size is 15365 bytes, expected 3073000"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    monkeypatch.setitem(cifar10._PARTIAL_SHA256, "test_batch", hashlib.sha256(blob).hexdigest())
    monkeypatch.setattr(cifar10, "PARTIAL_RECORDS", 5)
    with caplog.at_level(logging.WARNING, logger="advlab.data.cifar10"):
        ds = load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    assert ds.y.tolist() == labels
    assert "only a subset is available (5 of 10000 images" in caplog.text
    assert "cifar-10-python.tar.gz" in caplog.text


def test_nothing_present_names_the_archive(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", split="train", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in msg
    assert (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and "c58f30108f718f92721af3b95e74349a" in msg
    )
    assert "cifar-10-batches-py/" in msg
    monkeypatch.setattr(_files, "urlopen", lambda url, timeout: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DatasetNotFoundError, match="no network"):
        load_dataset("cifar10", split="test", data_dir=tmp_path)
