"""Architectures from the literature and saved models (safetensors weights + a JSON card).

Examples:
    >>> from advlab.zoo import build_classifier, save_model, load_model
    >>> clf = build_classifier("wong-cnn", input_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,))
    >>> save_model(clf, "runs/m1", dataset="mnist", training={"epochs": 5}, accuracy={"test": 0.987}, seed=0)
    >>> clf = load_model("runs/m1")
"""

from advlab.zoo.base import ARCHS, ArchSpec, count_parameters, create, list_archs
from advlab.zoo.cards import CARD_FILE, WEIGHTS_FILE, build_classifier, card_summary, load_model, save_model
from advlab.zoo.cnn import CifarCNN, MadryCNN, WongCNN

# importing the architecture modules registers them in ARCHS
from advlab.zoo.linear import LogisticRegression, RBFNetwork, SoftmaxRegression
from advlab.zoo.mlp import MLP, Maxout, MaxoutLinear
from advlab.zoo.resnet import PreActBlock, PreActResNet18

__all__ = [
    "ARCHS",
    "CARD_FILE",
    "MLP",
    "WEIGHTS_FILE",
    "ArchSpec",
    "CifarCNN",
    "LogisticRegression",
    "MadryCNN",
    "Maxout",
    "MaxoutLinear",
    "PreActBlock",
    "PreActResNet18",
    "RBFNetwork",
    "SoftmaxRegression",
    "WongCNN",
    "build_classifier",
    "card_summary",
    "count_parameters",
    "create",
    "list_archs",
    "load_model",
    "save_model",
]
