"""One text experiment: a fixed seeded split, a vocabulary, each training method, test error and nearest words.

:func:`run_text` is what ``advlab text`` and ``bench/text_vat.py`` call: it prepares the data once
(:class:`TextData`), trains one fresh :func:`~advlab.text.model.text_classifier` per method from the same seed
(:func:`train_method`), and measures the test error, the nearest words of probe words in each model's normalised
embedding space (as Miyato et al. 2016 show for "good" and "bad") and the nearest words to a probe
word's embedding after the adversarial perturbation of its sentence.

Examples:
    >>> sentences, labels = load_rt_polarity()
    >>> result = run_text(sentences, labels, ["baseline", "vat"], TextSettings(epochs=3))
    >>> {m.method: m.test_error for m in result.methods}
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from advlab import validation
from advlab.defenses.base import accuracy
from advlab.models import Classifier
from advlab.provenance import provenance
from advlab.text.model import text_classifier, text_network
from advlab.text.training import UNBOUNDED, adversarial_perturbation, check_method, make_trainer
from advlab.text.vocab import PAD_ID, UNK_ID, Vocabulary, fixed_split
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

SEMI_SUPERVISED = ("vat", "at-vat")
"""Methods that use the unlabelled sentences; the others train on the labelled part alone."""
PERTURBED_SENTENCES = 3
"""Test sentences per probe word whose perturbed embedding's neighbours are reported."""


