"""Classifier: normalisation inside the wrapper, attack mode that restores state, warnings on suspicious models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab import Classifier, ThreatModel
from advlab.attacks import fgsm, pgd
from advlab.models import (
    CHUNK_ACTIVATION_BYTES,
    CHUNK_MIN_EXAMPLES,
    CPU_CHUNK_MAX_THREADS,
    as_classifier,
    check_suspicious_outputs,
)


class _Identity(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def test_normalisation_equals_manual_per_channel():
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    clf = Classifier(_Identity(), mean=mean, std=std)
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(clf(x), manual.reshape(4, -1))
    torch.testing.assert_close(clf.normalize(x), manual)
    # single value broadcasts over channels; no normalisation is the identity
    one = Classifier(_Identity(), mean=[0.5], std=[0.25])
    torch.testing.assert_close(one(x), ((x - 0.5) / 0.25).reshape(4, -1))
    assert torch.equal(Classifier(_Identity())(x), x.reshape(4, -1))


def test_eps_is_in_raw_units_with_normalisation(normalized_mlp_model, mlp_model, digits_batch):
    """The normalised wrapper computes the same function, so an attack gives the same result in raw space."""
    x, y = digits_batch
    with torch.no_grad():
        torch.testing.assert_close(normalized_mlp_model(x), mlp_model(x), rtol=1e-4, atol=1e-4)
    threat = ThreatModel("linf", 0.1)
    a = fgsm(normalized_mlp_model, x, y, threat)
    b = fgsm(mlp_model, x, y, threat)
    assert float((a.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float((a.x_adv != b.x_adv).float().mean()) < 0.01  # equal up to sign flips of ~0 gradients


def test_attack_mode_sets_eval_and_freezes_then_restores():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Linear(4, 2))
    clf = Classifier(net)
    clf.train()
    net[1].eval()  # a mixed state
    params = list(clf.parameters())
    params[0].requires_grad_(False)
    modes = {m: m.training for m in clf.modules()}
    flags = [p.requires_grad for p in params]
    with pytest.warns(UserWarning, match="train mode"), clf.attack_mode() as inner:
        assert inner is clf
        assert not any(m.training for m in clf.modules())
        assert not any(p.requires_grad for p in params)
    assert {m: m.training for m in clf.modules()} == modes
    assert [p.requires_grad for p in params] == flags


def test_attack_mode_restores_after_an_exception():
    clf = Classifier(nn.Linear(3, 2)).train()
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="boom"), clf.attack_mode():
        raise RuntimeError("boom")
    assert clf.training and all(p.requires_grad for p in clf.parameters())


def test_eval_model_does_not_warn():
    clf = Classifier(nn.Linear(3, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with clf.attack_mode():
            pass


def test_probability_outputs_warn(digits_batch, mlp_model):
    probs = nn.Sequential(mlp_model.module, nn.Softmax(dim=1))
    clf = Classifier(probs, num_classes=10).eval()
    x, y = digits_batch
    with pytest.warns(UserWarning, match="look like probabilities"):
        pgd(clf, x, y, ThreatModel("linf", 0.1), steps=2)
    with pytest.warns(UserWarning, match="probabilities"):
        check_suspicious_outputs(torch.softmax(torch.randn(5, 3), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_suspicious_outputs(torch.randn(5, 3))  # logits: silent
        check_suspicious_outputs(torch.rand(5, 1))  # one output: nothing to say


def test_predict_and_device(mlp_model, digits):
    x = digits["x_test"]
    with torch.no_grad():
        expected = mlp_model(x).argmax(1)
    assert torch.equal(mlp_model.predict(x, batch_size=7), expected)
    assert mlp_model.device == torch.device("cpu")
    assert Classifier(nn.ReLU()).device == torch.device("cpu")  # no parameters


def test_as_classifier():
    clf = Classifier(nn.Linear(3, 2))
    assert as_classifier(clf) is clf
    wrapped = as_classifier(nn.Linear(3, 2), bounds=(-1.0, 1.0))
    assert isinstance(wrapped, Classifier) and wrapped.bounds == (-1.0, 1.0) and not wrapped.has_normalization
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        as_classifier(lambda x: x)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"mean": [0.5]}, ValueError, "mean/std: give both or neither"),
        ({"mean": [0.5, 0.5], "std": [0.2]}, ValueError, "mean/std: expected the same length"),
        ({"mean": [0.5], "std": [0.0]}, ValueError, "std: expected positive values"),
    ],
)
def test_classifier_rejects_bad_normalisation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Classifier(nn.Linear(3, 2), **kwargs)


def test_classifier_rejects_non_modules_and_double_wrapping():
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        Classifier("net")
    with pytest.raises(TypeError, match="module: already a Classifier"):
        Classifier(Classifier(nn.Linear(3, 2)))


def test_normalisation_buffers_follow_the_module_and_are_not_saved():
    clf = Classifier(nn.Linear(3, 2), mean=[0.1], std=[0.2])
    assert "mean" not in clf.state_dict() and "std" not in clf.state_dict()
    assert clf.mean.dtype == torch.float32 and clf.mean.shape == (1,)


class _RecordsBatches(nn.Module):
    """A small conv net that remembers the batch size of every call; its largest activation is the conv's output."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * 8 * 8, 10),
        )  # fmt: skip
        self.largest = channels * 8 * 8 * 4  # bytes of one example's conv output (float32, 8x8 inputs)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.net(x)


