"""Shared test fixtures: small data sets and tiny models trained in-process, fast and deterministically.

Everything here trains in well under a second on CPU, once per test session, from fixed
``torch.Generator`` seeds (the global RNG is never touched). Other test files may use any fixture below by
name; add new fixtures at the end of this file (it is shared: keep edits small).

Data (all ``torch.float32`` in ``[0, 1]``, labels ``int64``; scikit-learn's 8x8 digits scaled by 1/16):
    ``digits``            dict with ``x_train``/``y_train`` (1437 examples) and ``x_test``/``y_test`` (360),
                          images shaped ``(N, 1, 8, 8)``.
    ``digits_flat``       the same split with flat inputs ``(N, 64)``.
    ``digits_batch``      ``(x, y)``: 16 test images ``(16, 1, 8, 8)`` that :func:`mlp_model` classifies
                          correctly (a clean accuracy of 1 makes "the attack lowers accuracy" crisp).

Models (``advlab.Classifier`` in eval mode, ``num_classes=10``, ``input_shape=(1, 8, 8)``):
    ``softmax_model``     multinomial logistic regression (Flatten + Linear(64, 10)); test accuracy ~0.95.
    ``mlp_model``         Flatten + Linear(64, 64) + ReLU + Linear(64, 10); test accuracy ~0.96.
    ``normalized_mlp_model``  the MLP's weights behind ``Classifier(mean=[0.3], std=[0.4])`` with the first
                          layer rescaled, so it computes the same function on raw inputs (tests that
                          normalisation lives in the wrapper and eps is measured in raw units).

    ``rowwise_mlp_model``  the MLP's weights in float64 computed row by row (products and sums, no matrix
                          multiply): an example's logits and input gradient are the same bits whatever else is in
                          the batch (CPU GEMM blocks by batch size, so ``nn.Linear`` can differ in the last bit).

Linear models with closed-form attacks:
    ``make_linear_binary``  factory ``(d=20, seed=0, bias=0.0) -> (Classifier, w, b)``: logits
                          ``[0, w.x + b]`` on flat inputs ``(N, d)``; the predicted class is 1 iff the margin
                          ``w.x + b > 0``. Cross-entropy gradients are parallel to ``w``, so single-step and
                          projected attacks have analytic optima (use wide bounds to keep the box inactive).
    ``linear_binary``     ``make_linear_binary()`` with the defaults.

Torch runs single-threaded in tests (``torch.set_num_threads(1)`` at import of this file).

Helpers:
    ``train_classifier``  ``(module, x, y, *, steps=300, lr=0.05, seed=0) -> module``: full-batch Adam,
                          deterministic (initialisation from a private generator), returns the module in eval mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)

# The test models are tiny and the machine's cores are shared: one intra-op thread avoids OpenMP threads
# spinning against each other (several times faster under load, and no slower when idle for these sizes).
torch.set_num_threads(1)


def _linear(d_in: int, d_out: int) -> nn.Linear:
    """``nn.Linear`` without PyTorch's default initialisation (which would draw from the global RNG)."""
    return nn.utils.skip_init(nn.Linear, d_in, d_out)


