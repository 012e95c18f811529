"""The model matrix: networks nobody here designed, in the forms users bring them, for every public entry point.

Each :class:`MatrixModel` is what a user would pass to advlab: mostly a plain ``torch.nn.Module`` (not an advlab
``Classifier``), trained for a few full-batch steps on scikit-learn's 8x8 digits (pixels in [0, 1], shape
``(N, 1, 8, 8)``), deterministically (initialisation from a private generator; the global RNG is never touched).

==================  ==========================================================================================
``batchnorm``       conv -> BatchNorm2d -> ReLU -> linear, in eval mode (0-dim ``num_batches_tracked`` buffer)
``batchnorm_train`` the same network left in train mode (the user forgot ``.eval()``): attacked in eval mode,
                    with a warning, its mode and running statistics untouched
``dropout``         MLP with dropout, in eval mode
``residual``        conv stem, one residual block (``x + f(x)``), pooling, linear
``channels_last``   a conv net with ``memory_format=torch.channels_last`` weights, fed channels-last inputs
``buffers_only``    softmax regression whose weights are buffers: no parameters of its own
``single_logit``    a binary classifier with one logit, shape ``(N, 1)`` (digit >= 5), a sigmoid over it
``tabular``         an MLP on 13 standardised wine features clipped to the box (-3, 3), behind a ``Classifier``
                    that declares that box
``exported``        the residual network through ``torch.export`` (dynamic batch), as ``ExportedProgram.module()``
``torchscript``     the BatchNorm network scripted, saved and loaded back with ``torch.jit``
==================  ==========================================================================================

``MatrixModel.x`` / ``.y`` are a few test examples inside the model's box, ``eps`` radii per norm suited to the
box, ``num_classes`` the number of classes advlab presents (two for the single logit).
"""

from __future__ import annotations

import copy
import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advlab import Classifier

STEPS = 60
"""Full-batch Adam steps per model: enough for 80-95% test accuracy on digits, well under a second each."""
N_EXAMPLES = 8
"""Test examples per model (what the matrix attacks)."""


@dataclass(frozen=True)
class MatrixModel:
    """One model of the matrix and the data it is attacked on.

    Attributes:
        name: the matrix entry.
        model: what the user passes (a plain module, or a ``Classifier`` where the box is not [0, 1]).
        x: ``N_EXAMPLES`` test inputs inside ``bounds`` (channels-last for ``channels_last``).
        y: their labels.
        bounds: the input box.
        num_classes: classes as advlab presents them.
        x_train: training inputs (for trainers, substitutes and seeds).
        y_train: training labels.
        trainable: whether a trainer can fit it (it has parameters and is a plain nn.Module).
    """

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    trainable: bool = True

    @property
    def width(self) -> float:
        return self.bounds[1] - self.bounds[0]

    def eps(self, norm: str) -> float:
        """A radius for ``norm`` that moves the prediction of a good share of examples, scaled to the box."""
        return {"linf": 0.1, "l2": 1.0, "l1": 4.0}[norm] * self.width if norm != "l0" else 4.0

    def fresh(self) -> nn.Module:
        """A deep copy of the model (for tests that change its state)."""
        if isinstance(self.model, torch.jit.ScriptModule):  # a deep copy's parameters would not be leaves
            return _jit_round_trip(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, copying an export
            return copy.deepcopy(self.model)


# ---------------------------------------------------------------------- data
@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn digits in [0, 1], (N, 1, 8, 8): a fixed 1437/360 train/test split (as tests/conftest.py)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1234))
    x, y = x[perm], y[perm]
    return x[:1437], y[:1437], x[1437:], y[1437:]


@functools.cache
def wine() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn wine: 13 standardised features clipped to [-3, 3], 3 classes; a fixed 138/40 split."""
    from sklearn.datasets import load_wine

    data = load_wine()
    x = torch.from_numpy(data.data.astype(np.float32))
    x = ((x - x.mean(0)) / x.std(0)).clamp(-3.0, 3.0)
    y = torch.from_numpy(data.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(7))
    x, y = x[perm], y[perm]
    return x[:138], y[:138], x[138:], y[138:]


# ---------------------------------------------------------------------- networks
def _init(module: nn.Module, seed: int) -> nn.Module:
    """Initialise every parameter from a private generator (PyTorch's default initialisation uses the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            elif p.dim() == 1 and p.shape[0] and module_is_norm_weight(module, p):
                p.fill_(1.0)
            else:
                p.zero_()
    return module


def module_is_norm_weight(module: nn.Module, p: torch.Tensor) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is p for m in module.modules())


def _skip(cls: type[nn.Module], *args: int) -> nn.Module:
    return nn.utils.skip_init(cls, *args)


def conv_bn() -> nn.Module:
    return nn.Sequential(
        _skip(nn.Conv2d, 1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), _skip(nn.Linear, 8 * 6 * 6, 10)
    )


def mlp_dropout() -> nn.Module:
    return nn.Sequential(nn.Flatten(), _skip(nn.Linear, 64, 48), nn.ReLU(), nn.Dropout(0.25), _skip(nn.Linear, 48, 10))


class ResidualNet(nn.Module):
    """Conv stem, one residual block ``h + conv(relu(conv(h)))``, average pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _skip(nn.Conv2d, 1, 8, 3, 1, 1)
        self.conv1 = _skip(nn.Conv2d, 8, 8, 3, 1, 1)
        self.conv2 = _skip(nn.Conv2d, 8, 8, 3, 1, 1)
        self.pool = nn.AvgPool2d(2)
        self.head = _skip(nn.Linear, 8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.conv2(torch.relu(self.conv1(h))))
        return self.head(self.pool(h).flatten(1))


class BufferLinear(nn.Module):
    """Softmax regression whose weight and bias are buffers: no parameters of its own."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.flatten(1), self.weight, self.bias)


