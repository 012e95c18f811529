"""Word-budget attacks on spam filters: the white-box greedy attack and Lowd & Meek's query-only good-word attack.

A change flips one word of a message: adding a "good word" (0 -> 1) or taking a "spam word" out (1 -> 0, by deletion
or obfuscation, see :mod:`advlab.spam.features`). The budget is the number of changed words.

- :func:`greedy_attack` (white-box): repeatedly make the change that lowers the spam score most — by the weights for
  a linear filter, by the gradient for the network — until the filter says ham or the budget is spent. For a linear
  filter the changes are independent, so taking the largest decreases first reaches ham with the fewest words: the
  greedy attack is optimal (the tests check it against brute force).
- :class:`GoodWordSearch` (query-only, Lowd & Meek 2005, "first-N"): with spam/ham answers only, build a "barely
  spam" message by adding a spam message's words to a ham message one at a time until the filter says spam; then
  try candidate words one at a time on it: a word that turns it ham is a good word. :func:`query_attack` appends
  the good words found, in order, to each spam message until it passes. Every filter call is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from advlab import validation
from advlab.spam.models import Features, SpamModel


@dataclass(frozen=True)
class WordAttackResult:
    """Per message: whether it got through, the changed words, the scores, the filter calls (query attack only).

    Attributes:
        x_adv: the attacked 0/1 features (N, V), dense float32.
        success: the filter calls the attacked message ham.
        words: changed words per message (on failure: the words spent, at most the budget).
        added: per message, vocabulary indices of the words added.
        removed: per message, vocabulary indices of the words taken out.
        score_before: spam log-odds of the original messages.
        score_after: spam log-odds of the attacked messages.
        budget: the word budget.
        queries: filter calls per message (query attack; zeros for the white-box attack).
    """

    x_adv: np.ndarray
    success: np.ndarray
    words: np.ndarray
    added: list[list[int]]
    removed: list[list[int]]
    score_before: np.ndarray
    score_after: np.ndarray
    budget: int
    queries: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def summary(self) -> dict[str, float | int | None]:
        """Success rate, and the median and mean words over the messages that got through."""
        ok = self.words[self.success]
        return {
            "n": int(self.success.size),
            "success_rate": float(self.success.mean()) if self.success.size else 0.0,
            "median_words": float(np.median(ok)) if ok.size else None,
            "mean_words": float(ok.mean()) if ok.size else None,
            "budget": self.budget,
            "queries": int(self.queries.sum()) if self.queries.size else 0,
        }


def check_budget(budget: int, vocabulary_size: int) -> int:
    """``budget`` as an int in ``1..vocabulary_size``, else a one-line error naming the fix.

    Args:
        budget: the maximum number of changed words.
        vocabulary_size: number of words a change can touch.

    Returns:
        The budget.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget: expected a whole number of words, got {type(budget).__name__}")
    if budget < 1:
        raise ValueError(f"budget: expected 1 to {vocabulary_size} words, got {budget}; a budget of 0 changes nothing")
    if budget > vocabulary_size:
        raise ValueError(
            f"budget: expected 1 to {vocabulary_size} words (the vocabulary size), got {budget}; "
            f"no message can change more words, so pass at most {vocabulary_size}"
        )
    return int(budget)


def _rows(x: Features) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def greedy_attack(
    model: SpamModel, x: Features, budget: int, *, add: bool = True, remove: bool = True
) -> WordAttackResult:
    """White-box greedy word attack: make the most score-lowering change until the filter says ham or budget is spent.

    A change is allowed once per word. For a linear filter each step takes the largest remaining decrease, which
    reaches ham with the fewest changes (optimal); for the network the decrease is the first-order estimate from
    the gradient at the current message (per step: a forward and backward pass for the gradient, a forward pass for
    the new score).

    Args:
        model: the filter.
        x: 0/1 features of the messages to attack (N, V).
        budget: the most words changed per message, ``1..V``.
        add: allow adding words (good-word attack).
        remove: allow taking words out (deleting or obfuscating spam words).

    Returns:
        The per-message result; messages the filter already calls ham succeed with 0 words.

    Examples:
        >>> from advlab.spam.models import LinearSpamModel
        >>> m = LinearSpamModel(np.array([2.0, -1.0, -3.0]), 0.5)
        >>> r = greedy_attack(m, np.array([[1.0, 0, 0]]), budget=2)
        >>> r.success.tolist(), r.words.tolist(), r.added, r.removed
        ([True], [1], [[2]], [[]])
    """
    rows = _rows(x)
    budget = check_budget(budget, rows.shape[1])
    if not (add or remove):
        raise ValueError("add, remove: both are False, so no word may change; allow at least one")
    scores = model.score(rows)
    out = rows.copy()
    added: list[list[int]] = []
    removed: list[list[int]] = []
    after = scores.copy()
    for i in range(rows.shape[0]):
        plus, minus, after[i] = _greedy_one(model, out[i], float(scores[i]), budget, add, remove)
        added.append(plus)
        removed.append(minus)
    words = np.array([len(a) + len(r) for a, r in zip(added, removed, strict=True)], dtype=np.int64)
    return WordAttackResult(out, after <= 0, words, added, removed, scores, after, budget)


