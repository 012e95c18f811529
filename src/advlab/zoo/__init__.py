"""Architectures from the literature and saved models (safetensors weights + a JSON card).

Example:
    >>> from advlab.zoo import build_classifier, save_model, load_model
    >>> clf = build_classifier("wong-cnn", input_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,))
    >>> save_model(clf, "runs/m1", dataset="mnist", training={"epochs": 5}, accuracy={"test": 0.987}, seed=0)
    >>> clf = load_model("runs/m1")
"""

from advlab.zoo.base import ARCHS, ArchSpec, count_parameters, create, list_archs
from advlab.zoo.cards import CARD_FILE, WEIGHTS_FILE, build_classifier, card_summary, load_model, save_model

# importing the architecture modules registers them in ARCHS
from advlab.zoo.linear import LogisticRegression, RBFNetwork, SoftmaxRegression  # noqa: E402
from advlab.zoo.mlp import MLP, Maxout, MaxoutLinear  # noqa: E402
from advlab.zoo.cnn import CifarCNN, MadryCNN, WongCNN  # noqa: E402
from advlab.zoo.resnet import PreActBlock, PreActResNet18  # noqa: E402

__all__ = [
    "ARCHS",
    "ArchSpec",
    "CARD_FILE",
    "CifarCNN",
    "LogisticRegression",
    "MLP",
    "MadryCNN",
    "Maxout",
    "MaxoutLinear",
    "PreActBlock",
    "PreActResNet18",
    "RBFNetwork",
    "SoftmaxRegression",
    "WEIGHTS_FILE",
    "WongCNN",
    "build_classifier",
    "card_summary",
    "count_parameters",
    "create",
    "list_archs",
    "load_model",
    "save_model",
]
