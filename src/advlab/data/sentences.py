"""Labelled sentences from a user's text file: one ``LABEL<TAB>SENTENCE`` a line (UTF-8), labels ``0 .. K-1``.

Examples:
    >>> sentences, labels = load_sentences_file("reviews.tsv")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def load_sentences_file(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> tuple[list[str], np.ndarray]:
    """The sentences and integer labels of a ``LABEL<TAB>SENTENCE`` file (blank lines skipped).

    Args:
        path: the file.
        encoding: its text encoding.

    Returns:
        ``(sentences, labels)`` with labels an int64 array.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line without a tab, a label that is not a non-negative integer, an empty sentence, a file
            without sentences or with one class only; the message names the line and the fix.

    Examples:
        >>> load_sentences_file("reviews.tsv")[0][:2]
        ['a gripping film .', 'dull and long .']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give rt-polarity or a LABEL<TAB>SENTENCE text file")
    sentences: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, sentence = line.partition("\t")
        where = f"{path}, line {number}"
        if not tab:
            raise ValueError(f"{where}: expected LABEL<TAB>SENTENCE, found no tab; separate the label with a tab")
        if not label.strip().isdigit():
            raise ValueError(f"{where}: the label {label!r} is not a class number 0, 1, ...; write integer labels")
        if not sentence.strip():
            raise ValueError(f"{where}: the sentence is empty; remove the line or give the text")
        sentences.append(sentence.strip())
        labels.append(int(label))
    if len(set(labels)) < 2:
        raise ValueError(f"{path}: expected sentences of at least two classes, got {len(sentences)} of {set(labels)}")
    return sentences, np.asarray(labels, dtype=np.int64)
