"""advlab.devices: precision names and support, autocast and full precision, out-of-memory halving, the batch-size
probe, transfers; and their use at the attack boundary (attack_in_batches, probe_batch_size).

The out-of-memory paths run on CPU with fake workloads and a fake model that raise ``torch.cuda.OutOfMemoryError``
above a batch size (the error PyTorch raises on a CUDA device); the same on a real GPU is in the CUDA tests below,
skipped without one.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from advlab import Classifier, devices
from advlab.attacks import FGSM, PGD, attack_in_batches, fgsm
from advlab.attacks import base as attack_base
from advlab.threat import ThreatModel


# ---------------------------------------------------------------------- precision
def test_precision_names_and_devices():
    assert devices.check_precision("fp32", "cpu") == "fp32"
    assert devices.check_precision("bf16", "cpu") == "bf16"
    assert devices.check_precision("fp16") == "fp16"  # the name alone is fine
    with pytest.raises(ValueError, match=r"precision: fp16 needs a CUDA device, and the model is on cpu; use bf16"):
        devices.check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"precision: expected one of fp32, bf16, fp16, got 'half'"):
        devices.check_precision("half")


def test_autocast_is_nothing_at_fp32_and_off_in_full_precision():
    lin = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with devices.autocast("cpu", "fp32"):
        assert lin(x).dtype == torch.float32
    with devices.autocast("cpu", "bf16"):
        assert lin(x).dtype == torch.bfloat16
    # full precision wins over the classifier's precision and over an autocast the caller opened
    with torch.autocast("cpu", dtype=torch.bfloat16), devices.full_precision():
        assert devices.is_full_precision()
        with devices.autocast("cpu", "bf16"):
            assert lin(x).dtype == torch.float32
    assert not devices.is_full_precision()


# ---------------------------------------------------------------------- out-of-memory halving
def _oom_above(limit: int, calls: list[tuple[int, int]]):
    def work(start: int, stop: int) -> list[int]:
        calls.append((start, stop))
        if stop - start > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: {stop - start} examples")
        return list(range(start, stop))

    return work


def test_batches_halve_and_retry_after_out_of_memory(caplog):
    calls: list[tuple[int, int]] = []
    done: list[int] = []
    batches = devices.Batches(128)
    with caplog.at_level(logging.WARNING, logger="advlab.devices"):
        parts = batches.run(_oom_above(40, calls), 300, done.append)
    assert [i for p in parts for i in p] == list(range(300))  # every example once, in order
    assert calls[:3] == [(0, 128), (0, 64), (0, 32)]  # 128 and 64 fail, 32 fits
    assert batches.size == 32 and batches.halvings == 2  # and stays halved for the rest
    assert all(stop - start <= 32 for start, stop in calls[3:])
    assert done == [*range(32, 300, 32), 300]
    assert "out of memory on a batch of 128 examples; retrying with batches of 64" in caplog.text
    # the size it learned carries over to the next call
    calls.clear()
    batches.run(_oom_above(40, calls), 64)
    assert calls == [(0, 32), (32, 64)]


def test_batches_re_raise_when_one_example_does_not_fit():
    with pytest.raises(torch.cuda.OutOfMemoryError, match="1 examples"):
        devices.Batches(8).run(_oom_above(0, []), 10)


def test_batches_leave_other_errors_alone():
    def work(start: int, stop: int) -> None:
        raise RuntimeError("shape mismatch")

    batches = devices.Batches(8)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        batches.run(work, 10)
    assert batches.size == 8


# ---------------------------------------------------------------------- the batch-size probe
def _fits_up_to(limit: int, tried: list[int]):
    def try_batch(size: int) -> None:
        tried.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"{size}")

    return try_batch


@pytest.mark.parametrize("limit", [1, 7, 16, 300, 1000, 4095])
def test_largest_batch_doubles_then_backs_off(limit):
    tried: list[int] = []
    size = devices.largest_batch(_fits_up_to(limit, tried), cap=5000, start=16)
    assert size <= limit  # never a size that failed
    assert size >= limit * (1 - 1 / devices.PROBE_RESOLUTION) - 1  # and close to the largest that fits
    assert tried[0] == 16 and len(tried) <= 20


def test_largest_batch_stops_at_the_cap_and_refuses_a_device_too_small():
    tried: list[int] = []
    assert devices.largest_batch(_fits_up_to(10_000, tried), cap=100, start=16) == 100
    assert tried == [16, 32, 64, 100]
    with pytest.raises(torch.cuda.OutOfMemoryError, match="one example does not fit"):
        devices.largest_batch(_fits_up_to(0, []), cap=100, start=16)


def test_auto_batch_size_on_cpu_is_a_default_without_a_probe(caplog):
    tried: list[int] = []
    with caplog.at_level(logging.INFO, logger="advlab.devices"):
        assert devices.auto_batch_size(_fits_up_to(10, tried), "cpu", cap=10_000) == devices.CPU_BATCH_SIZE == 250
    assert tried == [] and "batch size auto: 250 on cpu" in caplog.text
    assert devices.auto_batch_size(_fits_up_to(10, tried), "cpu", cap=40) == 40  # never more than the examples
    # on a CUDA device it probes (the device is only named here: the workload is fake)
    assert devices.auto_batch_size(_fits_up_to(100, tried), torch.device("cuda"), cap=10_000) in range(88, 101)


# ---------------------------------------------------------------------- at the attack boundary
class OOMAbove(nn.Module):
    """A linear classifier on 8x8 images that raises CUDA's out-of-memory error on batches above ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 64, generator=g))
            self.linear.bias.zero_()
        self.limit = limit
        self.sizes: list[int] = []
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (a batch of {x.shape[0]})")
        return self.linear(x.flatten(1))


