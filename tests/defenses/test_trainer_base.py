"""Trainer base: learning, schedules, checkpoint/resume equivalence, config mismatch, input errors."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from sklearn.datasets import load_digits

import advlab
from advlab.defenses import StandardTraining, Trainer
from advlab.settings import PositiveInt


def _digits():
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    return x, torch.tensor(d.target)


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return advlab.Classifier(net, num_classes=10, input_shape=(1, 8, 8))


def test_standard_training_learns_digits():
    x, y = _digits()
    t = StandardTraining(epochs=8, lr=1e-2, progress=False).fit(_model(), (x[:1400], y[:1400]), (x[1400:], y[1400:]))
    assert len(t.history_) == 8
    assert t.history_[-1]["val_accuracy"] > 0.85
    assert t.history_[-1]["train_loss"] < t.history_[0]["train_loss"]
    assert not t.model_.training


class _Killed(RuntimeError):
    pass


class _KillAfter(StandardTraining):
    """Raises in the middle of an epoch, like a kill."""

    def __init__(self, kill_at_step: int, **kw):
        super().__init__(**kw)
        self.kill_at_step, self.steps = kill_at_step, 0

    def settings(self):
        return {**super().settings(), "defense": "standard"}

    def training_step(self, model, x, y, epoch):
        self.steps += 1
        if self.steps == self.kill_at_step:
            raise _Killed
        return super().training_step(model, x, y, epoch)


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    x, y = _digits()
    data = (x[:1000], y[:1000])
    settings = dict(epochs=3, lr=3e-3, schedule="cosine", optimizer="sgd", progress=False)
    full = StandardTraining(**settings).fit(_model(), data)

    steps_per_epoch = math.ceil(1000 / 128)
    killed = _KillAfter(kill_at_step=steps_per_epoch + 3, checkpoint_dir=tmp_path, **settings)
    with pytest.raises(_Killed):
        killed.fit(_model(), data)
    resumed = StandardTraining(checkpoint_dir=tmp_path, **settings).fit(
        _model(seed=1), data
    )  # other init: must be overwritten
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    for a, b in zip(full.model_.parameters(), resumed.model_.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_other_config_is_refused(tmp_path):
    x, y = _digits()
    StandardTraining(epochs=1, progress=False, checkpoint_dir=tmp_path).fit(_model(), (x[:200], y[:200]))
    with pytest.raises(ValueError, match="another configuration"):
        StandardTraining(epochs=1, lr=0.01, progress=False, checkpoint_dir=tmp_path).fit(_model(), (x[:200], y[:200]))


def test_cyclic_schedule_shape():
    t = Trainer(epochs=10, lr=0.2, schedule="cyclic")
    assert t.lr_at(0) == 0
    assert t.lr_at(4) == pytest.approx(0.2)
    assert t.lr_at(10) == pytest.approx(0.0)
    assert Trainer(epochs=4, lr=1.0, schedule="step").lr_at(3.5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"schedule": "x"}, "schedule"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StandardTraining(**kwargs)


def test_bad_data():
    x, y = _digits()
    with pytest.raises(ValueError, match="needs labels"):
        StandardTraining(progress=False).fit(_model(), x[:10])
    with pytest.raises(ValueError, match="train.y"):
        StandardTraining(progress=False).fit(_model(), (x[:10], y[:9]))
    with pytest.raises(ValueError, match="train.x"):
        StandardTraining(progress=False).fit(_model(), (x[:10] * 20, y[:10]))


def test_checkpoint_of_other_config_is_discarded_with_overwrite(tmp_path):
    x, y = _digits()
    data = (x[:200], y[:200])
    StandardTraining(epochs=1, progress=False, checkpoint_dir=tmp_path).fit(_model(), data)
    with pytest.raises(ValueError, match=r"differs in: lr"):
        StandardTraining(epochs=1, lr=0.01, progress=False, checkpoint_dir=tmp_path).fit(_model(), data)
    fresh = StandardTraining(epochs=1, lr=0.01, progress=False).fit(_model(), data)
    over = StandardTraining(epochs=1, lr=0.01, progress=False, checkpoint_dir=tmp_path, overwrite=True).fit(
        _model(), data
    )
    for a, b in zip(fresh.model_.parameters(), over.model_.parameters()):
        assert torch.equal(a, b)  # trained from scratch, not resumed from the other configuration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]  # one file


def test_settings_are_attributes_and_run_options_are_not_recorded(tmp_path):
    t = StandardTraining(epochs=3, lr=0.02, checkpoint_dir=str(tmp_path), progress=False, eval_batch_size=10)
    assert (t.epochs, t.lr, t.checkpoint_dir, t.progress, t.eval_batch_size) == (3, 0.02, tmp_path, False, 10)
    assert t.settings() == {
        "defense": "standard",
        "epochs": 3,
        "batch_size": 128,
        "lr": 0.02,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "schedule": "constant",
        "seed": 0,
        "precision": "fp32",
        "sync_bn": False,
    }
    with pytest.raises(TypeError, match="no setting 'nosuch'"):
        StandardTraining(nosuch=1)
    with pytest.raises(TypeError, match="checkpoint_dir"):
        StandardTraining(checkpoint_dir=3)


class _Renamed(StandardTraining):
    """A trainer whose setting was renamed in this release (``n_iter`` is now ``steps``).

    Args:
        steps: how many.
    """

    renamed: ClassVar[dict[str, str]] = {"n_iter": "steps"}

    def __init__(self, *, steps: PositiveInt = 3, **settings):
        super().__init__(**settings)


def test_renamed_setting_keeps_working_with_a_future_warning():
    with pytest.warns(FutureWarning, match="'n_iter' is now called 'steps'"):
        t = _Renamed(n_iter=5)
    assert t.steps == 5 and t.settings()["steps"] == 5 and "n_iter" not in t.settings()
    with pytest.raises(TypeError, match="both 'n_iter' and 'steps'"):
        _Renamed(n_iter=5, steps=4)
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="steps"):
        _Renamed(n_iter=0)  # validated under its new name


def test_subclass_default_keeps_the_base_constraint():
    class Cyclic(StandardTraining):
        def __init__(self, *, schedule: str = "cyclic", **settings):  # no constraint written here
            super().__init__(schedule=schedule, **settings)

    assert Cyclic().schedule == "cyclic"
    with pytest.raises(ValueError, match="schedule"):
        Cyclic(schedule="x")
