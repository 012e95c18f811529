"""The text classifier of Miyato et al. (2016), small: normalised word embeddings, one LSTM layer, a linear read-out.

The network is split where the perturbations go: :meth:`LSTMClassifier.embed` maps a padded id matrix to the
**normalised** word embeddings of each sentence (and the sentence lengths), :meth:`LSTMClassifier.classify` maps
(perturbed) embeddings to logits. ``forward`` is the two in a row, so the wrapped model is an ordinary advlab
:class:`~advlab.models.Classifier` on id matrices.

Normalisation (Miyato et al. 2016, eq. 1): ``v̄ = (v - E[v]) / sqrt(Var[v])`` with the mean and variance weighted by
the training-set word frequencies ``f`` (per embedding dimension), so a perturbation of fixed norm cannot be made
insignificant by growing the embeddings.

Examples:
    >>> model = text_classifier(vocab, embedding_dim=64, hidden=64)
    >>> model(vocab.encode(["a good film"])).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io
from advlab.models import Classifier
from advlab.text.vocab import PAD_ID, Vocabulary

NORMALISATION_FLOOR = 1e-6
"""Added to the frequency-weighted variance before the square root (as in the authors' code)."""


class LSTMClassifier(nn.Module):
    """Embedding (normalised) -> dropout -> LSTM -> last real time step -> linear.

    Right padding never reaches the logits: the LSTM reads left to right and the read-out takes the state at each
    sentence's last word, so a perturbation's gradient is zero on padded positions.

    Args:
        frequencies: ``(V,)`` word frequencies of the training set (:meth:`Vocabulary.frequencies`).
        embedding_dim: word vector size.
        hidden: LSTM units.
        num_classes: output classes.
        dropout: dropout on the (perturbed) embeddings in training (paper: keep probability 0.5).
    """

    frequencies: torch.Tensor

    def __init__(
        self,
        frequencies: torch.Tensor,
        *,
        embedding_dim: int = 128,
        hidden: int = 128,
        num_classes: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(frequencies.shape[0], embedding_dim, padding_idx=PAD_ID)
        self.register_buffer("frequencies", frequencies.float().clone())
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The frequency-weighted mean and standard deviation ``(D,)`` of the embedding matrix (with gradient)."""
        w = self.embedding.weight
        f = self.frequencies
        mean = f @ w
        var = (f @ (w * w) - mean * mean).clamp_min(0.0)
        return mean, torch.sqrt(var + NORMALISATION_FLOOR)

    def normalised_embeddings(self) -> torch.Tensor:
        """The ``(V, D)`` embedding matrix normalised with the frequency-weighted mean and variance."""
        mean, std = self.statistics()
        return (self.embedding.weight - mean) / std

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, T', D)`` normalised embeddings of the id matrix ``x`` (cut to its longest sentence) and lengths."""
        ids = x.round().long()
        lengths = (ids != PAD_ID).sum(1).clamp_min(1)
        mean, std = self.statistics()
        return (self.embedding(ids[:, : int(lengths.max())]) - mean) / std, lengths

    def classify(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of (possibly perturbed) embedded sentences ``(N, T, D)`` of the given lengths."""
        states, _ = self.lstm(self.dropout(embedded))
        last = states[torch.arange(states.shape[0], device=states.device), lengths - 1]
        return self.out(last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded, lengths = self.embed(x)
        return self.classify(embedded, lengths)


def text_network(model: nn.Module) -> LSTMClassifier:
    """The :class:`LSTMClassifier` inside ``model`` (a :class:`~advlab.models.Classifier` or the network itself).

    Raises:
        TypeError: ``model`` is not a text classifier with ``embed`` and ``classify``.
    """
    net = model.module if isinstance(model, Classifier) else model
    if not isinstance(net, LSTMClassifier):
        raise TypeError(
            f"model: expected an advlab.text LSTMClassifier (from text_classifier(vocab)), got {type(net).__name__}; "
            "perturbations on word embeddings need the network's embed/classify split"
        )
    return net


def text_classifier(vocab: Vocabulary, *, num_classes: int = 2, **network: Any) -> Classifier:
    """An :class:`LSTMClassifier` for ``vocab``, wrapped as an advlab classifier on float id matrices.

    Args:
        vocab: the training vocabulary (its size and word frequencies).
        num_classes: output classes.
        **network: :class:`LSTMClassifier` settings (``embedding_dim``, ``hidden``, ``dropout``).

    Returns:
        A :class:`~advlab.models.Classifier` with bounds ``(0, len(vocab) - 1)`` (the ids).

    Examples:
        >>> model = text_classifier(vocab, hidden=64, dropout=0.0)
    """
    net = LSTMClassifier(vocab.frequencies(), num_classes=num_classes, **network)
    return Classifier(net, bounds=(0.0, float(len(vocab) - 1)), num_classes=num_classes)


WEIGHTS_FILE = "model.safetensors"
VOCABULARY_FILE = "vocabulary.json"


def save_text_model(folder: str | Path, model: Classifier, vocab: Vocabulary) -> tuple[Path, Path]:
    """Write the weights (safetensors, the network's settings in its metadata) and the vocabulary (JSON), atomically.

    Args:
        folder: the model folder (created if needed).
        model: a text classifier.
        vocab: its vocabulary.

    Returns:
        The paths of the weights and of the vocabulary.

    Examples:
        >>> save_text_model("runs/text/vat", model, vocab)
    """
    net = text_network(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "embedding_dim": net.embedding.embedding_dim,
        "hidden": net.lstm.hidden_size,
        "num_classes": net.out.out_features,
        "dropout": net.dropout.p,
    }
    weights = io.save_safetensors(folder / WEIGHTS_FILE, net.state_dict(), {"config": json.dumps(config)})
    return weights, io.write_json(folder / VOCABULARY_FILE, vocab.to_dict())


def load_text_model(folder: str | Path) -> tuple[Classifier, Vocabulary]:
    """The classifier and vocabulary :func:`save_text_model` wrote, in eval mode.

    Args:
        folder: the model folder.

    Returns:
        ``(model, vocab)``.

    Raises:
        FileNotFoundError: the folder lacks the weights or the vocabulary.
        ValueError: files that advlab did not write.

    Examples:
        >>> model, vocab = load_text_model("runs/text/vat")
    """
    from safetensors import safe_open

    folder = Path(folder)
    for name in (WEIGHTS_FILE, VOCABULARY_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing; point at a folder written by advlab text --out")
    vocab = Vocabulary.from_dict(io.read_json(folder / VOCABULARY_FILE))
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no iterator
    if "config" not in meta:
        raise ValueError(f"{folder / WEIGHTS_FILE}: no network settings in its metadata; not an advlab text model")
    config = json.loads(meta["config"])
    model = text_classifier(vocab, **config)
    text_network(model).load_state_dict(tensors)
    return model.eval(), vocab