@dataclass(frozen=True)
class TextSettings:
    """Settings of a text experiment (one model per method, all trained alike); the defaults are the measured
    setting of BENCHMARKS.md ("Text").

    Args:
        epochs: passes over the training data (over the unlabelled set in semi-supervised VAT).
        batch_size: labelled sentences per step.
        lr: Adam learning rate.
        eps: L2 norm of the (virtual) adversarial perturbation over a sentence's normalised embeddings.
        xi: VAT's finite-difference scale.
        embedding_dim: word vector size.
        hidden: LSTM units.
        dropout: dropout on the embeddings in training.
        min_count: words seen fewer times in the training part become ``<unk>``.
        max_length: tokens kept per sentence.
        test_fraction: share of the sentences held out for testing (the fixed split).
        unlabeled: share of the training part whose labels are hidden (semi-supervised; 0: supervised).
        seed: seeds the split, the hidden labels, the weights and the training.
        probes: words whose nearest neighbours are reported.
        neighbours: neighbours reported per word.
    """

    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    eps: float = 1.0
    xi: float = 0.1
    embedding_dim: int = 64
    hidden: int = 64
    dropout: float = 0.5
    min_count: int = 2
    max_length: int = 60
    test_fraction: float = 0.1
    unlabeled: float = 0.0
    seed: int = 0
    probes: tuple[str, ...] = ("good", "bad")
    neighbours: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "embedding_dim", "hidden", "min_count", "max_length", "neighbours"):
            validation.check_int(name, getattr(self, name), minimum=1)
        validation.check_int("seed", self.seed, minimum=0)
        for name in ("lr", "eps", "xi"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.unlabeled < 1.0:
            raise ValueError(f"unlabeled: expected a fraction in [0, 1) of the training part, got {self.unlabeled}")

    def network(self) -> dict[str, Any]:
        """The :class:`~advlab.text.model.LSTMClassifier` settings."""
        return {"embedding_dim": self.embedding_dim, "hidden": self.hidden, "dropout": self.dropout}


@dataclass
class TextData:
    """The prepared data of an experiment: the vocabulary (of the training part) and the id matrices.

    Args:
        vocab: the vocabulary built from the training sentences.
        x_train: labelled training ids.
        y_train: their labels.
        x_test: test ids.
        y_test: their labels.
        x_unlabeled: training sentences whose labels are hidden (``None`` when supervised).
        test_sentences: the test sentences as text.
    """

    vocab: Vocabulary
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_unlabeled: torch.Tensor | None
    test_sentences: list[str]

    @classmethod
    def prepare(cls, sentences: Sequence[str], labels: Any, settings: TextSettings) -> TextData:
        """Split, build the vocabulary on the training part, encode, and hide labels when ``settings.unlabeled``.

        Args:
            sentences: all sentences.
            labels: their class labels (0, 1, ...).
            settings: the experiment's settings.

        Returns:
            The prepared data.

        Raises:
            ValueError: sentences and labels of different lengths, or an empty sentence.

        Examples:
            >>> data = TextData.prepare(sentences, labels, TextSettings(seed=0))
        """
        y = validation.as_labels("labels", labels)
        if len(sentences) != y.shape[0]:
            raise ValueError(f"labels: expected one label per sentence ({len(sentences)}), got {y.shape[0]}")
        train, test = fixed_split(len(sentences), test_fraction=settings.test_fraction, seed=settings.seed)
        vocab = Vocabulary.build([sentences[i] for i in train.tolist()], min_count=settings.min_count)
        x = vocab.encode(list(sentences), max_length=settings.max_length)
        x_train, y_train, x_u = x[train], y[train], None
        if settings.unlabeled > 0:
            order = torch.randperm(train.numel(), generator=torch.Generator().manual_seed(settings.seed + 1))
            hidden = order[: round(settings.unlabeled * train.numel())]
            keep = torch.ones(train.numel(), dtype=torch.bool)
            keep[hidden] = False
            x_u, x_train, y_train = x_train[~keep], x_train[keep], y_train[keep]
        return cls(vocab, x_train, y_train, x[test], y[test], x_u, [sentences[i] for i in test.tolist()])

    def summary(self) -> dict[str, Any]:
        """Sizes, for the report."""
        return {
            "vocabulary": len(self.vocab),
            "n_train_labelled": int(self.x_train.shape[0]),
            "n_unlabeled": 0 if self.x_unlabeled is None else int(self.x_unlabeled.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "test_unknown_share": float((self.x_test == UNK_ID).sum() / (self.x_test != PAD_ID).sum()),
        }


@dataclass
class MethodResult:
    """One trained model's figures.

    Args:
        method: the training method.
        test_error: error on the test part.
        seconds: training time.
        history: the trainer's per-epoch records.
        neighbours: each probe word's nearest words (cosine, normalised embeddings) with their similarity.
        perturbed: for test sentences holding a probe word: the nearest words to its perturbed embedding.
        model: the trained classifier (not serialised).
    """

    method: str
    test_error: float
    seconds: float
    history: list[dict[str, Any]]
    neighbours: dict[str, list[tuple[str, float]]]
    perturbed: list[dict[str, Any]]
    model: Classifier | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        out = asdict(self)
        out.pop("model")
        return out


@dataclass
class TextResult:
    """The figures of one experiment, JSON-friendly through :meth:`to_dict`.

    Args:
        data: the dataset's name.
        settings: the experiment's settings.
        split: sizes of the parts (:meth:`TextData.summary`).
        methods: one result per method, in the order run.
        provenance: versions, commit, host.
    """

    data: str
    settings: TextSettings
    split: dict[str, Any]
    methods: list[MethodResult]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON: settings, split, and one record per method."""
        return {
            "data": self.data,
            "settings": asdict(self.settings),
            "split": self.split,
            "methods": [m.to_dict() for m in self.methods],
            "provenance": self.provenance,
        }


def nearest_words(
    model: Classifier, vocab: Vocabulary, vector: torch.Tensor, k: int, *, exclude: int = -1
) -> list[tuple[str, float]]:
    """The ``k`` words whose normalised embeddings have the highest cosine similarity to ``vector``.

    Args:
        model: a text classifier.
        vocab: its vocabulary.
        vector: a ``(D,)`` point in the normalised embedding space.
        k: how many words.
        exclude: an id left out (the probe word itself); ``<pad>`` and ``<unk>`` are always left out.

    Returns:
        ``[(word, cosine), ...]``, most similar first.

    Examples:
        >>> nearest_words(model, vocab, text_network(model).normalised_embeddings()[vocab.id("good")], 5)
    """
    with torch.no_grad():
        table = text_network(model).normalised_embeddings()
        cos = torch.nn.functional.cosine_similarity(table, vector[None, :].to(table), dim=1)
        cos[[PAD_ID, UNK_ID]] = -math.inf
        if exclude >= 0:
            cos[exclude] = -math.inf
        top = cos.topk(min(k, len(vocab) - 2))
    return [
        (vocab.words[i], round(float(c), 4)) for c, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def probe_neighbours(
    model: Classifier, vocab: Vocabulary, probes: Sequence[str], k: int
) -> dict[str, list[tuple[str, float]]]:
    """The nearest words of each probe word that the vocabulary holds (as in Miyato et al. 2016)."""
    table = text_network(model).normalised_embeddings().detach()
    out = {}
    for word in probes:
        i = vocab.id(word)
        if i != UNK_ID:
            out[word] = nearest_words(model, vocab, table[i], k, exclude=i)
    return out


def perturbed_neighbours(
    model: Classifier, data: TextData, probes: Sequence[str], eps: float, k: int
) -> list[dict[str, Any]]:
    """Nearest words to a probe word's embedding after its sentence's adversarial perturbation (norm ``eps``).

    For the first :data:`PERTURBED_SENTENCES` test sentences holding each probe word, the perturbation
    ``eps * g / ||g||_2`` of the whole sentence (true label, model in eval mode) is added and the neighbours of the
    probe's perturbed vector are listed, with the share of the perturbation's norm that fell on that word.
    """
    net = text_network(model)
    threat = ThreatModel("l2", eps, UNBOUNDED)
    model.eval()
    out = []
    for word in probes:
        wid = data.vocab.id(word)
        if wid == UNK_ID:
            continue
        rows = (data.x_test == wid).any(1).nonzero().flatten()[:PERTURBED_SENTENCES].tolist()
        for row in rows:
            x = data.x_test[row : row + 1]
            emb, lengths = net.embed(x)
            emb = emb.detach().requires_grad_(True)
            head = functools.partial(net.classify, lengths=lengths)
            r = adversarial_perturbation(head, emb, data.y_test[row : row + 1], threat)
            pos = int((x[0] == wid).nonzero()[0])
            out.append(
                {
                    "word": word,
                    "sentence": data.test_sentences[row],
                    "label": int(data.y_test[row]),
                    "share_of_norm": round(float(r[0, pos].norm() / r.norm()), 4),
                    "nearest": nearest_words(model, data.vocab, (emb[0, pos] + r[0, pos]).detach(), k),
                }
            )
    return out


def train_method(method: str, data: TextData, settings: TextSettings, *, progress: bool = False) -> MethodResult:
    """Train a fresh classifier with ``method`` on ``data`` and measure it.

    The weights are drawn from ``settings.seed`` inside a forked global RNG (the caller's stream is untouched), so
    every method starts from the same network.

    Args:
        method: ``"baseline"``, ``"at"``, ``"vat"`` or ``"at-vat"``.
        data: the prepared data.
        settings: the experiment's settings.
        progress: show the trainer's progress bar (on a terminal).

    Returns:
        The method's result, with the trained model.

    Raises:
        ValueError: an unknown method.

    Examples:
        >>> train_method("vat", data, TextSettings(epochs=3)).test_error
    """
    method = check_method(method)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = text_classifier(data.vocab, num_classes=int(data.y_train.max()) + 1, **settings.network())
    trainer = make_trainer(
        method,
        eps=settings.eps,
        xi=settings.xi,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
        progress=progress,
    )
    unlabeled = data.x_unlabeled if method in SEMI_SUPERVISED else None
    t0 = time.perf_counter()
    trainer.fit(model, (data.x_train, data.y_train), (data.x_test, data.y_test), unlabeled=unlabeled)
    seconds = time.perf_counter() - t0
    error = 1.0 - accuracy(model, data.x_test, data.y_test)
    log.info("%s: test error %.2f%% after %d epochs (%.0f s)", method, 100 * error, settings.epochs, seconds)
    return MethodResult(
        method,
        error,
        seconds,
        trainer.history_,
        probe_neighbours(model, data.vocab, settings.probes, settings.neighbours),
        perturbed_neighbours(model, data, settings.probes, settings.eps, settings.neighbours),
        model,
    )


def run_text(
    sentences: Sequence[str],
    labels: Any,
    methods: Sequence[str],
    settings: TextSettings | None = None,
    *,
    data_name: str = "sentences",
    progress: bool = False,
) -> TextResult:
    """Train and measure one model per method on a fixed seeded split of ``sentences``.

    Args:
        sentences: the sentences (lower-cased, space-tokenised text; see :func:`~advlab.text.vocab.tokenize`).
        labels: their labels.
        methods: training methods, e.g. ``["baseline", "at", "vat", "at-vat"]``.
        settings: the experiment's settings (default :class:`TextSettings`).
        data_name: the dataset's name, for the report.
        progress: show progress bars (on a terminal).

    Returns:
        The experiment's figures.

    Raises:
        ValueError: no method, an unknown or repeated method, bad settings or data.

    Examples:
        >>> run_text(*load_rt_polarity(), ["baseline", "vat"], TextSettings(epochs=3), data_name="rt-polarity")
    """
    settings = settings or TextSettings()
    if not methods:
        raise ValueError("methods: got none; pass at least one of baseline, at, vat, at-vat")
    methods = [check_method(m) for m in methods]
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: each method once, got {methods}")
    data = TextData.prepare(sentences, labels, settings)
    results = [train_method(m, data, settings, progress=progress) for m in methods]
    return TextResult(data_name, settings, data.summary(), results, provenance())
