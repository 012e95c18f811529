"""Reduced precision, channels-last and compilation of a Classifier's forwards, without lying about the results.

The independent oracle throughout is the plain module called in float32: what an attack reports as a success must
be what that module says of the returned point, whatever precision the attack's own forwards ran at. A model built
so that bfloat16 rounding alone flips its prediction checks that a reduced-precision flip is never counted.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from torch import nn

import advlab
from advlab import Classifier, devices
from advlab.attacks import ATTACKS, FGSM, PGD, apgd, attack_in_batches, make_attack, pgd
from advlab.attacks.base import shortened
from advlab.cli import main
from advlab.data import load_dataset
from advlab.models import predict
from advlab.threat import ThreatModel


def _conv_net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.05))
    return net


@pytest.fixture(scope="module")
def conv_model(digits) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small convolutional network trained on digits (eval mode), with 120 test images."""
    net = _conv_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = digits["x_train"], digits["y_train"]
    for _ in range(60):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    return net, digits["x_test"][:120], digits["y_test"][:120]


def _fp32_success(net: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.as_tensor(x_adv)).argmax(1) != y


# ---------------------------------------------------------------------- bf16 on CPU
def test_fp32_default_is_the_module_itself(conv_model):
    net, x, _ = conv_model
    clf = Classifier(net, num_classes=10)
    assert clf.speed() == {"precision": "fp32", "channels_last": False, "cpu_channels_last": True, "compile": False}
    with torch.no_grad():
        assert torch.equal(clf(x), net(x))
        with devices.full_precision():
            assert torch.equal(clf(x), net(x))


@pytest.mark.parametrize("attack", [PGD(steps=10), PGD(steps=10, loss="dlr")])
def test_bf16_attack_is_finite_and_its_success_is_the_fp32_one(conv_model, attack):
    net, x, y = conv_model
    clf = Classifier(net, num_classes=10, input_shape=(1, 8, 8), precision="bf16")
    with torch.no_grad():
        assert clf(x).dtype == torch.float32  # float32 logits out of a bf16 forward
        assert not torch.equal(clf(x), net(x))  # which really ran in bf16
    threat = ThreatModel("linf", 0.1)
    r = attack_in_batches(attack, clf, x, y, threat, batch_size=64, seed=0)
    assert r.x_adv.dtype == torch.float32 and bool(torch.isfinite(r.x_adv).all())
    assert bool(torch.isfinite(r.logits).all())
    assert bool(threat.contains(r.x_adv, x).all())
    assert torch.equal(r.success, _fp32_success(net, r.x_adv, y))  # the oracle: the module in float32
    with torch.no_grad():
        assert torch.equal(r.logits, net(r.x_adv))  # the reported logits are the float32 ones
        assert torch.equal(r.correct, net(x).argmax(1) == y)
    # and the attack is about as strong as in float32
    r32 = attack_in_batches(attack, Classifier(net, num_classes=10), x, y, threat, batch_size=64, seed=0)
    assert abs(float(r.success.float().mean()) - float(r32.success.float().mean())) <= 0.05


@pytest.mark.parametrize("name", sorted(name for name, _ in ATTACKS.items()))
def test_every_attack_in_bf16_reports_the_fp32_success(name, mlp_model, digits, request):
    """Each registered attack (shortened: 2 steps, 20 queries...) on a bf16 MLP: finite points, fp32 success."""
    if name == "sgm":  # SGM attacks residual networks: the MLP with a residual block
        mlp_model = request.getfixturevalue("residual_mlp_model")
    config = make_attack(name)
    norm = config.norms[0]
    clf = Classifier(mlp_model.module, num_classes=10, input_shape=(1, 8, 8), precision="bf16")
    x, y = digits["x_test"][:16], digits["y_test"][:16]
    r = shortened(config)(clf, x, y, ThreatModel(norm, {"linf": 0.1, "l2": 1.0, "l1": 4.0, "l0": 4}[norm]))
    assert bool(torch.isfinite(torch.as_tensor(r.x_adv)).all())
    assert torch.equal(torch.as_tensor(r.success), _fp32_success(mlp_model.module, r.x_adv, y))


def _bf16_flip_model() -> Classifier:
    """Logits ``[x, x + 1e-3]`` of one input in [0.5, 1): class 1 in float32, but bfloat16 (8 significant bits,
    spacing 2**-8 there) rounds ``x + 1e-3`` to ``x``, and the tie makes it class 0: a success no float32 forward
    confirms."""
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.ones(2, 1))
        lin.bias.copy_(torch.tensor([0.0, 1e-3]))
    return Classifier(lin.eval(), bounds=(0.5, 0.99), num_classes=2, input_shape=(1,), precision="bf16")