def _init_from_generator(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter from a private generator (PyTorch's default init uses the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:  # weights: scaled Gaussian (He-style)
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            else:
                p.zero_()


def _train(module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, seed: int) -> nn.Module:
    _init_from_generator(module, seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(module(x), y)
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    module.eval()
    for p in module.parameters():
        p.grad = None
    return module


@pytest.fixture(scope="session")
def train_classifier():
    """Full-batch, deterministic trainer: ``train_classifier(module, x, y, steps=300, lr=0.05, seed=0)``."""

    def train(
        module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 300, lr: float = 0.05, seed: int = 0
    ):
        return _train(module, x, y, steps=steps, lr=lr, seed=seed)

    return train


@pytest.fixture(scope="session")
def digits() -> dict[str, torch.Tensor]:
    """scikit-learn digits in [0, 1], shape (N, 1, 8, 8), a fixed 1437/360 train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1234))
    x, y = x[perm], y[perm]
    n_train = 1437
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


@pytest.fixture(scope="session")
def digits_flat(digits) -> dict[str, torch.Tensor]:
    """The digits split with flat inputs of shape (N, 64)."""
    return {k: (v.reshape(v.shape[0], -1) if k.startswith("x") else v) for k, v in digits.items()}


def _clf(module: nn.Module, **kwargs) -> Classifier:
    clf = Classifier(module, num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE, **kwargs)
    clf.eval()
    return clf


@pytest.fixture(scope="session")
def softmax_model(digits) -> Classifier:
    """Multinomial logistic regression on digits images, trained deterministically."""
    net = nn.Sequential(nn.Flatten(), _linear(64, NUM_CLASSES))
    _train(net, digits["x_train"], digits["y_train"], steps=300, lr=0.05, seed=0)
    return _clf(net)


@pytest.fixture(scope="session")
def mlp_model(digits) -> Classifier:
    """A 64-64-10 ReLU MLP on digits images, trained deterministically."""
    net = nn.Sequential(nn.Flatten(), _linear(64, 64), nn.ReLU(), _linear(64, NUM_CLASSES))
    _train(net, digits["x_train"], digits["y_train"], steps=300, lr=0.01, seed=1)
    return _clf(net)


@pytest.fixture(scope="session")
def normalized_mlp_model(mlp_model) -> Classifier:
    """The MLP behind ``mean=[0.3], std=[0.4]``: same function of the raw input as ``mlp_model``."""
    mean, std = 0.3, 0.4
    src = mlp_model.module
    net = nn.Sequential(nn.Flatten(), _linear(64, 64), nn.ReLU(), _linear(64, NUM_CLASSES))
    with torch.no_grad():
        # module((x - m) / s) == src(x)  <=>  W' = W * s,  b' = b + W @ (m * 1)
        net[1].weight.copy_(src[1].weight * std)
        net[1].bias.copy_(src[1].bias + src[1].weight.sum(1) * mean)
        net[3].weight.copy_(src[3].weight)
        net[3].bias.copy_(src[3].bias)
    return _clf(net, mean=[mean], std=[std])


@pytest.fixture(scope="session")
def digits_batch(digits, mlp_model) -> tuple[torch.Tensor, torch.Tensor]:
    """16 test images that ``mlp_model`` (and ``softmax_model`` mostly) classify correctly."""
    x, y = digits["x_test"], digits["y_test"]
    with torch.no_grad():
        ok = mlp_model(x).argmax(1) == y
    idx = ok.nonzero().flatten()[:16]
    return x[idx].clone(), y[idx].clone()


class _LinearBinary(nn.Module):
    """Logits ``[0, w.x + b]``: class 1 iff the margin ``w.x + b`` is positive."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.lin = _linear(w.numel(), 1)
        with torch.no_grad():
            self.lin.weight.copy_(w[None])
            self.lin.bias.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lin(x.reshape(x.shape[0], -1))
        return torch.cat([torch.zeros_like(s), s], dim=1)


@pytest.fixture(scope="session")
def make_linear_binary():
    """Factory ``(d=20, seed=0, bias=0.0, bounds=(-100, 100)) -> (Classifier, w, b)`` for closed-form checks."""

    def make(d: int = 20, seed: int = 0, bias: float = 0.0, bounds: tuple[float, float] = (-100.0, 100.0)):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, generator=g)
        clf = Classifier(_LinearBinary(w, bias), num_classes=2, input_shape=(d,), bounds=bounds)
        clf.eval()
        return clf, w.clone(), float(bias)

    return make


@pytest.fixture(scope="session")
def linear_binary(make_linear_binary):
    """``make_linear_binary()`` with defaults: d = 20, seed 0, no bias, bounds (-100, 100)."""
    return make_linear_binary()


@pytest.fixture(scope="session")
def user_model(tmp_path_factory):
    """A user's own network (``tests/zoo/user_net.py:ResBNNet``, batch norm + residual), trained on digits and
    saved every way a user saves one.

    Returns a dict: ``net`` (the trained module, eval mode), ``spec`` (``".../user_net.py:ResBNNet"``) and the
    files ``safetensors``, ``state_dict`` (``torch.save(net.state_dict())``), ``checkpoint`` (the state_dict
    nested as ``{"model": ..., "epoch": 3}``), ``pickle`` (``torch.save(net)``: never to be unpickled),
    ``exported`` (``torch.export``, dynamic batch), ``exported_b1`` (batch fixed to 1), ``scripted`` and
    ``traced`` (TorchScript).
    """
    import importlib.util
    import sys
    import warnings
    from pathlib import Path

    from safetensors.torch import save_file

    from advlab.data import load_dataset

    source = Path(__file__).parent / "zoo" / "user_net.py"
    spec = importlib.util.spec_from_file_location("user_net_for_tests", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_net_for_tests"] = module  # so that torch.save(net) can pickle the class
    spec.loader.exec_module(module)
    train = load_dataset("digits", split="train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = module.ResBNNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    x, y = train.x[:800], train.y[:800]
    for _ in range(40):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    folder = tmp_path_factory.mktemp("user_model")
    files = {name: folder / name for name in ("w.safetensors", "w.pt", "ckpt.pt", "full.pt", "net.pt2")}
    save_file(net.state_dict(), str(folder / "w.safetensors"))
    torch.save(net.state_dict(), folder / "w.pt")
    torch.save({"model": net.state_dict(), "epoch": 3}, folder / "ckpt.pt")
    torch.save(net, folder / "full.pt")
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (train.x[:2],), dynamic_shapes=({0: batch},)), folder / "net.pt2")
    torch.export.save(torch.export.export(net, (train.x[:1],)), folder / "net_b1.pt2")
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still have such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), folder / "scripted.pt")
        torch.jit.save(torch.jit.trace(net, train.x[:2]), folder / "traced.pt")
    return {
        "net": net,
        "spec": f"{source}:ResBNNet",
        "source": source,
        "safetensors": files["w.safetensors"],
        "state_dict": files["w.pt"],
        "checkpoint": files["ckpt.pt"],
        "pickle": files["full.pt"],
        "exported": files["net.pt2"],
        "exported_b1": folder / "net_b1.pt2",
        "scripted": folder / "scripted.pt",
        "traced": folder / "traced.pt",
    }


