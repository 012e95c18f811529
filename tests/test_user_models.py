"""Models as users bring them, at the ``Classifier`` boundary: one logit, exported programs, TorchScript copies,
normalisation that does not fit the input, scikit-learn estimators passed where a network is expected."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier, ThreatModel
from advlab.attacks import fgsm, pgd
from advlab.losses import cross_entropy
from advlab.models import as_classifier, two_class_logits
from model_matrix import matrix_model


# ---------------------------------------------------------------------- single-logit binary classifiers
class Squeezed(nn.Module):
    """The single-logit network of the matrix, returning shape ``(N,)`` instead of ``(N, 1)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


@pytest.mark.parametrize("shape", ["(N, 1)", "(N,)"])
def test_single_logit_model_is_two_classes_zero_and_z(shape):
    case = matrix_model("single_logit")
    net = case.fresh() if shape == "(N, 1)" else Squeezed(case.fresh()).eval()
    clf = Classifier(net)
    with torch.no_grad():
        z = case.model(case.x).reshape(-1)
        logits = clf(case.x)
    assert logits.shape == (case.x.shape[0], 2)
    torch.testing.assert_close(logits, torch.stack([torch.zeros_like(z), z], 1))
    # softmax over [0, z] is the sigmoid, and cross-entropy on it the binary cross-entropy
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1], torch.sigmoid(z))
    bce = nn.functional.binary_cross_entropy_with_logits(z, case.y.float(), reduction="none")
    torch.testing.assert_close(cross_entropy(logits, case.y, False), bce)


@pytest.mark.parametrize("shape", ["(N, 1)", "(N,)"])
def test_single_logit_model_is_attacked_as_a_plain_module(shape):
    """A plain module with one logit goes through an attack; success is judged by the sign of the logit."""
    case = matrix_model("single_logit")
    net = case.fresh() if shape == "(N, 1)" else Squeezed(case.fresh()).eval()
    result = pgd(net, case.x, case.y, ThreatModel("linf", 0.3), steps=10)
    with torch.no_grad():
        flipped = (net(result.x_adv).reshape(-1) > 0).long() != case.y
    assert torch.equal(result.success, flipped)
    assert result.success_rate > 0.5


def test_single_logit_num_classes_one_is_read_as_two():
    assert Classifier(nn.Linear(3, 1), num_classes=1).num_classes == 2
    torch.testing.assert_close(two_class_logits(torch.tensor([2.0, -1.0])), torch.tensor([[0.0, 2.0], [0.0, -1.0]]))


# ---------------------------------------------------------------------- torch.export and TorchScript
def test_exported_program_keeps_its_mode_and_is_attacked_without_warnings():
    case = matrix_model("exported")
    module = case.fresh()
    clf = Classifier(module)
    clf.eval()  # ExportedProgram.module() refuses train()/eval(); the classifier does not pass them on
    clf.train()
    assert clf.fixed_mode and clf.training
    clf.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fgsm(module, case.x, case.y, ThreatModel("linf", 0.1))
    assert result.x_adv.shape == case.x.shape


def test_deep_copy_of_a_torchscript_module_can_be_attacked():
    """A deep copy of a loaded TorchScript module has parameters that are not leaves (a torch quirk)."""
    module = copy.deepcopy(matrix_model("torchscript").model)
    assert not all(p.is_leaf for p in module.parameters())
    case = matrix_model("torchscript")
    result = fgsm(module, case.x, case.y, ThreatModel("linf", 0.1))
    assert result.success.shape == (case.x.shape[0],)


# ---------------------------------------------------------------------- normalisation that does not fit
def test_mean_std_with_the_wrong_channel_count_is_refused_at_construction():
    net = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"mean/std: 2 values, but input_shape \(3, 8, 8\) has 3 channel"):
        Classifier(net, mean=[0.5, 0.5], std=[0.2, 0.2], input_shape=(3, 8, 8))
    Classifier(net, mean=[0.5], std=[0.2], input_shape=(3, 8, 8))  # one value for every channel
    Classifier(net, mean=[0.5] * 3, std=[0.2] * 3, input_shape=(3, 8, 8))


def test_mean_std_with_the_wrong_channel_count_is_refused_at_the_first_call():
    """Without an input shape the channels are known at the first call: a clear error, not torch's broadcast one."""
    clf = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), mean=[0.5, 0.5], std=[0.2, 0.2]).eval()
    with pytest.raises(ValueError, match=r"mean/std: 2 values, but the input has 3 channel\(s\)"):
        clf(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="mean/std: 2 values"):
        fgsm(clf, torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), ThreatModel("linf", 0.1))


# ---------------------------------------------------------------------- estimators that are not networks
def test_a_scikit_learn_estimator_points_to_from_sklearn_first():
    from sklearn.linear_model import LogisticRegression

    x, y = np.random.default_rng(0).random((20, 4)), np.arange(20) % 2
    lr = LogisticRegression().fit(x, y)
    for call in (lambda: as_classifier(lr), lambda: pgd(lr, x.astype(np.float32), y, ThreatModel("linf", 0.1))):
        with pytest.raises(TypeError) as exc:
            call()
        text = str(exc.value)
        assert text.startswith("model: ") and "LogisticRegression" in text
        assert "advlab.nonneural.from_sklearn" in text
        assert text.index("from_sklearn") < text.index("SklearnOracle")