def test_a_flip_that_only_bf16_rounding_makes_is_not_a_success():
    clf = _bf16_flip_model()
    x = torch.linspace(0.6, 0.9, 16).reshape(-1, 1)
    y = torch.ones(16, dtype=torch.long)
    threat = ThreatModel("linf", 0.05)
    with torch.no_grad():  # the construction holds: bf16 says class 0 everywhere in the ball, float32 class 1
        for x_try in (x - 0.05, x, x + 0.05):
            with devices.autocast("cpu", "bf16"):
                assert bool((clf.module(x_try).argmax(1) == 0).all())
            assert bool((clf.module(x_try).argmax(1) == 1).all())
    for attack in (FGSM(), PGD(steps=5)):
        with pytest.warns(UserWarning, match="gradient is zero"):
            r = attack(clf, x, y, threat)
        assert not bool(r.success.any())  # bf16 would call every example a success
        assert bool(r.correct.all()) and bool((r.logits.argmax(1) == 1).all())
    # and so through an autocast of the caller's own, and through predict
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(UserWarning, match="gradient is zero"):
        assert not bool(pgd(clf, x, y, threat, steps=3).success.any())
    assert torch.equal(predict(clf, x), y)


def test_evaluate_counts_fp32_predictions_only():
    clf = _bf16_flip_model()
    x = torch.linspace(0.6, 0.9, 16).reshape(-1, 1)
    y = torch.ones(16, dtype=torch.long)
    with pytest.warns(UserWarning):
        report = advlab.evaluate(clf, (x, y), 0.05, attacks=["pgd"], progress=False, checks=False)
    assert report.clean_accuracy == 1.0 and report.robust_accuracy(0.05) == 1.0


class AutocastRecorder(nn.Module):
    """``net``, recording per forward whether the input needs a gradient and whether CPU autocast is on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.requires_grad, torch.is_autocast_enabled("cpu")))
        return self.net(x)


def test_evaluate_in_bf16_runs_gradient_free_attacks_at_full_precision(mlp_model, digits):
    """bf16 logits hide the small score improvements Square climbs by: evaluate runs it in fp32."""
    recorder = AutocastRecorder(mlp_model.module)
    clf = Classifier(recorder, num_classes=10, input_shape=(1, 8, 8), precision="bf16").eval()
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    attacks = [make_attack("apgd-ce", steps=5), make_attack("square", max_queries=50)]
    with pytest.warns(UserWarning, match="the gradient attacks run in bf16 .autocast.*publish an fp32 figure"):
        advlab.evaluate(clf, (x, y), 0.1, attacks=attacks, progress=False, checks=False)
    gradient_forwards = {autocast for needs_grad, autocast in recorder.calls if needs_grad}
    assert gradient_forwards == {True}  # APGD ran in bf16
    square = make_attack("square", max_queries=50)
    recorder.calls.clear()
    advlab.evaluate(clf, (x, y), 0.1, attacks=[square], progress=False, checks=False)
    bf16_queries = sum(autocast for needs_grad, autocast in recorder.calls if not needs_grad)
    assert bf16_queries <= 2  # the randomness probe's two calls, before the cascade; Square's queries were fp32
    assert sum(not autocast for _, autocast in recorder.calls) >= 50
    recorder.calls.clear()
    make_attack("square", max_queries=30)(clf, x, y, ThreatModel("linf", 0.1))  # and so when called directly
    assert len(recorder.calls) >= 10 and not any(autocast for _, autocast in recorder.calls)


def test_fp16_refused_on_cpu():
    clf = Classifier(nn.Linear(4, 3), num_classes=3, precision="fp16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device, and the model is on cpu; use bf16"):
        clf(torch.rand(2, 4))
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, fp16, got 'fp8'"):
        Classifier(nn.Linear(4, 3), precision="fp8")


# ---------------------------------------------------------------------- channels-last
def test_channels_last_gives_the_contiguous_results(conv_model):
    net, x, y = conv_model
    fast = Classifier(copy.deepcopy(net), num_classes=10, channels_last=True)
    assert fast.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    fast.module[0].register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    plain = Classifier(net, num_classes=10)
    xg = x.clone().requires_grad_(True)
    assert torch.allclose(fast(xg), plain(xg), atol=1e-5) and seen == [True]
    g_fast = torch.autograd.grad(nn.functional.cross_entropy(fast(xg), y), xg)[0]
    g_plain = torch.autograd.grad(nn.functional.cross_entropy(plain(xg), y), xg)[0]
    assert torch.allclose(g_fast, g_plain, atol=1e-6) and g_fast.is_contiguous()
    threat = ThreatModel("linf", 0.1)
    r_fast = attack_in_batches(PGD(steps=10), fast, x, y, threat, seed=1)
    r_plain = attack_in_batches(PGD(steps=10), plain, x, y, threat, seed=1)
    assert r_fast.x_adv.is_contiguous()
    # float rounding may move a sign of the gradient where it is ~0: the outcomes agree up to an example or two
    assert int((r_fast.success != r_plain.success).sum()) <= 2
    moved = (r_fast.x_adv - r_plain.x_adv).abs().flatten(1).amax(1) > 1e-5
    assert float(moved.float().mean()) <= 0.1
    assert torch.equal(r_fast.success, _fp32_success(net, r_fast.x_adv, y))
    fast.speed_up(channels_last=False)  # back to contiguous weights
    assert fast.module[0].weight.is_contiguous()


# ---------------------------------------------------------------------- compile
def _aot_eager(monkeypatch):
    """torch.compile through dynamo and AOTAutograd without inductor's C++ build: the same path, seconds faster."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real(module, backend="aot_eager"))


