"""The sentence polarity dataset v1.0 ("MR", "Rotten Tomatoes"): 5331 positive and 5331 negative movie-review
sentences, found, checksum-verified (downloaded when allowed) and decoded.

Source:
    B. Pang and L. Lee, "Seeing stars: Exploiting class relationships for sentiment categorization with respect to
    rating scales", ACL 2005 (distributed by the authors for research use). The two files are the authors'
    ``rt-polarity.pos`` / ``rt-polarity.neg``: one sentence a line, Windows-1252 (cp1252) bytes, already
    lower-cased and tokenised with spaces. They are read from ``DATA_DIR/rt-polarity/``; when missing they are
    fetched from the copy in the public repository ``yoonkim/CNN_sentence`` (Kim 2014) and checked against the
    sha256 below before they are written. There is no official train/test split (papers use 10-fold
    cross-validation or a fixed seeded split).

Examples:
    >>> sentences, labels = load_rt_polarity("/work/shared/data", download=False)
    >>> len(sentences), int(labels.sum())
    (10662, 5331)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from advlab.data._files import CorruptFileError, FileSpec, ensure_files, file_stamp
from advlab.data.paths import resolve_data_dir

FOLDER = "rt-polarity"
ENCODING = "cp1252"
"""The files' encoding (Windows-1252: a few lines hold accented letters and ``\\x97`` dashes)."""
SENTENCES_PER_CLASS = 5331
CLASSES = ("negative", "positive")
"""Label 0 is negative (``rt-polarity.neg``), 1 positive (``rt-polarity.pos``)."""
MIRROR = "https://raw.githubusercontent.com/yoonkim/CNN_sentence/master/"

SPECS = (
    FileSpec(
        f"{FOLDER}/rt-polarity.neg",
        612256,
        "1e35b7f7c5df24a135ca62b8eecded53",
        "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
        (MIRROR + "rt-polarity.neg",),
        "The original archive is rt-polaritydata.tar.gz at https://www.cs.cornell.edu/people/pabo/movie-review-data/.",
    ),
    FileSpec(
        f"{FOLDER}/rt-polarity.pos",
        626139,
        "afcc7ff580b3b4df4bdb6528e6558ab5",
        "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0",
        (MIRROR + "rt-polarity.pos",),
        "The original archive is rt-polaritydata.tar.gz at https://www.cs.cornell.edu/people/pabo/movie-review-data/.",
    ),
)
"""The two files (negative first: label order), with the published size, md5 and sha256."""


@functools.lru_cache(maxsize=2)
def _read_lines(path: str, _stamp: tuple[int, int, int]) -> tuple[str, ...]:
    """The non-empty lines of ``path``, decoded as cp1252 and stripped (cached per process and file stamp)."""
    try:
        text = Path(path).read_bytes().decode(ENCODING)
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{path}: not {ENCODING} text ({exc}); fetch the file again") from exc
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(lines) != SENTENCES_PER_CLASS:
        raise CorruptFileError(f"{path}: expected {SENTENCES_PER_CLASS} sentences, got {len(lines)}")
    return lines


def load_rt_polarity(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[list[str], np.ndarray]:
    """All 10662 sentences and their labels (0 negative, 1 positive), negatives first, in file order.

    Args:
        data_dir: folder holding ``rt-polarity/``; default ``$ADVLAB_DATA``, then the user cache.
        download: fetch missing files (checksum-verified) when True.

    Returns:
        ``(sentences, labels)``: the sentences as lower-cased, space-tokenised strings, labels an int64 array.

    Raises:
        DatasetNotFoundError: a file is missing and cannot be downloaded (the message says what to put where).
        ChecksumError: a file does not match its published checksum.
        CorruptFileError: a file cannot be decoded or holds the wrong number of sentences.

    Examples:
        >>> sentences, labels = load_rt_polarity(download=False)
        >>> sentences[0].split()[:3], int(labels[0])
        (['simplistic', ',', 'silly'], 0)
    """
    root = resolve_data_dir(data_dir)
    paths = ensure_files(root, SPECS, download=download)
    sentences: list[str] = []
    labels: list[int] = []
    for label, path in enumerate(paths):
        lines = _read_lines(str(path), file_stamp(path))
        sentences.extend(lines)
        labels.extend([label] * len(lines))
    return sentences, np.asarray(labels, dtype=np.int64)
