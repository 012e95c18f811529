"""Input mistakes that used to slip through, each a clear error or warning naming what is wrong.

Labels beyond a plain module's classes (evaluate reported 0%), targets out of range (torch's IndexError), an eps
larger than the input box (``--eps 8`` meaning 8/255: 0% silently), torch float64 inputs (failed inside the
model while numpy float64 worked), a model that outputs NaN (a "success rate" came out), an unwritable ``--out``
(found after the work).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Targeted, ThreatModel
from advlab.attacks import fgsm, fmn, pgd
from advlab.cli import main
from advlab.evaluation import evaluate
from model_matrix import matrix_model


@pytest.fixture(autouse=True)
def _fast_provenance(monkeypatch):
    import advlab.evaluation.engine as engine

    monkeypatch.setattr(engine, "provenance", lambda **extra: {"versions": {}, "git_commit": None, **extra})


def _plain():
    """A plain module (no declared class count): the matrix's BatchNorm network, and its data."""
    case = matrix_model("batchnorm")
    return case.fresh(), case.x, case.y


# ---------------------------------------------------------------------- labels and targets
def test_evaluate_checks_labels_against_a_plain_modules_classes():
    model, x, y = _plain()
    bad = y.clone()
    bad[2] = 10
    with pytest.raises(ValueError, match=r"data y: class index 10 is out of range for a model with 10 classes"):
        evaluate(model, (x, bad), 0.1, attacks="fast", checks=False)


def test_an_out_of_range_target_is_named():
    model, x, y = _plain()
    for target in (torch.full_like(y, 10), torch.full_like(y, -1)):
        with pytest.raises(ValueError, match=r"^target: class ind"):
            pgd(model, x, y, ThreatModel("linf", 0.1), goal=Targeted(target), steps=2)


# ---------------------------------------------------------------------- eps beyond the box
def test_an_linf_eps_as_wide_as_the_box_warns_and_suggests_pixel_levels():
    model, x, y = _plain()
    with pytest.warns(UserWarning, match=r"eps: 8 is at least the width of the input box \(0.0, 1.0\).*8/255"):
        pgd(model, x, y, ThreatModel("linf", 8), steps=2)
    with pytest.warns(UserWarning, match=r"eps: 8 is at least the width"):
        evaluate(model, (x, y), [0.1, 8.0], attacks="fast", checks=False)
    with pytest.warns(UserWarning, match=r"eps: 3 is at least the width of the input box \(-1.0, 2.0\)") as record:
        ThreatModel("linf", 3, (-1.0, 2.0))  # building a threat model is not a mistake; attacking with it is
        fgsm(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), 3 * x - 1, y, ThreatModel("linf", 3, (-1.0, 2.0)))
    assert "/255" not in str(record[0].message)  # no pixel-level hint outside [0, 1]


def test_radii_that_fit_and_minimum_norm_searches_do_not_warn():
    model, x, y = _plain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(model, x, y, ThreatModel("linf", 0.3), steps=2)
        pgd(model, x, y, ThreatModel("l2", 100.0), steps=2)  # l2/l1 radii are not judged against the box
        fmn(model, x, y, ThreatModel("linf", 100.0), steps=2)  # "unbounded" for a minimum-norm attack


# ---------------------------------------------------------------------- float64 inputs
def test_torch_float64_is_accepted_like_numpy_float64():
    model, x, y = _plain()
    threat = ThreatModel("linf", 0.1)
    res32 = pgd(model, x, y, threat, steps=3)
    res_t = pgd(model, x.double(), y, threat, steps=3)
    res_np = pgd(model, x.double().numpy(), y.numpy(), threat, steps=3)
    assert isinstance(res_t.x_adv, torch.Tensor) and res_t.x_adv.dtype == torch.float64
    assert isinstance(res_np.x_adv, np.ndarray) and res_np.x_adv.dtype == np.float64
    torch.testing.assert_close(res_t.x_adv, res32.x_adv.double(), rtol=0, atol=0)
    np.testing.assert_array_equal(res_np.x_adv, res_t.x_adv.numpy())
    assert torch.equal(res_t.success, res32.success)