def test_compile_gives_the_same_results(conv_model, monkeypatch):
    _aot_eager(monkeypatch)
    net, x, y = conv_model
    clf = Classifier(copy.deepcopy(net), num_classes=10, compile=True)
    plain = Classifier(net, num_classes=10)
    threat = ThreatModel("linf", 0.1)
    r = pgd(clf, x[:32], y[:32], threat, steps=3)
    r_plain = pgd(plain, x[:32], y[:32], threat, steps=3)
    assert clf.speed()["compile"] is True and clf._compiled is not None
    assert torch.allclose(r.x_adv, r_plain.x_adv, atol=1e-6) and torch.equal(r.success, r_plain.success)
    assert set(clf.state_dict()) == set(plain.state_dict())  # the compiled module is not a second copy
    clone = copy.deepcopy(clf)  # a copy compiles its own module at its first call
    assert clone._compiled is None and torch.allclose(clone(x[:4]), plain(x[:4]), atol=1e-6)


def test_compile_that_fails_runs_uncompiled_with_a_note(conv_model, monkeypatch, caplog):
    net, x, y = conv_model

    class Broken(nn.Module):
        def forward(self, z):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda module: Broken())
    clf = Classifier(net, num_classes=10, compile=True)
    with caplog.at_level(logging.WARNING, logger="advlab.devices"):
        r = pgd(clf, x[:16], y[:16], ThreatModel("linf", 0.1), steps=2)
    notes = [rec.getMessage() for rec in caplog.records if "compile" in rec.getMessage()]
    assert notes == [
        "compile: torch.compile failed (RuntimeError: InvalidCxxCompiler: no working C++ compiler found); "
        "running the model uncompiled"
    ]
    assert clf.speed()["compile"] is False
    assert torch.equal(r.success, _fp32_success(net, r.x_adv, y[:16]))


def test_compile_unsupported_platform_is_a_note(monkeypatch, caplog):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    clf = Classifier(nn.Linear(4, 3), num_classes=3, compile=True)
    with caplog.at_level(logging.WARNING, logger="advlab.devices"):
        clf(torch.rand(2, 4))
    assert "torch.compile does not run on this Python/platform; running the model uncompiled" in caplog.text
    assert clf.speed()["compile"] is False


# ---------------------------------------------------------------------- the CLI
def _model_args(user_model) -> list[str]:
    return ["--model", user_model["spec"], "--weights", str(user_model["safetensors"]), "--data", "digits"]


