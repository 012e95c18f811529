"""Data-dir precedence, checksum verification and its cache, and the download path (file:// URLs and a fake
opener; never the network), end to end through ``load_dataset``."""

from __future__ import annotations

import gzip
import hashlib
import io as stdio
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from advlab.data import (
    DATASETS,
    ChecksumError,
    CorruptFileError,
    DatasetNotFoundError,
    FileSpec,
    _files,
    load_dataset,
    resolve_data_dir,
)
from advlab.data._files import download_file, ensure_file, verify_file


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own user cache (verification sidecars) and no $ADVLAB_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    monkeypatch.setattr(_files, "_VERIFIED", {})


def _spec_for(data: bytes, relpath: str, urls: tuple[str, ...] = ()) -> FileSpec:
    return FileSpec(
        relpath, len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(), urls=urls
    )


# ---------------------------------------------------------------------- data-dir precedence
def test_data_dir_precedence(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == home / ".cache" / "advlab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "advlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # XDG says: relative paths are invalid
    assert resolve_data_dir() == home / ".cache" / "advlab"
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("ADVLAB_DATA", "")
    assert resolve_data_dir() == home / ".cache" / "advlab"
    assert resolve_data_dir("~/data") == home / "data"


def test_data_dir_bad_values(tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, expected a folder"):
        resolve_data_dir(afile)
    with pytest.raises(TypeError, match="data_dir"):
        resolve_data_dir(3)
    with pytest.raises(ValueError, match="empty"):
        resolve_data_dir("  ")


def test_load_dataset_uses_env_then_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "from-env"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "from-env" / "mnist")):
        load_dataset("mnist", download=False)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "from-arg" / "mnist")):
        load_dataset("mnist", data_dir=tmp_path / "from-arg", download=False)


# ---------------------------------------------------------------------- verification
def test_verify_accepts_good_and_refuses_bad(tmp_path):
    good = b"official bytes" * 10
    path = tmp_path / "d" / "f.bin"
    path.parent.mkdir()
    path.write_bytes(good)
    spec = _spec_for(good, "d/f.bin")
    assert verify_file(path, spec) == path.resolve()
    path.write_bytes(b"x" * len(good))  # same size, other content
    with pytest.raises(ChecksumError, match=rf"{path}: sha256 is {hashlib.sha256(b'x' * len(good)).hexdigest()}"):
        verify_file(path, spec)
    path.write_bytes(good[:-1])
    with pytest.raises(ChecksumError, match=rf"size is {len(good) - 1} bytes, expected {len(good)}"):
        verify_file(path, spec)
    md5_only = FileSpec("d/f.bin", None, md5="0" * 32)
    with pytest.raises(ChecksumError, match="md5 is"):
        verify_file(path, md5_only)


def test_verification_is_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    data = b"abc" * 1000
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    spec = _spec_for(data, "f.bin")
    calls = []
    real = _files.file_digest
    monkeypatch.setattr(_files, "file_digest", lambda p, a: calls.append(p) or real(p, a))
    verify_file(path, spec)
    verify_file(path, spec)
    assert len(calls) == 1
    sidecar = tmp_path / ".f.bin.verified"
    assert sidecar.is_file()
    monkeypatch.setattr(_files, "_VERIFIED", {})  # a new process: the sidecar answers
    verify_file(path, spec)
    assert len(calls) == 1
    # changing the file (new mtime) invalidates both caches, and a wrong file is refused
    path.write_bytes(b"abd" * 1000)
    with pytest.raises(ChecksumError):
        verify_file(path, spec)
    assert len(calls) == 2


def test_read_only_folder_keeps_the_record_in_the_user_cache(tmp_path, monkeypatch):
    data = b"ro" * 100
    folder = tmp_path / "readonly"
    folder.mkdir()
    (folder / "f.bin").write_bytes(data)
    real_write = _files.io.write_json

    def write_json(path, obj):
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, obj)

    monkeypatch.setattr(_files.io, "write_json", write_json)
    verify_file(folder / "f.bin", _spec_for(data, "f.bin"))
    records = list((tmp_path / "xdg" / "advlab" / "verified").glob("*.json"))
    assert len(records) == 1 and str(folder / "f.bin") in records[0].read_text()


# ---------------------------------------------------------------------- download
def test_download_from_file_url_with_checksum(tmp_path):
    payload = bytes(range(256)) * 50
    mirror = tmp_path / "mirror" / "f.gz"
    mirror.parent.mkdir()
    mirror.write_bytes(payload)
    spec = _spec_for(payload, "ds/f.gz", urls=((tmp_path / "nowhere.gz").as_uri(), mirror.as_uri()))
    root = tmp_path / "data"
    path = ensure_file(root, spec, download=True)  # first mirror fails, the second one serves
    assert path == (root / "ds" / "f.gz").resolve()
    assert path.read_bytes() == payload


def test_download_checksum_mismatch_writes_nothing(tmp_path):
    mirror = tmp_path / "f.gz"
    mirror.write_bytes(b"tampered!")
    spec = FileSpec("ds/f.gz", 9, sha256=hashlib.sha256(b"original!").hexdigest(), urls=(mirror.as_uri(),))
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="did not match the published checksum.*nothing was written"):
        ensure_file(root, spec, download=True)
    assert not (root / "ds" / "f.gz").exists()
    assert list((root / "ds").iterdir()) == []  # no temporary file left behind


