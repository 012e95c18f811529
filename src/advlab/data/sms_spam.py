"""The SMS Spam Collection v.1 (Almeida, Gómez Hidalgo & Yamakami 2011) as a text corpus, and seeded stratified splits.

Text is not an image: the ``DATASETS`` registry describes fixed-shape float inputs with a per-channel mean and std
(``DatasetInfo.input_shape``), which a list of messages has none of. Text corpora therefore have their own small
API here: :class:`TextCorpus` (messages, 0/1 labels, class names), :func:`load_sms_spam` (found in the data
directory like the image datasets: ``data_dir`` > ``$ADVLAB_DATA`` > user cache, checked against the published
sha256, downloaded from UCI when missing and allowed), :func:`parse_labelled_lines` (the ``label<TAB>message``
format, for inline corpora) and :func:`stratified_split` (a seeded split whose indices are recorded).

Source: T. A. Almeida, J. M. Gómez Hidalgo, A. Yamakami, "Contributions to the Study of SMS Spam Filtering: New
Collection and Results", DocEng 2011. 5574 messages (4827 ham, 747 spam), CC BY 4.0, from the UCI Machine Learning
Repository (https://archive.ics.uci.edu/dataset/228/sms+spam+collection).
"""

from __future__ import annotations

import hashlib
import http.client
import io as stdio
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advlab import io, validation
from advlab.data._files import (
    ChecksumError,
    CorruptFileError,
    DatasetNotFoundError,
    FileSpec,
    missing_message,
    verify_file,
)
from advlab.data.paths import resolve_data_dir

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
"""The UCI archive; the file is its member ``SMSSpamCollection``."""

SMS_SPAM_FILE = FileSpec(
    "sms-spam/SMSSpamCollection",
    477907,
    "1949b64a224790d01335c2bf8a0e48b2",
    "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
    (SMS_SPAM_URL,),
    note="(the member SMSSpamCollection of the UCI zip archive)",
)
"""The one file of the corpus: ``label<TAB>message`` per line, UTF-8."""

SMS_CLASSES = ("ham", "spam")
"""Class names in label order: 0 = ham, 1 = spam."""

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds to wait for the UCI server before giving up."""


@dataclass(frozen=True)
class TextCorpus:
    """Labelled messages.

    Attributes:
        texts: the messages, in file order.
        labels: int64 labels, shape ``(len(texts),)``, indexing ``classes``.
        classes: class names in label order.
        name: corpus name.
        source: where the messages came from (a path, or ``"inline"``).
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...] = SMS_CLASSES
    name: str = "sms-spam"
    source: str = "inline"

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> TextCorpus:
        """The messages at ``rows`` (an index array), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return TextCorpus(
            tuple(self.texts[i] for i in rows), self.labels[rows].copy(), self.classes, self.name, self.source
        )

    def counts(self) -> dict[str, int]:
        """Messages per class name."""
        return {c: int((self.labels == k).sum()) for k, c in enumerate(self.classes)}


@dataclass(frozen=True)
class TextSplit:
    """A seeded stratified train/test split; ``train_rows``/``test_rows`` index the full corpus (the record)."""

    train: TextCorpus
    test: TextCorpus
    train_rows: np.ndarray
    test_rows: np.ndarray
    seed: int
    test_fraction: float

    def manifest(self) -> dict[str, Any]:
        """The split as JSON-ready facts: seed, fraction, class counts and a sha256 of the test row indices."""
        digest = hashlib.sha256(np.sort(self.test_rows).astype("<i8").tobytes()).hexdigest()
        return {
            "corpus": self.train.name,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "train": self.train.counts(),
            "test": self.test.counts(),
            "test_rows_sha256": digest,
        }


def parse_labelled_lines(text: str, classes: tuple[str, ...] = SMS_CLASSES, source: str = "inline") -> TextCorpus:
    """Parse ``label<TAB>message`` lines (the SMS Spam Collection format) into a :class:`TextCorpus`.

    Args:
        text: the whole file's text; blank lines are skipped.
        classes: the label names, in label order.
        source: where the text came from, for messages and the record.

    Returns:
        The corpus.

    Raises:
        CorruptFileError: a line without a tab, an unknown label, or an empty message (names the line).

    Examples:
        >>> c = parse_labelled_lines("ham\\tsee you at 5\\nspam\\tWIN a FREE prize now")
        >>> c.labels.tolist(), c.texts[1]
        ([0, 1], 'WIN a FREE prize now')
    """
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, message = line.partition("\t")
        if not tab or label not in classes or not message.strip():
            raise CorruptFileError(
                f"{source}, line {number}: expected '<{'|'.join(classes)}><TAB><message>', got {line[:60]!r}"
            )
        texts.append(message)
        labels.append(classes.index(label))
    return TextCorpus(tuple(texts), np.asarray(labels, dtype=np.int64), classes, "sms-spam", source)


def download_sms_spam(dest: str | os.PathLike[str], *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch the UCI zip, check its ``SMSSpamCollection`` member against the published size and sha256, write it.

    The file appears at ``dest`` only after the checks pass (atomic rename); nothing is written otherwise.

    Args:
        dest: where to save the file.
        timeout: seconds to wait for the server.

    Returns:
        ``dest`` as a path.

    Raises:
        DatasetNotFoundError: the server could not be reached (offline) or the archive lacks the member.
        ChecksumError: the member does not match the published sha256.
    """
    dest = Path(dest)
    try:
        with urllib.request.urlopen(SMS_SPAM_URL, timeout=timeout) as response:
            archive = response.read()
        data = zipfile.ZipFile(stdio.BytesIO(archive)).read("SMSSpamCollection")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, http.client.HTTPException) as exc:
        raise DatasetNotFoundError(f"{dest}: download from {SMS_SPAM_URL} failed: {exc}") from exc
    got = hashlib.sha256(data).hexdigest()
    if got != SMS_SPAM_FILE.sha256:
        raise ChecksumError(f"{SMS_SPAM_URL}: SMSSpamCollection has sha256 {got}, expected {SMS_SPAM_FILE.sha256}")
    return io.write_bytes(dest, data)