def _greedy_one(
    model: SpamModel, row: np.ndarray, score: float, budget: int, add: bool, remove: bool
) -> tuple[list[int], list[int], float]:
    """Attack one message in place; returns (added, removed, final score)."""
    plus: list[int] = []
    minus: list[int] = []
    open_ = np.ones(row.size, dtype=bool)  # a word changes at most once
    if not remove:
        open_ &= row == 0
    if not add:
        open_ &= row == 1
    while score > 0 and len(plus) + len(minus) < budget:
        change = model.gradient(row) * (1.0 - 2.0 * row)  # score change of flipping each word
        change = np.where(open_, change, np.inf)
        j = int(np.argmin(change))
        if not np.isfinite(change[j]) or change[j] >= 0:
            break  # no change lowers the score
        (plus if row[j] == 0 else minus).append(j)
        row[j] = 1.0 - row[j]
        open_[j] = False
        score = float(model.score(row[None, :])[0])
    return plus, minus, score


class QueryCounter:
    """The filter as a query-only oracle: ``oracle(x)`` answers spam (True) or ham per row and counts the rows.

    Args:
        model: the filter.

    Examples:
        >>> from advlab.spam.models import LinearSpamModel
        >>> oracle = QueryCounter(LinearSpamModel(np.array([1.0]), -0.5))
        >>> oracle(np.array([[1.0], [0.0]])).tolist(), oracle.queries
        ([True, False], 2)
    """

    def __init__(self, model: SpamModel) -> None:
        self.model = model
        self.queries = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(x)
        self.queries += rows.shape[0]
        return self.model.is_spam(rows)


@dataclass(frozen=True)
class GoodWords:
    """What the query-only search found.

    Attributes:
        words: vocabulary indices of the good words, in the order found.
        barely_spam: the 0/1 message just on the spam side that the words were tested on.
        queries: filter calls spent on the search (barely-spam message included).
        candidates_tried: candidate words tested as good words.
        last_word: the word whose addition made ``barely_spam`` spam (without it the message is "barely ham").
    """

    words: list[int]
    barely_spam: np.ndarray
    queries: int
    candidates_tried: int
    last_word: int = -1