def test_inputs_are_cast_to_a_float64_models_dtype_and_returned_in_theirs():
    model64 = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double().eval()
    _, x, y = _plain()
    threat = ThreatModel("linf", 0.1)
    res64 = fgsm(model64, x.double(), y, threat)  # attacked in float64, as before
    res32 = fgsm(model64, x, y, threat)  # float32 input: attacked in the model's float64, returned as float32
    assert res64.x_adv.dtype == torch.float64 and res32.x_adv.dtype == torch.float32
    torch.testing.assert_close(res32.x_adv, res64.x_adv.float(), rtol=0, atol=1e-7)


# ---------------------------------------------------------------------- NaN outputs
class NaNAbove(nn.Module):
    """Logits of a linear model, NaN for inputs whose mean pixel exceeds ``threshold``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x.flatten(1))
        nan = x.flatten(1).mean(1, keepdim=True) > self.threshold
        return torch.where(nan, torch.full_like(out, float("nan")), out)


def test_a_model_that_outputs_nan_is_an_error_naming_its_output():
    _, x, y = _plain()
    always = NaNAbove(-1.0).eval()
    with pytest.raises(ValueError, match=r"model: its output on x contains NaN or inf for 8 of 8 example"):
        pgd(always, x, y, ThreatModel("linf", 0.1), steps=2)
    with pytest.raises(ValueError, match=r"model: its output on the data contains NaN"):
        evaluate(always, (x, y), 0.1, attacks="fast", checks=False)
    brighter = NaNAbove(float(x.flatten(1).mean(1).max()) + 0.01).eval()  # finite on x, NaN once x brightens
    with pytest.raises(ValueError, match=r"model: its output on x_adv contains NaN"):
        fgsm(brighter, x, y, ThreatModel("linf", 0.3))


# ---------------------------------------------------------------------- --out checked before any work
OUT_COMMANDS = {
    "attack": ["--model", "{missing}", "--eps", "0.1"],
    "evaluate": ["--model", "{missing}", "--eps", "0.1"],
    "report": ["{missing}"],
    "blackbox": ["--target", "{missing}"],
    "transfer": ["--models", "{missing},{missing}"],
    "explain": ["--model", "{missing}"],
    "physical": ["--model", "{missing}", "--eps", "0.1"],
    "universal": ["--model", "{missing}", "--eps", "0.1"],
    "patch": ["--model", "{missing}", "--target", "3"],
    "fooling": ["--model", "{missing}"],
    "malware": ["--data", "{missing}.npz"],
    "train": ["--data", "digits"],
    "poison": ["--data", "digits"],
    "demo": [],
    "import": ["{missing}.py:Net"],
    "text": ["--data", "{missing}.tsv"],
    "rl": ["--policy", "{missing}"],
    "mbo": [],
    "spam": ["--corpus", "{missing}"],
}
"""Every command with ``--out``, with a missing model (or target): the ``--out`` error must come first."""


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_that_cannot_be_a_folder_is_refused_before_any_work(command, tmp_path, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    argv = [part.format(missing=tmp_path / "missing") for part in OUT_COMMANDS[command]]
    assert main([command, *argv, "--out", str(a_file / "out")]) == 2
    err = capsys.readouterr().err
    assert f"advlab {command}: error: --out: " in err and "is a file, not a folder" in err


def test_every_command_with_out_is_checked():
    from advlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    with_out = {name for name, p in sub.choices.items() if any("--out" in a.option_strings for a in p._actions)}
    assert with_out == set(OUT_COMMANDS)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_without_write_permission_is_refused_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["evaluate", "--model", str(tmp_path / "missing"), "--eps", "0.1", "--out", str(locked / "o")]) == 2
    finally:
        locked.chmod(0o700)
    assert "--out: cannot write in" in capsys.readouterr().err
