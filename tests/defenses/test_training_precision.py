"""Mixed-precision training: ``precision="bf16"`` / ``"fp16"`` autocast the forward passes (and scale the fp16 loss);
``"fp32"``, the default, is plain float32.

Tolerance: bfloat16 keeps 8 significant bits (a relative rounding of 2^-9 = 0.2% per operation), float16 11 bits. On
the digits MLP, three epochs of standard training in bf16 or fp16 end with epoch losses within 0.07% of float32's
(measured over four seeds); the tests allow 1%. They also check that the precision is really used (the losses are
not float32's bit for bit), that adversarial examples stay float32, and that fp16's loss scale is checkpointed.
"""

from __future__ import annotations

import pytest
import torch
from _defense_helpers import digits
from safetensors import safe_open

from advlab import zoo
from advlab.defenses import PGDTraining, StandardTraining
from advlab.defenses.base import CHECKPOINT_FILE

SETTINGS = dict(epochs=3, batch_size=64, lr=5e-3, seed=0, progress=False)
RTOL = 1e-2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model():
    return zoo.build_classifier("mlp", (1, 8, 8), 10, seed=2, hidden=(32,))


def _fit(trainer, n=1024):
    x, y = digits()
    model = _model()
    trainer.fit(model, (x[:n], y[:n]), (x[1400:], y[1400:]))
    return torch.tensor([r["train_loss"] for r in trainer.history_], dtype=torch.float64), model


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_on_cpu_follows_fp32(precision):
    reference, _ = _fit(StandardTraining(**SETTINGS))
    losses, model = _fit(StandardTraining(**SETTINGS, precision=precision))
    assert torch.isfinite(losses).all()
    torch.testing.assert_close(losses, reference, rtol=RTOL, atol=0)
    assert not torch.equal(losses, reference)  # autocast did run in the low precision
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_fp32_is_the_default_and_plain_float32():
    trainer = StandardTraining(**SETTINGS)
    assert trainer.precision == "fp32" and trainer.settings()["precision"] == "fp32"
    a, ma = _fit(trainer, n=256)
    b, mb = _fit(StandardTraining(**SETTINGS, precision="fp32"), n=256)
    assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="precision.*fp32.*bf16.*fp16"):
        StandardTraining(precision="fp8")


class _Recording(PGDTraining):
    """PGD training that records the dtype of the adversarial examples it trains on."""

    def training_step(self, model, x, y, epoch):
        x_adv = self.perturb(model, x, y, epoch)
        self.dtypes_ = {*getattr(self, "dtypes_", set()), x_adv.dtype}
        logits = model(x_adv)
        self.logit_dtypes_ = {*getattr(self, "logit_dtypes_", set()), logits.dtype}
        return torch.nn.functional.cross_entropy(logits, y), logits


def test_adversarial_examples_stay_float32_under_bf16_autocast():
    trainer = _Recording(**{**SETTINGS, "epochs": 1}, eps=0.2, steps=2, precision="bf16")
    losses, _ = _fit(trainer, n=256)
    assert torch.isfinite(losses).all()
    assert trainer.dtypes_ == {torch.float32}  # the points themselves: full precision
    assert trainer.logit_dtypes_ == {torch.bfloat16}  # the forward passes: autocast


def test_fp16_loss_scale_is_checkpointed_and_a_resumed_run_ends_the_same(tmp_path):
    settings = {**SETTINGS, "precision": "fp16", "checkpoint_dir": tmp_path / "ckpt"}
    uninterrupted, reference = _fit(StandardTraining(**{**settings, "checkpoint_dir": tmp_path / "other"}), n=256)

    class Killed(RuntimeError):
        pass

    class Dies(StandardTraining):
        def end_epoch(self, model, epoch, record):
            if epoch == 1:
                raise Killed
            return False

    with pytest.raises(Killed):
        _fit(Dies(**settings), n=256)
    with safe_open(str(tmp_path / "ckpt" / CHECKPOINT_FILE), framework="pt") as fh:
        assert '"grad_scaler"' in fh.metadata()["checkpoint"]
    resumed, model = _fit(StandardTraining(**settings), n=256)
    assert torch.equal(resumed, uninterrupted)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_on_cuda_follows_fp32(precision):
    reference, _ = _fit(StandardTraining(**SETTINGS, device="cuda"))
    trainer = StandardTraining(**SETTINGS, device="cuda", precision=precision)
    losses, model = _fit(trainer)
    assert torch.isfinite(losses).all()
    torch.testing.assert_close(losses, reference, rtol=RTOL, atol=0)
    assert model.device.type == "cuda"