def test_cli_attack_bf16_channels_last_auto_batch(user_model, tmp_path):
    argv = ["attack", *_model_args(user_model), "--attack", "pgd", "--steps", "5", "--eps", "0.1", "--n", "40"]
    speed = ["--precision", "bf16", "--channels-last", "--batch-size", "auto", "--quiet", "--out", str(tmp_path)]
    assert main([*argv, *speed]) == 0
    res = json.loads((tmp_path / "result.json").read_text())
    expected = {"precision": "bf16", "channels_last": True, "cpu_channels_last": True, "compile": False}
    expected |= {"batch_size": 40, "batch_size_auto": True}
    assert res["speed"] == expected and res["provenance"]["speed"] == expected
    # the same numbers as the Python API with the same settings, success judged by the float32 module
    data = load_dataset("digits", split="test", n=40)
    net = copy.deepcopy(user_model["net"])
    clf = Classifier(net, num_classes=10, input_shape=(1, 8, 8), precision="bf16", channels_last=True)
    r = attack_in_batches(PGD(steps=5), clf, data.x, data.y, ThreatModel("linf", 0.1), batch_size=40, seed=0)
    with torch.no_grad():
        robust = (user_model["net"](data.x).argmax(1) == data.y) & (user_model["net"](r.x_adv).argmax(1) == data.y)
    assert res["robust_accuracy"] == float(robust.double().mean())


def test_cli_evaluate_records_precision(user_model, tmp_path):
    argv = ["evaluate", *_model_args(user_model), "--eps", "0.1", "--n", "24", "--preset", "fast", "--no-checks"]
    assert main([*argv, "--precision", "bf16", "--batch-size", "auto", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    speed = {"precision": "bf16", "channels_last": False, "cpu_channels_last": True, "compile": False}
    speed |= {"batch_size": 24, "batch_size_auto": True}
    assert {k: report["settings"][k] for k in speed} == speed and report["provenance"]["speed"] == speed


def test_cli_refuses_fp16_on_cpu_and_speed_options_for_a_target(user_model, tmp_path, capsys):
    argv = ["attack", *_model_args(user_model), "--eps", "0.1", "--n", "8", "--device", "cpu"]
    assert main([*argv, "--precision", "fp16", "--out", str(tmp_path)]) == 2
    assert "--precision: fp16 needs a CUDA device, and the model is on cpu; use bf16" in capsys.readouterr().err
    target = ["evaluate", "--target", "http://127.0.0.1:9", "--data", "digits", "--eps", "0.1", "--precision", "bf16"]
    assert main([*target, "--out", str(tmp_path)]) == 2
    assert "a --target URL runs on its server" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse refuses the value
        main([*argv, "--batch-size", "many", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "expected a whole number >= 1 or auto, got 'many'" in capsys.readouterr().err


# ---------------------------------------------------------------------- on a GPU (skipped without one)
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_reduced_precision_success_is_fp32(conv_model, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    net, x, y = conv_model
    net = copy.deepcopy(net).cuda()
    x, y = x.cuda(), y.cuda()
    clf = Classifier(net, num_classes=10, precision=precision, channels_last=True)
    r = attack_in_batches(PGD(steps=10), clf, x, y, ThreatModel("linf", 0.1), batch_size=64, seed=0)
    assert bool(torch.isfinite(r.x_adv).all()) and r.x_adv.dtype == torch.float32
    assert torch.equal(r.success, _fp32_success(net, r.x_adv, y))
    r_apgd = apgd(clf, x, y, ThreatModel("linf", 0.1), steps=10)
    assert torch.equal(r_apgd.success, _fp32_success(net, r_apgd.x_adv, y))


@pytest.mark.cuda
@pytest.mark.parametrize(("precision", "bias"), [("bf16", 1e-3), ("fp16", 1e-4)])
def test_cuda_a_reduced_precision_flip_is_not_a_success(precision, bias):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.ones(2, 1))
        lin.bias.copy_(torch.tensor([0.0, bias]))
    clf = Classifier(lin.eval().cuda(), bounds=(0.5, 0.99), num_classes=2, input_shape=(1,), precision=precision)
    x = torch.linspace(0.6, 0.9, 16, device="cuda").reshape(-1, 1)
    y = torch.ones(16, dtype=torch.long, device="cuda")
    with torch.no_grad(), devices.autocast("cuda", precision):
        assert bool((clf.module(x).argmax(1) == 0).all())  # the reduced-precision forward says: success
    with pytest.warns(UserWarning, match="gradient is zero"):
        r = FGSM()(clf, x, y, ThreatModel("linf", 0.05))
    assert not bool(r.success.any())


@pytest.mark.cuda
def test_cuda_channels_last_and_compile_match(conv_model):
    net, x, y = conv_model
    plain = Classifier(copy.deepcopy(net).cuda(), num_classes=10)
    fast = Classifier(copy.deepcopy(net).cuda(), num_classes=10, channels_last=True, compile=True)
    x, y = x.cuda(), y.cuda()
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-4)
    r = pgd(fast, x, y, ThreatModel("linf", 0.1), steps=5)
    assert torch.equal(r.success, _fp32_success(plain.module, r.x_adv, y))
