"""Dataset files on disk: checksum verification (cached), checksummed atomic download, and the errors for both.

A data file is described by a :class:`FileSpec` (its path inside the data directory, its size and its published
md5 and/or sha256, and the official URLs it can be fetched from). :func:`ensure_file` returns the verified path,
downloading it first when it is missing and downloads are allowed. A file whose checksum does not match is never
used: it raises :class:`ChecksumError`. Verification results are cached in memory and in a small ``.verified``
JSON sidecar keyed by the file's size, modification time and inode (next to the file when that folder is writable,
otherwise under the user cache directory), so repeated loads do not hash tens of megabytes again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from advlab import io
from advlab.data.paths import user_cache_dir

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds ``urllib`` waits for a mirror to answer (connect and each read) before trying the next one."""

_CHUNK_BYTES = 1 << 20
_VERIFIED: dict[tuple[str, tuple[int, int, int], str], bool] = {}
"""In-memory verification cache: (path, file_stamp, expected digest) -> True."""

urlopen: Callable[..., Any] = urllib.request.urlopen
"""The opener used for downloads; tests replace it (``monkeypatch.setattr``) to stay off the network."""


# ---------------------------------------------------------------------- errors
class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing and could not be downloaded; the message says which file to put where."""


class ChecksumError(ValueError):
    """A dataset file (on disk or just downloaded) does not match its published checksum."""


class CorruptFileError(ValueError):
    """A dataset file has the right name but cannot be decoded (bad magic number, truncated, wrong shape)."""


# ---------------------------------------------------------------------- file specs
@dataclass(frozen=True)
class FileSpec:
    """One official dataset file.

    Args:
        relpath: path inside the data directory, e.g. ``"mnist/t10k-images-idx3-ubyte.gz"``.
        size: size in bytes (``None`` when not published).
        md5: the official md5 hex digest, if published.
        sha256: the sha256 hex digest, if known.
        urls: official download URLs, tried in order.
        note: where the file comes from, in words (shown in error messages).
    """

    relpath: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    urls: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    def checksum(self) -> tuple[str, str] | None:
        """The strongest published checksum as ``(algorithm, hex digest)``, or ``None``."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None

    def describe(self) -> str:
        """Checksums in words, for messages."""
        parts = [f"{alg} {val}" for alg, val in (("sha256", self.sha256), ("md5", self.md5)) if val]
        if self.size is not None:
            parts.append(f"{self.size} bytes")
        return ", ".join(parts)


# ---------------------------------------------------------------------- hashing and verification
def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(size, mtime_ns, inode)``: changes whenever the file is rewritten or replaced (cache key)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar_candidates(path: Path) -> list[Path]:
    key = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:32]
    return [path.parent / f".{path.name}.verified", user_cache_dir() / "verified" / f"{key}.json"]


def _read_sidecar(path: Path, record: dict[str, Any]) -> bool:
    for side in _sidecar_candidates(path):
        try:
            if json.loads(side.read_text(encoding="utf-8")) == record:
                return True
        except (OSError, ValueError):
            continue
    return False


def _write_sidecar(path: Path, record: dict[str, Any]) -> None:
    for side in _sidecar_candidates(path):
        try:
            io.write_json(side, record)
            return
        except OSError as exc:  # read-only data folder: try the next place, or keep it in memory only
            log.debug("cannot write verification record %s: %s", side, exc)


def verify_file(path: str | os.PathLike[str], spec: FileSpec) -> Path:
    """Check ``path`` against ``spec``'s size and checksum, with caching; return the path.

    Raises:
        ChecksumError: when the size or checksum differs from the published one.
    """
    path = Path(path).resolve()
    stamp = file_stamp(path)
    if spec.size is not None and stamp[0] != spec.size:
        raise ChecksumError(
            f"{path}: size is {stamp[0]} bytes, expected {spec.size} ({spec.describe()}). The file is truncated, "
            f"corrupt or not the official one; delete it and fetch it again{_from_where(spec)}."
        )
    checksum = spec.checksum()
    if checksum is None:
        return path
    algorithm, expected = checksum
    key = (str(path), stamp, expected)
    if key in _VERIFIED:
        return path
    record = {"path": str(path), "size": stamp[0], "mtime_ns": stamp[1], "inode": stamp[2], algorithm: expected}
    if _read_sidecar(path, record):
        _VERIFIED[key] = True
        return path
    got = file_digest(path, algorithm)
    if got != expected:
        raise ChecksumError(
            f"{path}: {algorithm} is {got}, expected {expected} ({spec.describe()}). The file is corrupt or not the "
            f"official one and will not be used; delete it and fetch it again{_from_where(spec)}."
        )
    _VERIFIED[key] = True
    _write_sidecar(path, record)
    return path


def _from_where(spec: FileSpec) -> str:
    return f" from {spec.urls[0]}" if spec.urls else ""


