"""The IDX file format of MNIST and Fashion-MNIST: header checks and decoding to numpy arrays.

An IDX file starts with two zero bytes, a type byte (0x08 = unsigned byte, ...), a byte giving the number of
dimensions, then one big-endian uint32 per dimension, then the data in row-major order. The official files are
gzip-compressed. Format described at http://yann.lecun.com/exdb/mnist/ (LeCun et al., 1998).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from advlab.data._files import CorruptFileError

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type byte -> numpy dtype (multi-byte types are big-endian)."""


def parse_idx(data: bytes, *, source: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decode uncompressed IDX bytes to a numpy array (a read-only view of ``data`` for uint8 files).

    Args:
        data: the whole uncompressed file.
        source: file name used in error messages.
        ndim: expected number of dimensions (3 for images, 1 for labels), or ``None`` for any.

    Returns:
        An array of the header's shape and dtype.

    Raises:
        CorruptFileError: bad magic number, unknown type, unexpected rank, truncated or oversized data.

    Examples:
        >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
        array([7, 9], dtype=uint8)
    """
    if len(data) < 4:
        raise CorruptFileError(f"{source}: only {len(data)} bytes, too short for an IDX header (4 bytes at least)")
    zero0, zero1, type_code, rank = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0 or type_code not in _TYPES:
        raise CorruptFileError(
            f"{source}: bad IDX magic number 0x{magic:08X}; an IDX file starts with 0x0000 then a type byte "
            f"(0x08 for unsigned bytes: images 0x00000803, labels 0x00000801). The file is corrupt, not an IDX "
            f"file, or still compressed."
        )
    if ndim is not None and rank != ndim:
        raise CorruptFileError(
            f"{source}: IDX header says {rank} dimension(s) (magic 0x{magic:08X}), expected {ndim} "
            f"(magic 0x{(type_code << 8) | ndim:08X}); is this the right file (images vs labels)?"
        )
    header = 4 + 4 * rank
    if len(data) < header:
        raise CorruptFileError(f"{source}: truncated IDX header ({len(data)} bytes, the header needs {header})")
    shape = struct.unpack(f">{rank}I", data[4:header])
    dtype = _TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise CorruptFileError(
            f"{source}: truncated IDX file: the header promises shape {shape} ({expected} data bytes) but only "
            f"{got} follow. Delete the file and fetch it again."
        )
    if got > expected:
        raise CorruptFileError(
            f"{source}: {got - expected} unexpected bytes after the data of shape {shape}; the file is corrupt"
        )
    return np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``, as distributed) or not.

    Raises:
        CorruptFileError: the gzip stream is broken or truncated, or the IDX content is invalid.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError(
                f"{path}: the gzip stream is corrupt or truncated ({exc}); delete the file and fetch it again"
            ) from exc
    elif path.suffix == ".gz":
        raise CorruptFileError(f"{path}: not a gzip file (it lacks the gzip magic bytes 1f 8b); the file is corrupt")
    return parse_idx(raw, source=str(path), ndim=ndim)