def mlp_single_logit() -> nn.Module:
    return nn.Sequential(nn.Flatten(), _skip(nn.Linear, 64, 32), nn.ReLU(), _skip(nn.Linear, 32, 1))


def tabular_mlp() -> nn.Module:
    return nn.Sequential(_skip(nn.Linear, 13, 32), nn.ReLU(), _skip(nn.Linear, 32, 3))


def fit(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, steps: int = STEPS, binary: bool = False
) -> nn.Module:
    """Full-batch Adam from a private initialisation; returns the module in eval mode, gradients cleared."""
    _init(module, seed)
    opt = torch.optim.Adam(module.parameters(), lr=0.02)
    module.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = module(x)
        if binary:
            loss = nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
        else:
            loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()
    module.eval()
    for p in module.parameters():
        p.grad = None
    return module


# ---------------------------------------------------------------------- the matrix
def _first_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, binary: bool = False) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
        pred = (out.squeeze(-1) > 0).long() if binary else out.argmax(1)
    return (pred == y).nonzero().flatten()[:N_EXAMPLES]


def _image_case(name: str, model: nn.Module, *, trainable: bool = True, channels_last: bool = False) -> MatrixModel:
    x_tr, y_tr, x_te, y_te = digits()
    idx = _first_correct(model, x_te, y_te)
    x = x_te[idx].clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return MatrixModel(name, model, x, y_te[idx].clone(), (0.0, 1.0), 10, x_tr, y_tr, trainable)


@functools.cache
def trained(kind: str) -> nn.Module:
    """The trained network behind several entries (``conv_bn``, ``residual``), built once per session."""
    x_tr, y_tr, _, _ = digits()
    if kind == "conv_bn":
        return fit(conv_bn(), x_tr, y_tr, seed=1)
    if kind == "residual":
        return fit(ResidualNet(), x_tr, y_tr, seed=2)
    raise KeyError(kind)


def _batchnorm() -> MatrixModel:
    return _image_case("batchnorm", copy.deepcopy(trained("conv_bn")))


def _batchnorm_train() -> MatrixModel:
    case = _image_case("batchnorm_train", copy.deepcopy(trained("conv_bn")))
    case.model.train()
    return case


def _dropout() -> MatrixModel:
    x_tr, y_tr, _, _ = digits()
    return _image_case("dropout", fit(mlp_dropout(), x_tr, y_tr, seed=3))


def _residual() -> MatrixModel:
    return _image_case("residual", copy.deepcopy(trained("residual")))


def _channels_last() -> MatrixModel:
    x_tr, y_tr, _, _ = digits()
    net = fit(conv_bn(), x_tr, y_tr, seed=4).to(memory_format=torch.channels_last)
    return _image_case("channels_last", net, channels_last=True)


def _buffers_only() -> MatrixModel:
    x_tr, y_tr, _, _ = digits()
    lin = fit(nn.Sequential(nn.Flatten(), _skip(nn.Linear, 64, 10)), x_tr, y_tr, seed=5)
    return _image_case("buffers_only", BufferLinear(lin[1].weight, lin[1].bias).eval(), trainable=False)


def _single_logit() -> MatrixModel:
    x_tr, y_tr, x_te, y_te = digits()
    b_tr, b_te = (y_tr >= 5).long(), (y_te >= 5).long()
    net = fit(mlp_single_logit(), x_tr, b_tr, seed=6, binary=True)
    idx = _first_correct(net, x_te, b_te, binary=True)
    return MatrixModel("single_logit", net, x_te[idx].clone(), b_te[idx].clone(), (0.0, 1.0), 2, x_tr, b_tr, False)


def _tabular() -> MatrixModel:
    x_tr, y_tr, x_te, y_te = wine()
    net = fit(tabular_mlp(), x_tr, y_tr, seed=7, steps=100)
    clf = Classifier(net, bounds=(-3.0, 3.0), num_classes=3, input_shape=(13,)).eval()
    idx = _first_correct(clf, x_te, y_te)
    return MatrixModel("tabular", clf, x_te[idx].clone(), y_te[idx].clone(), (-3.0, 3.0), 3, x_tr, y_tr, False)


def _exported() -> MatrixModel:
    net = copy.deepcopy(trained("residual"))
    x = digits()[2][:4]
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    return _image_case("exported", program.module(), trainable=False)


def _jit_round_trip(module: nn.Module) -> nn.Module:
    """``module`` scripted (unless it is already), saved and loaded back, in eval mode: what ``torch.jit.load`` gives."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer).eval()


def _torchscript() -> MatrixModel:
    return _image_case("torchscript", _jit_round_trip(copy.deepcopy(trained("conv_bn"))), trainable=False)


BUILDERS: dict[str, Callable[[], MatrixModel]] = {
    "batchnorm": _batchnorm,
    "batchnorm_train": _batchnorm_train,
    "dropout": _dropout,
    "residual": _residual,
    "channels_last": _channels_last,
    "buffers_only": _buffers_only,
    "single_logit": _single_logit,
    "tabular": _tabular,
    "exported": _exported,
    "torchscript": _torchscript,
}
MODELS = tuple(BUILDERS)
"""Every entry of the matrix."""
TRAINABLE = ("batchnorm", "dropout", "residual")
"""Entries a trainer fits (the issue's BatchNorm, dropout and residual networks)."""


@functools.cache
def _built(name: str) -> MatrixModel:
    return BUILDERS[name]()


def matrix_model(name: str) -> MatrixModel:
    """The entry ``name``, built once per session; its ``model`` is shared, so copy it (``.fresh()``) to change it."""
    return _built(name)