def load_sms_spam(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> TextCorpus:
    """Load the SMS Spam Collection (5574 messages, 0 = ham, 1 = spam) from ``DIR/sms-spam/SMSSpamCollection``.

    Args:
        data_dir: folder holding ``sms-spam/``; default ``$ADVLAB_DATA``, then the user cache.
        download: fetch the file from UCI when it is missing (checksum-verified).

    Returns:
        The corpus, in file order.

    Raises:
        DatasetNotFoundError: the file is missing and cannot be downloaded (says where to put it).
        ChecksumError: the file is not the published one.

    Examples:
        >>> corpus = load_sms_spam("/work/shared/data")
        >>> len(corpus), corpus.counts()
        (5574, {'ham': 4827, 'spam': 747})
    """
    path = resolve_data_dir(data_dir) / SMS_SPAM_FILE.relpath
    if not path.is_file():
        if not download:
            raise DatasetNotFoundError(missing_message(path, SMS_SPAM_FILE, "download=False"))
        try:
            download_sms_spam(path)
        except DatasetNotFoundError as exc:
            raise DatasetNotFoundError(
                missing_message(path, SMS_SPAM_FILE, str(exc).removeprefix(f"{path}: "))
            ) from exc
    verify_file(path, SMS_SPAM_FILE)
    return parse_labelled_lines(path.read_text(encoding="utf-8"), source=str(path))


def stratified_split(corpus: TextCorpus, test_fraction: float = 0.25, seed: int = 0) -> TextSplit:
    """Split ``corpus`` into train and test with the same class shares, reproducibly from ``seed``.

    Each class's rows are permuted by ``numpy.random.default_rng(seed)`` (classes in label order) and the first
    ``round(test_fraction * class size)`` go to test; both parts keep file order.

    Args:
        corpus: the messages.
        test_fraction: share of each class held out, in (0, 1).
        seed: the split's seed.

    Returns:
        The split, with its row indices (see :meth:`TextSplit.manifest`).

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), or a class too small to appear on both sides.

    Examples:
        >>> c = parse_labelled_lines("ham\\ta b\\nham\\tc d\\nspam\\te f\\nspam\\tg h")
        >>> s = stratified_split(c, 0.5, seed=0)
        >>> len(s.train), len(s.test)
        (2, 2)
    """
    fraction = validation.check_float("test_fraction", test_fraction, minimum=0.0, maximum=1.0)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction: expected a share strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for k, name in enumerate(corpus.classes):
        rows = np.flatnonzero(corpus.labels == k)
        n_test = round(fraction * rows.size)
        if rows.size and not 0 < n_test < rows.size:
            raise ValueError(
                f"test_fraction: class {name!r} has {rows.size} messages, too few to split {fraction:g} of them; "
                "use a larger corpus or a test_fraction nearer 0.5"
            )
        test.append(rng.permutation(rows)[:n_test])
    test_rows = np.sort(np.concatenate(test)).astype(np.int64)
    train_rows = np.setdiff1d(np.arange(len(corpus)), test_rows).astype(np.int64)
    return TextSplit(corpus.subset(train_rows), corpus.subset(test_rows), train_rows, test_rows, int(seed), fraction)
