"""Text classifiers: adversarial and virtual adversarial training on word embeddings (Miyato et al. 2016).

A sentence is a row of word ids (:class:`Vocabulary`), the classifier an LSTM over frequency-normalised word
embeddings (:func:`text_classifier`), and the perturbations of adversarial and virtual adversarial training are added
to those embeddings by advlab's own trainers and threat model (:mod:`advlab.text.training`). :func:`run_text` trains
and measures one model per method on a fixed seeded split; ``advlab text`` is its command line.

Examples:
    >>> from advlab.data.rt_polarity import load_rt_polarity
    >>> from advlab.text import TextSettings, run_text
    >>> result = run_text(*load_rt_polarity(), ["baseline", "vat"], TextSettings(epochs=3), data_name="rt-polarity")
"""

from advlab.text.experiment import MethodResult, TextData, TextResult, TextSettings, run_text, train_method
from advlab.text.model import LSTMClassifier, load_text_model, save_text_model, text_classifier
from advlab.text.training import (
    METHODS,
    EmbeddingAdversarial,
    EmbeddingATVAT,
    EmbeddingVAT,
    adversarial_perturbation,
    make_trainer,
)
from advlab.text.vocab import Vocabulary, fixed_split, tokenize

__all__ = [
    "METHODS",
    "EmbeddingATVAT",
    "EmbeddingAdversarial",
    "EmbeddingVAT",
    "LSTMClassifier",
    "MethodResult",
    "TextData",
    "TextResult",
    "TextSettings",
    "Vocabulary",
    "adversarial_perturbation",
    "fixed_split",
    "load_text_model",
    "make_trainer",
    "run_text",
    "save_text_model",
    "text_classifier",
    "tokenize",
    "train_method",
]
