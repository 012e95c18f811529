"""Binary bag-of-words features and the text edits behind them: adding a word, deleting it, or obfuscating it.

A message is the set of vocabulary words it contains (scikit-learn's ``CountVectorizer(binary=True)``: lower-cased
tokens of two or more word characters). An attack changes that set: it adds a word (0 -> 1) or takes one out
(1 -> 0). Taking a word out can be done by deleting it or by *obfuscating* it, a misspelling that keeps the message
readable but maps the token outside the vocabulary (``free`` -> ``fr3e``), which is what spammers do
(Dalvi et al. 2004's example: ``FREE`` -> ``FR33``). :func:`apply_edits` writes the attacked text; vectorising it
again gives exactly the attacked feature vector, which the tests check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

LOOKALIKES = {"e": "3", "a": "4", "o": "0", "i": "1", "s": "5", "t": "7", "l": "1", "g": "9", "b": "8"}
"""Letter -> look-alike digit used by :func:`obfuscate` (digits are word characters, so the token stays whole)."""

EDIT_MODES = ("obfuscate", "delete")
"""How :func:`apply_edits` takes a word out of a message."""


class BagOfWords:
    """Binary word-presence features over a vocabulary learned from training messages.

    Args:
        min_df: keep words that occur in at least this many training messages.
        max_features: keep at most this many words (the most frequent); ``None`` keeps all.

    Examples:
        >>> bow = BagOfWords(min_df=1).fit(["win a free prize", "see you at five"])
        >>> bow.transform(["free prize"]).toarray().tolist()
        [[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, min_df: int = 2, max_features: int | None = None) -> None:
        self.min_df = min_df
        self.max_features = max_features
        self.vectorizer_ = CountVectorizer(binary=True, lowercase=True, min_df=min_df, max_features=max_features)

    def fit(self, texts: Sequence[str]) -> BagOfWords:
        """Learn the vocabulary from ``texts``; returns self."""
        check_texts("texts", texts)
        self.vectorizer_.fit(list(texts))
        self.words_ = np.asarray(self.vectorizer_.get_feature_names_out(), dtype=object)
        self.index_ = {str(w): i for i, w in enumerate(self.words_)}
        return self

    @property
    def size(self) -> int:
        """Number of words in the vocabulary."""
        return len(self.words_)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """0/1 float32 features, one row per message (sparse CSR)."""
        check_texts("texts", texts)
        return sp.csr_matrix(self.vectorizer_.transform(list(texts)), dtype=np.float32)

    def tokens(self, text: str) -> list[str]:
        """The message's tokens as the vectorizer sees them (lower-cased, in order, repeats kept)."""
        return list(self.vectorizer_.build_analyzer()(text))


def check_texts(name: str, texts: Sequence[str]) -> None:
    """Raise a one-line ``ValueError``/``TypeError`` unless ``texts`` is a non-empty list of non-empty strings.

    Args:
        name: the argument's name, for the message.
        texts: the messages.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name}: expected a list of messages (strings), got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name}: got no messages; pass at least one non-empty message")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}]: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{name}[{i}]: the message is empty; give it some text or leave it out")


def obfuscate(word: str, vocabulary: Iterable[str] | dict[str, int] = ()) -> str:
    """A readable misspelling of ``word`` that is not in ``vocabulary`` (``free`` -> ``fr3e``).

    Letters are swapped for look-alike digits (:data:`LOOKALIKES`) from the second letter on, one more at a time,
    until the spelling is outside the vocabulary; a word with no such letter gets its last letter doubled.

    Args:
        word: the word (lower case, as the vectorizer stores it).
        vocabulary: the words the result must avoid.

    Returns:
        The misspelling.

    Examples:
        >>> obfuscate("free")
        'fr3e'
    """
    vocab = vocabulary if isinstance(vocabulary, dict) else set(vocabulary)
    letters = list(word)
    for i in range(1, len(letters)) if len(letters) > 1 else range(len(letters)):
        if letters[i] in LOOKALIKES:
            letters[i] = LOOKALIKES[letters[i]]
            if "".join(letters) not in vocab:
                return "".join(letters)
    candidate = word + word[-1]
    while candidate in vocab:
        candidate += word[-1]
    return candidate


def apply_edits(
    text: str,
    added: Sequence[str] = (),
    removed: Sequence[str] = (),
    mode: str = "obfuscate",
    vocabulary: Iterable[str] | dict[str, int] = (),
) -> str:
    """The attacked message: every occurrence of each ``removed`` word obfuscated or deleted, ``added`` appended.

    Args:
        text: the original message.
        added: words to append (the "good words").
        removed: vocabulary words to take out of the message (every occurrence, any case).
        mode: ``"obfuscate"`` (misspell, see :func:`obfuscate`) or ``"delete"``.
        vocabulary: the vocabulary the misspellings must avoid.

    Returns:
        The edited text.

    Examples:
        >>> apply_edits("FREE entry: win free tickets", added=["mum"], removed=["free"])
        'FR3E entry: win fr3e tickets mum'
    """
    if mode not in EDIT_MODES:
        raise ValueError(f"mode: expected one of {EDIT_MODES}, got {mode!r}")
    for word in removed:
        pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)
        if mode == "delete":
            text = pattern.sub("", text)
        else:
            text = pattern.sub(_misspeller(obfuscate(word, vocabulary)), text)
    return " ".join([text, *added]) if added else text


def _misspeller(fake: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement writing ``fake`` in upper case where the occurrence is upper case."""

    def replace(match: re.Match[str]) -> str:
        return fake.upper() if match.group(0).isupper() else fake

    return replace