def _expected_chunks(n: int, largest: int) -> list[int]:
    """The documented rule, computed here: round(n / k) chunks of nearly equal size, k from the activation bytes."""
    k = max(CHUNK_MIN_EXAMPLES, CHUNK_ACTIVATION_BYTES // largest)
    count = max(1, round(n / k))
    return [n // count + (1 if i < n % count else 0) for i in range(count)]


def test_eval_mode_cpu_forwards_run_in_chunks_sized_by_the_activations_with_the_same_logits_and_gradients():
    net = _RecordsBatches()
    clf = Classifier(net, mean=[0.5], std=[0.25]).eval()
    n = 130
    expected = _expected_chunks(n, net.largest)
    assert expected == [44, 43, 43]  # 128 KiB per example: 48 per chunk, three chunks for 130
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        chunked = clf(x)
        reference = net((x - 0.5) / 0.25)  # the bare module on the whole batch
    assert net.seen == [1, *expected, n]  # one example probes the activations, once per input shape
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)
    # with gradients: the chunks' graphs join, and the input gradient is the whole batch's
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    grads = []
    for model in (clf, lambda v: net((v - 0.5) / 0.25)):
        xg = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
        grads.append(torch.autograd.grad(loss, xg)[0])
    assert net.seen[len(expected) + 2 :] == [*expected, n]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_networks_with_small_activations_run_whole_and_large_ones_in_chunks_of_the_minimum():
    small = _RecordsBatches(channels=4)  # 1 KiB per example: a chunk would hold thousands
    big = _RecordsBatches(channels=2048)  # 512 KiB per example: 12 by the bytes, raised to the minimum
    n = 100
    with torch.no_grad():
        Classifier(small).eval()(torch.rand(n, 1, 8, 8))
        Classifier(big).eval()(torch.rand(n, 1, 8, 8))
    assert small.seen == [1, n]
    assert big.seen == [1, *_expected_chunks(n, big.largest)] == [1, 34, 33, 33]


def _sequence_recording_layers(channels: int = 512) -> tuple[nn.Sequential, list[int], list[int]]:
    """A plain nn.Sequential conv net (conv, BN, ReLU, Flatten, Linear) and the batch sizes its conv and Linear see."""
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.Flatten(),
        nn.Linear(channels * 8 * 8, 10),
    ).eval()  # fmt: skip
    conv_seen: list[int] = []
    linear_seen: list[int] = []
    seq[0].register_forward_hook(lambda _m, inputs, _out: conv_seen.append(inputs[0].shape[0]))
    seq[4].register_forward_hook(lambda _m, inputs, _out: linear_seen.append(inputs[0].shape[0]))
    return seq, conv_seen, linear_seen