# ---------------------------------------------------------------------- download
def _copy_checked(src: BinaryIO, tmp: str, spec: FileSpec, url: str) -> None:
    from tqdm.auto import tqdm

    hashers = {alg: hashlib.new(alg) for alg, val in (("sha256", spec.sha256), ("md5", spec.md5)) if val}
    size = 0
    bar = tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name, disable=not sys.stderr.isatty())
    with open(tmp, "wb") as out, bar:
        for chunk in iter(lambda: src.read(_CHUNK_BYTES), b""):
            out.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
            for h in hashers.values():
                h.update(chunk)
    if spec.size is not None and size != spec.size:
        raise ChecksumError(f"{url}: got {size} bytes, expected {spec.size} ({spec.describe()})")
    for alg, h in hashers.items():
        expected = getattr(spec, alg).lower()
        if h.hexdigest() != expected:
            raise ChecksumError(f"{url}: {alg} of the download is {h.hexdigest()}, expected {expected}")


def download_file(spec: FileSpec, dest: str | os.PathLike[str], *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``spec`` from its URLs (in order) to ``dest``, verifying the checksum before the file appears.

    A progress bar shows on a terminal (never when stderr is redirected). The bytes go to a temporary file in
    ``dest``'s folder and are renamed into place only after the size and
    checksum match (:func:`advlab.io.atomic_write`), so an interrupted or wrong download never leaves a file.

    Raises:
        ChecksumError: when every mirror failed and at least one served bytes with the wrong checksum.
        DatasetNotFoundError: when no mirror could be reached.
    """
    dest = Path(dest)
    errors: list[str] = []
    bad_checksum = False
    for url in spec.urls:
        log.info("downloading %s -> %s", url, dest)
        try:
            with urlopen(url, timeout=timeout) as response:
                io.atomic_write(dest, lambda tmp: _copy_checked(response, tmp, spec, url))  # noqa: B023 - called within this iteration
        except ChecksumError as exc:
            bad_checksum = True
            errors.append(str(exc))
            continue
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            errors.append(f"{url}: {exc}")
            continue
        checksum = spec.checksum()
        if checksum is not None:
            _VERIFIED[(str(dest.resolve()), file_stamp(dest), checksum[1])] = True
        return dest
    tried = "; ".join(errors) if errors else "no download URL is known for this file"
    if bad_checksum:
        raise ChecksumError(
            f"{dest}: the download did not match the published checksum ({spec.describe()}), so nothing was "
            f"written. Tried: {tried}"
        )
    raise DatasetNotFoundError(f"{dest}: download failed. Tried: {tried}")


def missing_message(path: Path, spec: FileSpec, reason: str, alternatives: Sequence[str] = ()) -> str:
    """The message for a missing file: which file, where to put it and where it comes from."""
    source = f" from {' or '.join(spec.urls)}" if spec.urls else ""
    check = f" ({spec.describe()})" if spec.describe() else ""
    note = f" {spec.note}" if spec.note else ""
    alt = "".join(f" {a}" for a in alternatives)
    return (
        f"{path} is missing ({reason}). Download {spec.name}{source}{check} and save it as {path}, or point "
        f"--data-dir / the ADVLAB_DATA environment variable at a folder that holds {spec.relpath}.{note}{alt}"
    )


def ensure_file(
    root: Path, spec: FileSpec, *, download: bool, alternatives: Sequence[str] = (), timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Return the verified path of ``spec`` under ``root``, downloading it first when missing and allowed.

    Raises:
        DatasetNotFoundError: the file is missing and ``download`` is False or the download failed.
        ChecksumError: the file on disk (or the download) does not match its published checksum.
    """
    path = root / spec.relpath
    if not path.is_file():
        if not download:
            raise DatasetNotFoundError(missing_message(path, spec, "download=False", alternatives))
        if not spec.urls:
            raise DatasetNotFoundError(missing_message(path, spec, "it cannot be downloaded", alternatives))
        try:
            download_file(spec, path, timeout=timeout)
        except DatasetNotFoundError as exc:
            reason = str(exc).removeprefix(f"{path}: ")  # the message names the path already
            raise DatasetNotFoundError(missing_message(path, spec, reason, alternatives)) from exc
    return verify_file(path, spec)


def ensure_files(
    root: Path, specs: Sequence[FileSpec], *, download: bool, alternatives: Sequence[str] = ()
) -> list[Path]:
    """:func:`ensure_file` for several files; when some are missing, one error lists every missing one, a line each."""
    paths: list[Path] = []
    missing: list[str] = []
    for spec in specs:
        try:
            paths.append(ensure_file(root, spec, download=download))
        except DatasetNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        alt = " ".join(alternatives)
        if len(missing) == 1:
            raise DatasetNotFoundError(f"{missing[0]} {alt}".rstrip())
        items = "".join(f"\n  - {m}" for m in missing)
        raise DatasetNotFoundError(f"{len(missing)} dataset files are missing:{items}" + (f"\n{alt}" if alt else ""))
    return paths
