"""Architectures of advlab.zoo: output shapes, parameter counts from hand formulas, closed-form outputs, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from advlab.zoo import ARCHS, count_parameters, create, list_archs
from advlab.zoo.base import resolve_kwargs

DIGITS, MNIST, CIFAR = (1, 8, 8), (1, 28, 28), (3, 32, 32)
N = 3


def _x(shape, n=N, seed=1):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- shapes
CASES = [
    ("softmax-regression", (64,), 10),
    ("softmax-regression", DIGITS, 10),
    ("softmax-regression", CIFAR, 10),
    ("logistic-regression", MNIST, 2),
    ("logistic-regression", (64,), 2),
    ("mlp", DIGITS, 10),
    ("mlp", MNIST, 10),
    ("mlp", CIFAR, 10),
    ("maxout", DIGITS, 10),
    ("maxout", MNIST, 10),
    ("rbf", DIGITS, 10),
    ("rbf", MNIST, 10),
    ("rbf", CIFAR, 10),
    ("wong-cnn", DIGITS, 10),
    ("wong-cnn", MNIST, 10),
    ("wong-cnn", CIFAR, 10),
    ("madry-cnn", DIGITS, 10),
    ("madry-cnn", MNIST, 10),
    ("madry-cnn", CIFAR, 10),
    ("cifar-cnn", MNIST, 10),
    ("cifar-cnn", CIFAR, 10),
    ("cifar-cnn", CIFAR, 7),
]


@pytest.mark.parametrize("name,shape,classes", CASES)
def test_logits_shape(name, shape, classes):
    net = create(name, input_shape=shape, num_classes=classes).eval()
    with torch.no_grad():
        out = net(_x(shape))
    assert out.shape == (N, classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_preact_resnet18_shapes_and_parameter_count():
    # conv stem, 4 stages of 2 pre-activation blocks, final BN, linear: counted by hand
    def block(cin, cout, stride):
        n = 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout  # bn1, conv1, bn2, conv2 (no conv bias)
        return n + (cin * cout if stride != 1 or cin != cout else 0)  # 1x1 shortcut

    def expected(c, classes):
        n = 9 * c * 64
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            n += block(cin, cout, stride) + block(cout, cout, 1)
            cin = cout
        return n + 2 * 512 + 512 * classes + classes

    net = create("preact-resnet18", input_shape=CIFAR, num_classes=10).eval()
    assert count_parameters(net) == expected(3, 10) == 11_172_170
    with torch.no_grad():
        assert net(_x(CIFAR, n=2)).shape == (2, 10)


# ---------------------------------------------------------------------- parameter counts
def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _fc(din, dout):
    return din * dout + dout


def test_wong_cnn_parameter_count():
    def expected(c, side, classes):
        s = side // 4  # two stride-2 convolutions with kernel 4, padding 1 halve the side twice
        return _conv(c, 16, 4) + _conv(16, 32, 4) + _fc(32 * s * s, 100) + _fc(100, classes)

    assert count_parameters(create("wong-cnn", MNIST, 10)) == expected(1, 28, 10) == 166_406
    assert count_parameters(create("wong-cnn", DIGITS, 10)) == expected(1, 8, 10)
    assert count_parameters(create("wong-cnn", CIFAR, 10)) == expected(3, 32, 10)


def test_madry_cnn_parameter_count():
    def expected(c, side, classes):
        s = side // 4  # two 2x2 max-pools; the 5x5 convolutions are padded by 2
        return _conv(c, 32, 5) + _conv(32, 64, 5) + _fc(64 * s * s, 1024) + _fc(1024, classes)

    # 832 + 51,264 + 3,212,288 + 10,250
    assert count_parameters(create("madry-cnn", MNIST, 10)) == expected(1, 28, 10) == 3_274_634
    assert count_parameters(create("madry-cnn", CIFAR, 10)) == expected(3, 32, 10)


def test_cifar_cnn_parameter_count_and_mnist_variant():
    # valid 3x3 convs: 32 -> 30 -> 28 -> pool 14 -> 12 -> 10 -> pool 5, so 128 * 5 * 5 = 3200 features
    cifar = _conv(3, 64, 3) + _conv(64, 64, 3) + _conv(64, 128, 3) + _conv(128, 128, 3)
    cifar += _fc(3200, 256) + _fc(256, 256) + _fc(256, 10)
    assert count_parameters(create("cifar-cnn", CIFAR, 10)) == cifar == 1_147_978
    # C&W's MNIST model: 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4
    mnist = _conv(1, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 64, 3)
    mnist += _fc(64 * 4 * 4, 200) + _fc(200, 200) + _fc(200, 10)
    net = create("cifar-cnn", MNIST, 10, channels=(32, 32, 64, 64), hidden=(200, 200))
    assert count_parameters(net) == mnist


def test_maxout_parameter_count_paper_defaults():
    # Goodfellow et al. 2013 MNIST: 2 maxout layers of 240 units x 5 pieces, then softmax
    expected = _fc(784, 240 * 5) + _fc(240, 240 * 5) + _fc(240, 10)
    assert count_parameters(create("maxout", MNIST, 10)) == expected


# ---------------------------------------------------------------------- closed forms
def test_softmax_regression_is_affine():
    net = create("softmax-regression", DIGITS, 10)
    lin = net[1]
    x = _x(DIGITS)
    torch.testing.assert_close(net(x), x.reshape(N, -1) @ lin.weight.T + lin.bias)


def test_logistic_regression_returns_zero_and_score():
    net = create("logistic-regression", MNIST, 2)
    x = _x(MNIST)
    w, b = net.linear.weight.detach().flatten(), net.linear.bias.detach()
    z = x.reshape(N, -1) @ w + b
    out = net(x).detach()
    assert torch.equal(out[:, 0], torch.zeros(N))
    torch.testing.assert_close(out[:, 1], z)
    torch.testing.assert_close(out.softmax(1)[:, 1], torch.sigmoid(z))  # the logistic model's probability


def test_logistic_regression_needs_two_classes():
    with pytest.raises(ValueError, match="num_classes=2"):
        create("logistic-regression", MNIST, 10)


def test_rbf_matches_closed_form():
    d, c = 64, 10
    net = create("rbf", DIGITS, c)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net.centers.copy_(torch.rand(c, d, generator=g))
        net.raw_precision.copy_(torch.randn(c, d, generator=g) * 3)  # includes very negative raw values
        net.bias.copy_(torch.randn(c, generator=g))
    x = _x(DIGITS, n=5).double().reshape(5, d)
    w = net.centers.detach().double()
    beta = torch.log1p(torch.exp(net.raw_precision.detach().double()))  # softplus, written out
    b = net.bias.detach().double()
    expected = torch.empty(5, c, dtype=torch.float64)
    for n in range(5):
        for k in range(c):
            expected[n, k] = -(beta[k] * (x[n] - w[k]) ** 2).sum() + b[k]
    got = net(x.float().reshape(5, *DIGITS)).detach().double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert (net.precision > 0).all()
    # the logit is maximal (= b_c) exactly at the class centre
    at_centre = net(net.centers.detach()[2:3].reshape(1, *DIGITS)).detach()
    torch.testing.assert_close(at_centre[0, 2], net.bias.detach()[2], atol=1e-5, rtol=0)


def test_rbf_initialisation():
    net = create("rbf", MNIST, 10)
    torch.testing.assert_close(net.precision, torch.full((10, 784), 1 / 784))
    net2 = create("rbf", MNIST, 10, init_precision=0.5)
    torch.testing.assert_close(net2.precision, torch.full((10, 784), 0.5))
    with pytest.raises(ValueError, match="init_precision"):
        create("rbf", MNIST, 10, init_precision=0.0)


def test_maxout_matches_manual_max_over_pieces():
    net = create("maxout", DIGITS, 10, units=(6, 4), pieces=3).eval()  # eval: dropout off
    x = _x(DIGITS).reshape(N, -1)
    h = x
    for layer in (net[2], net[4]):
        w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
        units = []
        for j in range(layer.units):
            pieces = [h @ w[j * layer.pieces + p] + b[j * layer.pieces + p] for p in range(layer.pieces)]
            units.append(torch.stack(pieces, 1).max(1).values)
        h = torch.stack(units, 1)
    out_layer = net[6]
    expected = h @ out_layer.weight.detach().T + out_layer.bias.detach()
    torch.testing.assert_close(net(x.reshape(N, *DIGITS)).detach(), expected)


def test_maxout_dropout_only_in_train_mode():
    net = create("maxout", DIGITS, 10, units=(16,), pieces=2, dropout=0.5, input_dropout=0.2)
    x = _x(DIGITS, n=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        train_out = net.train()(x)
    eval_out = net.eval()(x)
    assert not torch.allclose(train_out, eval_out)
    assert torch.equal(net(x), eval_out)


def test_mlp_matches_manual_forward():
    net = create("mlp", DIGITS, 10, hidden=(7, 5))
    x = _x(DIGITS).reshape(N, -1)
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in lin] == [7, 5, 10]
    h = x
    for m in lin[:-1]:
        h = F.relu(h @ m.weight.T + m.bias)
    torch.testing.assert_close(net(x.reshape(N, *DIGITS)), h @ lin[-1].weight.T + lin[-1].bias)
    assert count_parameters(create("mlp", DIGITS, 10, hidden=())) == _fc(64, 10)


def test_wong_and_madry_layer_hyperparameters():
    wong = create("wong-cnn", MNIST, 10)
    convs = [m for m in wong if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.stride, m.padding) for m in convs] == [
        (16, (4, 4), (2, 2), (1, 1)),
        (32, (4, 4), (2, 2), (1, 1)),
    ]
    madry = create("madry-cnn", MNIST, 10)
    convs = [m for m in madry if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.padding) for m in convs] == [(32, (5, 5), (2, 2)), (64, (5, 5), (2, 2))]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in madry) == 2


# ---------------------------------------------------------------------- input-shape limits
@pytest.mark.parametrize(
    "name,smallest",
    [("wong-cnn", 4), ("madry-cnn", 4), ("cifar-cnn", 16), ("preact-resnet18", 9)],
)
def test_smallest_input_runs_and_one_smaller_is_refused(name, smallest):
    with torch.no_grad():
        net = create(name, (1, smallest, smallest), 3).eval()
        assert net(torch.rand(2, 1, smallest, smallest)).shape == (2, 3)
    with pytest.raises(ValueError, match=f"{name} needs images of at least {smallest}x{smallest}"):
        create(name, (1, smallest - 1, smallest - 1), 3)


def test_cifar_architectures_refuse_digits():
    for name in ("cifar-cnn", "preact-resnet18"):
        with pytest.raises(ValueError, match=r"got 8x8"):
            create(name, DIGITS, 10)


@pytest.mark.parametrize("name", ["wong-cnn", "madry-cnn", "cifar-cnn", "preact-resnet18"])
def test_cnn_needs_image_shape(name):
    with pytest.raises(ValueError, match=r"needs images \(C, H, W\).*\(1, 8, 8\)"):
        create(name, (64,), 10)


# ---------------------------------------------------------------------- registry and arguments
def test_registry_lists_every_arch_with_its_source():
    assert list_archs() == sorted(
        [
            "softmax-regression",
            "logistic-regression",
            "mlp",
            "maxout",
            "rbf",
            "wong-cnn",
            "madry-cnn",
            "cifar-cnn",
            "preact-resnet18",
        ]
    )
    for name, spec in ARCHS.items():
        assert spec.name == name
        assert "arXiv:" in spec.paper and spec.summary
        assert spec.dataset in spec.datasets
        assert "arXiv:" in (spec.constructor.__doc__ or "")
        kwargs = resolve_kwargs(name, {})
        assert json.loads(json.dumps(kwargs)) == kwargs  # the card can store the defaults as they are


def test_unknown_name_and_kwargs():
    with pytest.raises(ValueError, match="Did you mean 'wong-cnn'"):
        create("wong_cnn", MNIST, 10)
    with pytest.raises(ValueError, match=r"mlp does not take 'width'; it accepts: hidden"):
        create("mlp", MNIST, 10, width=3)


@pytest.mark.parametrize(
    "shape,classes,exc,match",
    [
        ((1, 28, 28), 1, ValueError, "num_classes"),
        ((1, 28, 28), 2.0, TypeError, "num_classes"),
        ("1x28x28", 10, TypeError, "input_shape"),
        ((1, 0, 28), 10, ValueError, r"input_shape\[1\]"),
        ((), 10, ValueError, "input_shape"),
    ],
)
def test_bad_arguments(shape, classes, exc, match):
    with pytest.raises(exc, match=match):
        create("mlp", shape, classes)


def test_bad_arch_kwargs():
    with pytest.raises(TypeError, match="hidden"):
        create("mlp", MNIST, 10, hidden=256)
    with pytest.raises(ValueError, match=r"hidden\[1\]"):
        create("mlp", MNIST, 10, hidden=(256, 0))
    with pytest.raises(ValueError, match="dropout"):
        create("maxout", MNIST, 10, dropout=1.0)
    with pytest.raises(ValueError, match="4 convolutions"):
        create("cifar-cnn", CIFAR, 10, channels=(8, 8))


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = create("wong-cnn", MNIST, 10, seed=5)
    b = create("wong-cnn", MNIST, 10, seed=5)
    c = create("wong-cnn", MNIST, 10, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (_, vb), (_, _vc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a[0].weight, c[0].weight)
    with torch.random.fork_rng():
        create("wong-cnn", MNIST, 10, seed=None)  # plain PyTorch behaviour: draws from the global RNG
        assert not torch.equal(torch.get_rng_state(), state)