def _data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_attack_in_batches_halves_on_out_of_memory_and_gives_the_same_result(caplog):
    x, y = _data()
    net = OOMAbove(30)
    model = Classifier(net, num_classes=10, input_shape=(1, 8, 8))
    threat = ThreatModel("linf", 0.05)
    with caplog.at_level(logging.WARNING, logger="advlab.devices"):
        halved = attack_in_batches(FGSM(), model, x, y, threat, batch_size=100)
    assert "out of memory on a batch of 100 examples; retrying with batches of 50" in caplog.text
    assert max(net.sizes[-10:]) <= 30
    # FGSM is deterministic and treats examples independently: the same result as batches that fit
    net.limit = 1000
    fitted = attack_in_batches(FGSM(), model, x, y, threat, batch_size=25)
    assert torch.equal(halved.success, fitted.success)
    assert torch.allclose(halved.x_adv, fitted.x_adv, atol=1e-6)
    assert torch.equal(halved.success, fgsm(model, x, y, threat).success)  # and as one call on all of x


class RowwiseOOMAbove(OOMAbove):
    """:class:`OOMAbove` computed row by row (no GEMM, whose rounding depends on the batch size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (a batch of {x.shape[0]})")
        return (x.flatten(1)[:, None, :] * self.linear.weight).sum(-1) + self.linear.bias


def test_attack_in_batches_halved_keeps_each_examples_random_stream():
    x, y = _data()
    net = RowwiseOOMAbove(1000)
    model = Classifier(net, num_classes=10, input_shape=(1, 8, 8))
    threat, pgd = ThreatModel("linf", 0.05), PGD(steps=3, random_start=True)
    whole = attack_in_batches(pgd, model, x, y, threat, batch_size=100, seed=3)
    quarters = attack_in_batches(pgd, model, x, y, threat, batch_size=25, seed=3)
    assert torch.equal(whole.x_adv, quarters.x_adv)  # an example's random start is its own, whatever the batch
    assert not torch.equal(whole.x_adv, attack_in_batches(pgd, model, x, y, threat, batch_size=100, seed=4).x_adv)
    net.limit = 30
    halved = attack_in_batches(pgd, model, x, y, threat, batch_size=100, seed=3)
    assert max(net.sizes[-10:]) <= 30  # halved to 25 after out-of-memory errors at 100 and 50
    assert torch.equal(whole.x_adv, halved.x_adv)


def test_probe_batch_size_runs_the_attack_shortened(monkeypatch):
    x, y = _data(200)
    net = OOMAbove(48)
    model = Classifier(net, num_classes=10, input_shape=(1, 8, 8))
    threat = ThreatModel("linf", 0.05)
    assert attack_base.probe_batch_size([PGD(steps=40)], model, x, y, threat) == 200  # CPU: min(250, N)
    assert net.sizes == []  # no probe on CPU
    monkeypatch.setattr(attack_base, "device_of", lambda m: torch.device("cuda"))  # a GPU, in name only
    size = attack_base.probe_batch_size([PGD(steps=40, restarts=3)], model, x, y, threat)
    assert size == 48  # 16, 32 fit; 64 fails; bisected: 48 fits, 56 and 52 fail
    probe_forwards = net.sizes.count(16)
    net.sizes.clear()
    PGD(steps=2, restarts=1)(model, x[:16], y[:16], threat)
    assert probe_forwards == len(net.sizes) < 40  # the probe ran PGD shortened to 2 steps and 1 restart
    assert attack_base.shortened(PGD(steps=40, restarts=3)).settings()["steps"] == 2
    assert attack_base.shortened(PGD(steps=1)).settings()["steps"] == 1  # never lengthened


def test_attack_in_batches_auto_batch_size_on_cpu():
    x, y = _data(60)
    model = Classifier(OOMAbove(1000), num_classes=10, input_shape=(1, 8, 8))
    threat = ThreatModel("linf", 0.05)
    auto = attack_in_batches(PGD(steps=3), model, x, y, threat, batch_size="auto", seed=2)
    fixed = attack_in_batches(PGD(steps=3), model, x, y, threat, batch_size=60, seed=2)
    assert torch.equal(auto.x_adv, fixed.x_adv)  # auto on CPU: 250, capped at the 60 examples: one batch


def test_to_device_on_cpu_is_to():
    x = torch.rand(3, 2, dtype=torch.float64)
    out = devices.to_device(x, "cpu", torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())


# ---------------------------------------------------------------------- on a GPU (skipped without one)
@pytest.mark.cuda
def test_cuda_to_device_pins_and_copies():
    x = torch.rand(64, 3, 8, 8, dtype=torch.float64)
    out = devices.to_device(x, "cuda", torch.float32)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert torch.equal(out.cpu(), x.float())


@pytest.mark.cuda
def test_cuda_attack_in_batches_halves_on_out_of_memory():
    x, y = _data()
    net = OOMAbove(30).cuda()
    model = Classifier(net, num_classes=10, input_shape=(1, 8, 8))
    threat = ThreatModel("linf", 0.05)
    halved = attack_in_batches(FGSM(), model, x.cuda(), y.cuda(), threat, batch_size=100)
    net.limit = 1000
    fitted = attack_in_batches(FGSM(), model, x.cuda(), y.cuda(), threat, batch_size=25)
    assert torch.equal(halved.success, fitted.success)


@pytest.mark.cuda
def test_cuda_real_out_of_memory_is_caught_and_halved():
    """A workload whose memory grows with the batch really runs out of GPU memory, and the batch is halved."""
    free, _ = torch.cuda.mem_get_info()
    per_example = free // 64 + 1  # 64 examples need more than all the free memory, 16 fit easily

    def work(start: int, stop: int) -> int:
        t = torch.empty((stop - start) * per_example, dtype=torch.uint8, device="cuda")
        return int(t.numel() // per_example)

    batches = devices.Batches(64)
    sizes = batches.run(work, 64)
    assert sum(sizes) == 64 and batches.halvings >= 1


@pytest.mark.cuda
def test_cuda_probe_finds_a_batch_that_fits():
    free, _ = torch.cuda.mem_get_info()
    per_example = free // 1000 + 1

    def try_batch(size: int) -> None:
        torch.empty(size * per_example, dtype=torch.uint8, device="cuda")

    size = devices.auto_batch_size(try_batch, "cuda", cap=4096)
    assert 500 <= size < 1000