class GoodWordSearch:
    """Lowd & Meek's first-N good-word search, with spam/ham answers only.

    Args:
        oracle: the counted filter.

    Examples:
        >>> from advlab.spam.models import LinearSpamModel
        >>> m = LinearSpamModel(np.array([1.0, 1.0, -2.0, -0.5]), -0.5)
        >>> found = GoodWordSearch(QueryCounter(m)).first_n(np.array([1.0, 0, 0, 0]), np.array([0.0, 0, 0, 0]), [2, 3], 1)
        >>> found.words, found.queries
        ([2], 2)
    """

    def __init__(self, oracle: QueryCounter) -> None:
        self.oracle = oracle

    def barely_spam(self, spam: np.ndarray, ham: np.ndarray) -> np.ndarray:
        """Add ``spam``'s words (in index order) to ``ham`` one at a time until the filter says spam; that message.

        Args:
            spam: a 0/1 message the filter calls spam.
            ham: a 0/1 message the filter calls ham.

        Returns:
            The first message on the spam side (one query per word added); less its last word, it is "barely ham".

        Raises:
            ValueError: adding all of ``spam``'s words never reaches the spam side.
        """
        return self.barely_pair(spam, ham)[0]

    def barely_pair(self, spam: np.ndarray, ham: np.ndarray) -> tuple[np.ndarray, int]:
        """:meth:`barely_spam` and the index of the word whose addition crossed the boundary."""
        current = np.asarray(ham, dtype=np.float32).copy()
        for j in np.flatnonzero((np.asarray(spam) == 1) & (current == 0)):
            current[j] = 1.0
            if self.oracle(current)[0]:
                return current, int(j)
        raise ValueError(
            "spam, ham: the ham message with all the spam message's words is still ham; pick other messages"
        )

    def first_n(self, spam: np.ndarray, ham: np.ndarray, candidates: Sequence[int], n: int) -> GoodWords:
        """The first ``n`` candidate words that turn the barely-spam message into ham, one query per candidate.

        Args:
            spam: a 0/1 message the filter calls spam.
            ham: a 0/1 message the filter calls ham.
            candidates: vocabulary indices to try, in order (the adversary's word list).
            n: good words wanted.

        Returns:
            The good words found (fewer than ``n`` when the candidates run out).
        """
        n = validation.check_int("n", n, minimum=1)
        start = self.oracle.queries
        barely, last = self.barely_pair(spam, ham)
        found: list[int] = []
        tried = 0
        for j in candidates:
            if len(found) == n:
                break
            if barely[j] == 1:
                continue
            tried += 1
            probe = barely.copy()
            probe[j] = 1.0
            if not self.oracle(probe)[0]:
                found.append(int(j))
        return GoodWords(found, barely, self.oracle.queries - start, tried, last)

    def best_n(
        self, spam: np.ndarray, ham: np.ndarray, candidates: Sequence[int], n: int, spam_words: int = 20
    ) -> GoodWords:
        """Lowd & Meek's best-N: the ``n`` good words with the largest weights, ranked with queries only.

        Every good word among ``candidates`` is found (:meth:`first_n` with no limit); then the first ``spam_words``
        candidates that turn the barely-ham message (the barely-spam one less its last word) into spam; then, for
        each good word, a binary search for the most of those spam words (a prefix, in the order found) that it
        still cancels on the barely-spam message. For a linear filter that count falls as the word's weight rises,
        so the ``n`` words that cancel most are the ``n`` best, up to ties (words whose weights differ by less than a
        yardstick word tie; ties are broken by the order found).

        Args:
            spam: a 0/1 message the filter calls spam.
            ham: a 0/1 message the filter calls ham.
            candidates: vocabulary indices to try, in order.
            n: good words wanted.
            spam_words: spam words used as the yardstick.

        Returns:
            The ``n`` best good words, best first; ``queries`` counts every query of the three steps.
        """
        n = validation.check_int("n", n, minimum=1)
        start = self.oracle.queries
        found = self.first_n(spam, ham, candidates, max(len(candidates), 1))
        barely = found.barely_spam
        barely_ham = barely.copy()
        barely_ham[found.last_word] = 0.0
        yardstick = self.spam_words(barely_ham, barely, candidates, spam_words)
        cancels = [self.cancelled(barely, g, yardstick) for g in found.words]
        order = sorted(range(len(found.words)), key=lambda i: -cancels[i])
        best = [found.words[i] for i in order[:n]]
        return GoodWords(best, barely, self.oracle.queries - start, found.candidates_tried, found.last_word)

    def spam_words(self, barely_ham: np.ndarray, barely: np.ndarray, candidates: Sequence[int], k: int) -> list[int]:
        """The first ``k`` candidates (absent from ``barely``) that turn ``barely_ham`` into spam, one query each."""
        found: list[int] = []
        for j in candidates:
            if len(found) == k:
                break
            if barely[j] == 1:
                continue
            probe = barely_ham.copy()
            probe[j] = 1.0
            if self.oracle(probe)[0]:
                found.append(int(j))
        return found

    def cancelled(self, barely: np.ndarray, good: int, yardstick: list[int]) -> int:
        """The most words of ``yardstick`` (a prefix) that ``good`` cancels on ``barely`` (binary search)."""
        lo, hi = 0, len(yardstick) + 1  # barely + good is ham (lo); hi is past the end, never queried
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = barely.copy()
            probe[[good, *yardstick[:mid]]] = 1.0
            if self.oracle(probe)[0]:
                hi = mid
            else:
                lo = mid
        return lo


def query_attack(oracle: QueryCounter, x: Features, good_words: Sequence[int], budget: int) -> WordAttackResult:
    """Append good words, in order, to each message until the filter says ham or the budget is spent.

    One query per word added (a message already called ham takes one query and no words); words already in the
    message are skipped without a query.

    Args:
        oracle: the counted filter (the only access to it).
        x: 0/1 features of the spam messages (N, V).
        good_words: vocabulary indices, as :meth:`GoodWordSearch.first_n` found them.
        budget: the most words added per message.

    Returns:
        The per-message result with ``queries`` per message; scores come from the filter for the record only.
    """
    rows = _rows(x)
    budget = check_budget(budget, rows.shape[1])
    out = rows.copy()
    added: list[list[int]] = []
    queries = np.zeros(rows.shape[0], dtype=np.int64)
    success = np.zeros(rows.shape[0], dtype=bool)
    for i in range(rows.shape[0]):
        start = oracle.queries
        plus: list[int] = []
        success[i] = not oracle(out[i])[0]
        for j in good_words:
            if success[i] or len(plus) == budget:
                break
            if out[i, j] == 1:
                continue
            out[i, j] = 1.0
            plus.append(int(j))
            success[i] = not oracle(out[i])[0]
        added.append(plus)
        queries[i] = oracle.queries - start
    words = np.array([len(a) for a in added], dtype=np.int64)
    before, after = oracle.model.score(rows), oracle.model.score(out)
    return WordAttackResult(out, success, words, added, [[] for _ in added], before, after, budget, queries)
