"""Words to ids: the tokeniser, the vocabulary (``<pad>`` 0, ``<unk>`` 1, a minimum count) and the fixed split.

Sentences become rows of a padded id matrix. The ids are stored as **float32** (exact below 2**24): advlab's trainer
and its input checks take floating inputs in a box, so a sentence matrix is an input in the box
``(0, len(vocabulary) - 1)`` like an image is one in ``(0, 1)``; the text classifier rounds them back to ids.

Examples:
    >>> vocab = Vocabulary.build(["a good film", "a bad film"], min_count=1)
    >>> vocab.encode(["a good film"]).tolist()
    [[2.0, 5.0, 3.0]]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
MAX_EXACT_ID = 2**24
"""float32 holds every integer up to this exactly: the largest vocabulary a float id matrix can carry."""


def tokenize(sentence: str) -> list[str]:
    """Lower-case and split on white space (the sentence polarity files are tokenised this way already).

    Args:
        sentence: one sentence.

    Returns:
        Its tokens.

    Raises:
        TypeError: ``sentence`` is not a string.

    Examples:
        >>> tokenize("A  Good film .")
        ['a', 'good', 'film', '.']
    """
    if not isinstance(sentence, str):
        raise TypeError(f"sentence: expected a string, got {type(sentence).__name__}")
    return sentence.lower().split()


@dataclass(frozen=True)
class Vocabulary:
    """The words a text model knows, by id, with their training-set counts.

    Ids 0 and 1 are ``<pad>`` and ``<unk>``; the other words follow by decreasing count (ties alphabetically), so
    a vocabulary built from the same sentences is always the same.

    Args:
        words: every word, ``words[i]`` has id ``i`` (``words[0] == "<pad>"``, ``words[1] == "<unk>"``).
        counts: each word's count in the sentences it was built from (``<unk>``: the tokens it replaced; ``<pad>``:
            0).
        min_count: the minimum count a word needed to be kept.
    """

    words: tuple[str, ...]
    counts: tuple[int, ...]
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.words[:2] != (PAD, UNK):
            raise ValueError(f"words: expected {PAD!r} and {UNK!r} first, got {self.words[:2]}")
        if len(self.counts) != len(self.words):
            raise ValueError(f"counts: expected {len(self.words)} counts (one per word), got {len(self.counts)}")
        if len(self.words) > MAX_EXACT_ID:
            raise ValueError(f"words: at most {MAX_EXACT_ID} words fit float32 ids, got {len(self.words)}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, sentences: Iterable[str], *, min_count: int = 1) -> Vocabulary:
        """The vocabulary of ``sentences``: every word seen at least ``min_count`` times.

        Args:
            sentences: the training sentences.
            min_count: words seen fewer times become ``<unk>``.

        Returns:
            The vocabulary.

        Raises:
            ValueError: ``min_count`` below 1, or no sentence.

        Examples:
            >>> len(Vocabulary.build(["a b", "a c"], min_count=2))
            3
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count: expected an integer >= 1, got {min_count!r}")
        counter: Counter[str] = Counter()
        n = 0
        for sentence in sentences:
            counter.update(tokenize(sentence))
            n += 1
        if n == 0:
            raise ValueError("sentences: got none; a vocabulary needs at least one training sentence")
        kept = sorted(
            (w for w, c in counter.items() if c >= min_count and w not in (PAD, UNK)), key=lambda w: (-counter[w], w)
        )
        unknown = sum(c for w, c in counter.items() if c < min_count or w in (PAD, UNK))
        return cls((PAD, UNK, *kept), (0, unknown, *(counter[w] for w in kept)), min_count)

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        """The id of ``word`` (``<unk>``'s for a word not in the vocabulary)."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return index.get(word, UNK_ID)

    def frequencies(self) -> torch.Tensor:
        """Each word's share of the counted tokens (``<pad>`` 0), the weights of the embedding normalisation."""
        counts = torch.tensor(self.counts, dtype=torch.float64)
        return (counts / counts.sum().clamp_min(1)).float()

    def encode(self, sentences: Sequence[str], *, max_length: int | None = None, strict: bool = False) -> torch.Tensor:
        """A float32 ``(N, T)`` matrix of word ids, right-padded with ``<pad>`` (0), cut at ``max_length`` tokens.

        Args:
            sentences: the sentences.
            max_length: keep at most this many tokens of each (``None``: all); ``T`` is the longest kept length.
            strict: refuse a sentence whose words are all unknown (for sentences a user asks about; training data
                may hold some).

        Returns:
            The id matrix (float32; see the module docstring).

        Raises:
            ValueError: no sentence, an empty sentence, or (``strict``) a sentence of unknown words only.
            TypeError: a sentence that is not a string.

        Examples:
            >>> vocab.encode(["a good film", "bad"], max_length=2).shape
            torch.Size([2, 2])
        """
        if isinstance(sentences, str):
            raise TypeError("sentences: expected a list of sentences, got one string; wrap it in a list")
        if len(sentences) == 0:
            raise ValueError("sentences: got an empty list; pass at least one sentence")
        rows = [self._ids(i, s, strict)[:max_length] for i, s in enumerate(sentences)]
        out = torch.full((len(rows), max(len(r) for r in rows)), float(PAD_ID))
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return out

    def _ids(self, i: int, sentence: str, strict: bool) -> list[int]:
        tokens = tokenize(sentence)
        if not tokens:
            raise ValueError(f"sentences[{i}]: the text is empty; remove it or give at least one word")
        ids = [self.id(t) for t in tokens]
        if strict and all(t == UNK_ID for t in ids):
            raise ValueError(
                f"sentences[{i}]: none of its words ({' '.join(tokens[:8])}) is in the model's vocabulary of "
                f"{len(self)} words, so it would be classified from '<unk>' alone; use words from the training "
                "data or retrain with a lower min_count"
            )
        return ids

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The words of one row of ids, padding left out."""
        return [self.words[int(i)] for i in ids.round().long().tolist() if int(i) != PAD_ID]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (see :meth:`from_dict`)."""
        return {"words": list(self.words), "counts": list(self.counts), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        """The vocabulary :meth:`to_dict` wrote.

        Args:
            data: ``{"words": [...], "counts": [...], "min_count": k}``.

        Returns:
            The vocabulary.

        Raises:
            ValueError: a malformed record.

        Examples:
            >>> Vocabulary.from_dict(vocab.to_dict()) == vocab
            True
        """
        try:
            return cls(tuple(data["words"]), tuple(int(c) for c in data["counts"]), int(data.get("min_count", 1)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"vocabulary: expected {{'words': [...], 'counts': [...]}}, got {exc!r}") from exc


def fixed_split(n: int, *, test_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a seeded random train/test split of ``n`` examples (sorted within each part).

    Args:
        n: number of examples.
        test_fraction: share of them in the test part (rounded; at least one in each part).
        seed: seeds the permutation (``torch.Generator``), so the split is the same on every machine.

    Returns:
        ``(train_indices, test_indices)``.

    Raises:
        ValueError: fewer than 2 examples or a fraction outside (0, 1).

    Examples:
        >>> train, test = fixed_split(10662, test_fraction=0.1, seed=0)
        >>> len(train), len(test)
        (9596, 1066)
    """
    if n < 2:
        raise ValueError(f"n: a split needs at least 2 examples, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction}")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:].sort().values, order[:n_test].sort().values
