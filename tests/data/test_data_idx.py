"""IDX decoding checked against an independent struct-based encoder, and every header/size error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from advlab.data import CorruptFileError
from advlab.data.idx import parse_idx, read_idx


def encode_idx(values: list, shape: tuple[int, ...], code: int = 0x08, fmt: str = "B") -> bytes:
    """An independent IDX writer: magic (0, 0, type, ndim), big-endian uint32 sizes, big-endian values."""
    header = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def test_uint8_images_and_labels_roundtrip():
    pixels = [(7 * i + 3) % 256 for i in range(2 * 3 * 4)]
    data = encode_idx(pixels, (2, 3, 4))
    assert data[:4] == b"\x00\x00\x08\x03"
    arr = parse_idx(data, ndim=3)
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
    # row-major: element [n, r, c] is value number n*12 + r*4 + c
    assert arr[1, 2, 3] == pixels[1 * 12 + 2 * 4 + 3]
    assert arr.ravel().tolist() == pixels
    labels = parse_idx(encode_idx([5, 0, 9], (3,)), ndim=1)
    assert labels.tolist() == [5, 0, 9]


@pytest.mark.parametrize(
    "code,fmt,dtype",
    [
        (0x0B, "h", np.int16),
        (0x0C, "i", np.int32),
        (0x0D, "f", np.float32),
        (0x0E, "d", np.float64),
        (0x09, "b", np.int8),
    ],
)
def test_multibyte_types_are_big_endian(code, fmt, dtype):
    values = [-3, 1, 100, -100, 7, 0] if fmt != "f" and fmt != "d" else [1.5, -2.25, 0.0, 3.0, 8.5, -1.0]
    arr = parse_idx(encode_idx(values, (2, 3), code, fmt))
    assert arr.shape == (2, 3)
    assert np.array_equal(arr.astype(dtype).ravel(), np.array(values, dtype=dtype))


def test_read_idx_gz_and_plain(tmp_path):
    data = encode_idx(list(range(24)), (2, 3, 4))
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(data))
    plain = tmp_path / "x-idx3-ubyte"
    plain.write_bytes(data)
    assert np.array_equal(read_idx(gz, ndim=3), read_idx(plain, ndim=3))
    assert read_idx(gz).ravel().tolist() == list(range(24))


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad IDX magic number 0x01000801"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad IDX magic number 0x00000701"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01", "truncated IDX header"),
    ],
)
def test_bad_headers(data, match):
    with pytest.raises(CorruptFileError, match=match):
        parse_idx(data, source="some/file")


def test_wrong_rank_names_expected_magic():
    labels = encode_idx([1, 2, 3], (3,))
    with pytest.raises(CorruptFileError, match=r"expected 3 .*0x00000803"):
        parse_idx(labels, source="labels-as-images", ndim=3)


def test_truncated_and_oversized_data_named(tmp_path):
    data = encode_idx(list(range(24)), (2, 3, 4))
    short = tmp_path / "short-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(CorruptFileError, match=r"short-idx3-ubyte\.gz: truncated IDX file.*\(2, 3, 4\).*19"):
        read_idx(short)
    with pytest.raises(CorruptFileError, match="3 unexpected bytes"):
        parse_idx(data + b"abc")


def test_broken_gzip_stream_named(tmp_path):
    blob = gzip.compress(encode_idx(list(range(200)), (200,)))
    cut = tmp_path / "cut-idx1-ubyte.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"cut-idx1-ubyte\.gz: the gzip stream is corrupt or truncated"):
        read_idx(cut)
    fake = tmp_path / "fake-idx1-ubyte.gz"
    fake.write_bytes(encode_idx([1], (1,)))
    with pytest.raises(CorruptFileError, match="not a gzip file"):
        read_idx(fake)