def test_fake_opener_gets_timeout_and_failure_names_path_and_url(tmp_path, monkeypatch):
    seen = []

    def opener(url, timeout):
        seen.append((url, timeout))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(_files, "urlopen", opener)
    spec = FileSpec("ds/f.gz", 3, sha256="0" * 64, urls=("https://example.org/a/f.gz", "http://mirror/f.gz"))
    with pytest.raises(DatasetNotFoundError) as err:
        ensure_file(tmp_path, spec, download=True)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"save it as {tmp_path / 'ds' / 'f.gz'}" in msg
    assert "https://example.org/a/f.gz" in msg and "network is unreachable" in msg
    assert msg.count(str(tmp_path / "ds" / "f.gz")) == 2  # "... is missing" and "save it as ...", no more
    assert seen == [("https://example.org/a/f.gz", _files.DOWNLOAD_TIMEOUT_S), ("http://mirror/f.gz", 30.0)]


def test_fake_opener_serves_bytes(tmp_path, monkeypatch):
    payload = b"served"
    monkeypatch.setattr(_files, "urlopen", lambda url, timeout: stdio.BytesIO(payload))
    path = download_file(_spec_for(payload, "f", urls=("https://example.org/f",)), tmp_path / "f")
    assert path.read_bytes() == payload


# ---------------------------------------------------------------------- end to end with load_dataset
def _idx(values: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape)
    return gzip.compress(header + values.astype(np.uint8).tobytes())


def test_mnist_download_end_to_end(tmp_path, monkeypatch):
    """Synthetic MNIST-format files served from a file:// mirror, checked with their own checksums."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28))
    labels = np.array([3, 1, 4, 1, 5, 9])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    specs = []
    for name, arr in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        blob = _idx(arr)
        (mirror / name).write_bytes(blob)
        specs.append(_spec_for(blob, f"mnist/{name}", urls=((mirror / name).as_uri(),)))
    monkeypatch.setitem(DATASETS.get("mnist").files, "test", tuple(specs))
    root = tmp_path / "data"
    ds = load_dataset("MNIST", split="test", data_dir=root)
    assert (root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes() == (mirror / specs[0].name).read_bytes()
    assert ds.x.shape == (6, 1, 28, 28) and ds.x.dtype.is_floating_point
    assert np.array_equal(ds.x.numpy()[:, 0] * 255, images.astype(np.float32))  # k/255*255 rounds back exactly
    assert ds.y.tolist() == labels.tolist()
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    # the mirror disappears: the files are already there and verified
    for f in mirror.iterdir():
        f.unlink()
    assert load_dataset("mnist", split="test", data_dir=root, download=False).y.tolist() == labels.tolist()


def test_real_specs_refuse_a_wrong_local_file(tmp_path):
    """A file with an official name but other content is never used, whatever its format."""
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(np.zeros((2, 28, 28))))
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.zeros(2)))
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz: size is .* expected 1648877"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_missing_files_message_lists_every_file_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", split="train", data_dir=tmp_path, download=False)
    msg = str(err.value)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert str(tmp_path / "fashion-mnist" / name) in msg
        assert f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}" in msg
    assert "download=False" in msg and "ADVLAB_DATA" in msg
    lines = msg.splitlines()  # one line per missing file under a count
    assert (
        lines[0] == "2 dataset files are missing:"
        and len(lines) == 3
        and all(ln.startswith("  - ") for ln in lines[1:])
    )


def _install_fake_mnist(tmp_path: Path, monkeypatch, images_blob: bytes, labels_blob: bytes) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir(exist_ok=True)
    specs = []
    for name, blob in (("t10k-images-idx3-ubyte.gz", images_blob), ("t10k-labels-idx1-ubyte.gz", labels_blob)):
        (folder / name).write_bytes(blob)
        specs.append(_spec_for(blob, f"mnist/{name}"))
    monkeypatch.setitem(DATASETS.get("mnist").files, "test", tuple(specs))


def test_corrupt_files_are_named(tmp_path, monkeypatch):
    """Files whose checksum matches their spec but whose content is wrong: each error names the file."""
    images, labels = _idx(np.zeros((3, 28, 28))), _idx(np.array([1, 2, 3]))
    _install_fake_mnist(tmp_path, monkeypatch, labels, labels)  # a labels file where the images belong
    with pytest.raises(CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz: IDX header says 1 dimension"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    _install_fake_mnist(tmp_path, monkeypatch, images, _idx(np.array([1, 2])))
    with pytest.raises(CorruptFileError, match=r"holds 3 images but .*t10k-labels-idx1-ubyte\.gz holds 2 labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    _install_fake_mnist(tmp_path, monkeypatch, _idx(np.zeros((3, 8, 8))), labels)
    with pytest.raises(CorruptFileError, match=r"expected 28x28 images, got shape \(3, 8, 8\)"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    _install_fake_mnist(tmp_path, monkeypatch, images, _idx(np.array([1, 2, 12])))
    with pytest.raises(CorruptFileError, match=r"t10k-labels-idx1-ubyte\.gz: label 12 is outside 0\.\.9"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", 3, 28, 28) + bytes(100)
    _install_fake_mnist(tmp_path, monkeypatch, gzip.compress(raw), labels)
    with pytest.raises(CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz: truncated IDX file"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