def pytest_collection_modifyitems(config, items):
    """Tests marked ``@pytest.mark.cuda`` need a CUDA GPU: skipped, with the reason, on a machine without one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


class RowwiseMLP(nn.Module):
    """A ReLU MLP in float64 whose arithmetic is per row (elementwise products and sums, no GEMM)."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(a.weight.detach().double().clone()) for a in layers])
        self.biases = nn.ParameterList([nn.Parameter(a.bias.detach().double().clone()) for a in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1).double()
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = (z[:, None, :] * w).sum(-1) + b
            if i < len(self.weights) - 1:
                z = torch.relu(z)
        return z


@pytest.fixture(scope="session")
def rowwise_mlp_model(mlp_model) -> Classifier:
    """``mlp_model``'s weights in float64, computed row by row: outcomes of per-example attacks are batch-free."""
    return _clf(RowwiseMLP([mlp_model.module[1], mlp_model.module[3]]))


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    """A model folder (softmax regression on 400 digits, trained here) as ``advlab train`` would write it."""
    from advlab.data import load_dataset
    from advlab.zoo import build_classifier, save_model

    data = load_dataset("digits", split="train", n=400)
    clf = build_classifier("softmax-regression", (1, 8, 8), 10, seed=0)
    opt = torch.optim.Adam(clf.parameters(), lr=0.1)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(data.x), data.y).backward()
        opt.step()
    clf.eval()
    path = tmp_path_factory.mktemp("model") / "m"
    save_model(clf, path, dataset="digits", seed=0)
    return path


class _ResidualBlock(nn.Module):
    """``h + fc2(relu(fc1(h)))``, with ``shortcut = None`` (the identity) as the zoo's ``PreActBlock`` marks it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = _linear(width, width)
        self.fc2 = _linear(width, width)
        self.shortcut = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.relu(self.fc1(h)))


@pytest.fixture(scope="session")
def residual_mlp_model(digits, digits_batch) -> Classifier:
    """The MLP with a residual block after its hidden layer, trained the same way (for SGM's conformance)."""
    net = nn.Sequential(nn.Flatten(), _linear(64, 64), nn.ReLU(), _ResidualBlock(64), _linear(64, NUM_CLASSES))
    _train(net, digits["x_train"], digits["y_train"], steps=300, lr=0.01, seed=1)
    clf = _clf(net)
    x, y = digits_batch
    with torch.no_grad():
        assert bool((clf(x).argmax(1) == y).all()), "the conformance batch must be classified correctly"
    return clf
