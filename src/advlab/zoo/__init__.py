"""Architectures from the literature, saved models (safetensors weights + a JSON card), and models from anywhere.

:func:`load_model` reads an advlab model folder, a ``torch.export`` program, a TorchScript file or a Python
factory with weights (see :mod:`advlab.zoo.imports`); :func:`import_model` turns any of them into a folder.

Examples:
    >>> from advlab.zoo import build_classifier, save_model, load_model
    >>> clf = build_classifier("wong-cnn", input_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,))
    >>> save_model(clf, "runs/m1", dataset="mnist", training={"epochs": 5}, accuracy={"test": 0.987}, seed=0)
    >>> clf = load_model("runs/m1")
    >>> mine = load_model("nets.py:SmallCNN", weights="w.safetensors", info={"input_shape": (1, 28, 28)})
"""

from advlab.zoo.base import ARCHS, ArchSpec, count_parameters, create, list_archs
from advlab.zoo.cards import CARD_FILE, WEIGHTS_FILE, build_classifier, card_summary, load_folder, save_model
from advlab.zoo.cnn import CifarCNN, MadryCNN, WongCNN
from advlab.zoo.imports import SIDECAR_SUFFIX, ModelInfo, import_model, load_model, read_sidecar, sidecar_path

# importing the architecture modules registers them in ARCHS
from advlab.zoo.linear import LogisticRegression, RBFNetwork, SoftmaxRegression
from advlab.zoo.mlp import MLP, Maxout, MaxoutLinear
from advlab.zoo.networks import ExportedModule
from advlab.zoo.resnet import PreActBlock, PreActResNet18

__all__ = [
    "ARCHS",
    "CARD_FILE",
    "MLP",
    "SIDECAR_SUFFIX",
    "WEIGHTS_FILE",
    "ArchSpec",
    "CifarCNN",
    "ExportedModule",
    "LogisticRegression",
    "MadryCNN",
    "Maxout",
    "MaxoutLinear",
    "ModelInfo",
    "PreActBlock",
    "PreActResNet18",
    "RBFNetwork",
    "SoftmaxRegression",
    "WongCNN",
    "build_classifier",
    "card_summary",
    "count_parameters",
    "create",
    "import_model",
    "list_archs",
    "load_folder",
    "load_model",
    "read_sidecar",
    "save_model",
    "sidecar_path",
]