def test_a_plain_sequence_runs_its_flat_head_once_on_the_whole_batch():
    seq, conv_seen, linear_seen = _sequence_recording_layers()
    flatten_seen: list[int] = []
    seq[3].register_forward_hook(lambda _m, inputs, _out: flatten_seen.append(inputs[0].shape[0]))
    clf = Classifier(seq).eval()
    n = 130
    expected = _expected_chunks(n, 512 * 8 * 8 * 4)
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = clf(x)
        reference = seq(x)
    # the probe (one example), the chunks up to the Flatten, then the Linear once on all of them; the reference
    assert conv_seen == [1, *expected, n] and linear_seen == [1, n, n]
    assert flatten_seen == [1, *expected, n]  # the Flatten's input is spatial: it runs with the chunks
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grads = []
    for model in (clf, seq):
        xg = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
        grads.append(torch.autograd.grad(loss, xg)[0])
    assert conv_seen[-len(expected) - 1 :] == [*expected, n] and linear_seen[-2:] == [n, n]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_a_sequence_with_hooks_of_its_own_or_its_own_forward_runs_whole_in_each_chunk():
    n = 130
    expected = _expected_chunks(n, 512 * 8 * 8 * 4)
    seq, _conv_seen, linear_seen = _sequence_recording_layers()
    calls: list[int] = []
    seq.register_forward_hook(lambda _m, inputs, _out: calls.append(inputs[0].shape[0]))
    with torch.no_grad():
        Classifier(seq).eval()(torch.rand(n, 1, 8, 8))
    assert calls == [1, *expected] and linear_seen == [1, *expected]  # the hook sees every call it would see

    class Doubled(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    torch.manual_seed(0)
    doubled = Doubled(nn.Conv2d(1, 512, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512 * 64, 10)).eval()
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(Classifier(doubled).eval()(x), doubled(x), rtol=1e-5, atol=1e-5)


class _Shift(nn.Module):
    """A user's normalisation layer in front of the network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.25


def test_a_sequence_inside_a_sequence_is_opened_up_and_its_head_runs_whole():
    inner, conv_seen, linear_seen = _sequence_recording_layers()
    outer = nn.Sequential(_Shift(), inner).eval()  # what wrapping a model behind its normalisation gives
    n = 130
    expected = _expected_chunks(n, 512 * 8 * 8 * 4)
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    clf = Classifier(outer).eval()
    with torch.no_grad():
        out = clf(x)
        reference = outer(x)
    assert conv_seen == [1, *expected, n] and linear_seen == [1, n, n]
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(clf(xg).sum(), xg)
    xr = x.clone().requires_grad_(True)
    (reference_grad,) = torch.autograd.grad(outer(xr).sum(), xr)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-6)

    # A hook put on the inner sequence after the probe makes it a call of its own again: it sees every chunk.
    calls: list[int] = []
    inner.register_forward_hook(lambda _m, inputs, _out: calls.append(inputs[0].shape[0]))
    linear_seen.clear()
    with torch.no_grad():
        torch.testing.assert_close(clf(x), reference, rtol=1e-5, atol=1e-5)
    assert calls == expected and linear_seen == expected


def test_a_module_that_fails_on_one_example_runs_its_batches_whole():
    class NeedsPairs(_RecordsBatches):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] < 2:
                raise ValueError("batch norm in a custom layer needs two examples")
            return super().forward(x)

    net = NeedsPairs()
    with torch.no_grad():
        out = Classifier(net).eval()(torch.rand(130, 1, 8, 8))
    assert net.seen == [130] and out.shape == (130, 10)


def test_forwards_are_not_chunked_with_more_torch_threads_than_chunks_pay_for():
    net = _RecordsBatches()
    clf = Classifier(net).eval()
    n = 130
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(CPU_CHUNK_MAX_THREADS + 1)
        with torch.no_grad():
            clf(torch.rand(n, 1, 8, 8))
        torch.set_num_threads(CPU_CHUNK_MAX_THREADS)
        with torch.no_grad():
            clf(torch.rand(n, 1, 8, 8))
    finally:
        torch.set_num_threads(threads)
    assert net.seen == [n, 1, *_expected_chunks(n, net.largest)]


def test_networks_without_convolutions_are_not_chunked():
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            self.seen: list[int] = []

        def forward(self, x):
            self.seen.append(x.shape[0])
            return self.net(x)

    flat = Flat()
    clf = Classifier(flat).eval()
    assert not clf.chunked and Classifier(_RecordsBatches()).chunked
    with torch.no_grad():
        clf(torch.rand(200, 1, 8, 8))
    assert flat.seen == [200]


def test_train_mode_forwards_are_not_chunked():
    net = _RecordsBatches()
    clf = Classifier(net)
    n = 130
    x = torch.rand(n, 1, 8, 8)
    clf.train()
    with torch.no_grad():  # train mode: batch norm uses the statistics of the whole batch
        clf(x)
    xg = x.clone().requires_grad_(True)
    clf(xg).sum().backward()
    assert net.seen == [n, n]
    assert xg.grad is not None and xg.grad.shape == x.shape


def test_predict_batches_without_gradients_and_keeps_the_input_device():
    from advlab.models import predict

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(10, 2, 4, requires_grad=True)
    whole = net(x).detach()
    for batch in (1, 3, 10, 64):
        torch.testing.assert_close(predict(net, x, batch_size=batch, logits=True), whole)
        assert torch.equal(predict(net, x, batch_size=batch), whole.argmax(1))
    assert not predict(net, x, logits=True).requires_grad
    assert predict(net, x[:0]).shape == (0,)
