"""Data in the containers users have (issue 14), through the attacks and ``evaluate``: a DataLoader, a TensorDataset,
a dict of arrays, lists of labels. Each must give exactly what the same tensors give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab import ThreatModel, evaluate
from advlab.attacks import fgsm, pgd, square


def _forms(x: torch.Tensor, y: torch.Tensor) -> dict:
    return {
        "DataLoader": DataLoader(TensorDataset(x, y), batch_size=5),
        "TensorDataset": TensorDataset(x, y),
        "dict": {"x": x.numpy(), "y": y.tolist()},
        "pair with list labels": (x, y.tolist()),
    }


@pytest.mark.parametrize("form", ["DataLoader", "TensorDataset", "dict", "pair with list labels"])
@pytest.mark.parametrize("attack,kwargs", [(pgd, {"steps": 5}), (fgsm, {}), (square, {"max_queries": 50})])
def test_attacks_take_containers_and_agree_with_tensors(form, attack, kwargs, mlp_model, digits_batch):
    x, y = digits_batch
    threat = ThreatModel("linf", 0.1)
    expected = attack(mlp_model, x, y, threat, generator=1, **kwargs)
    got = attack(mlp_model, _forms(x, y)[form], None, threat, generator=1, **kwargs)
    assert isinstance(got.x_adv, torch.Tensor) and got.x_adv.device.type == "cpu"
    assert torch.equal(got.x_adv, expected.x_adv) and torch.equal(got.success, expected.success)


def test_list_labels_with_numpy_inputs_come_back_as_numpy(mlp_model, digits_batch):
    x, y = digits_batch
    result = fgsm(mlp_model, x.numpy(), y.tolist(), ThreatModel("linf", 0.1))
    assert isinstance(result.x_adv, np.ndarray)
    np.testing.assert_array_equal(result.x_adv, fgsm(mlp_model, x, y, ThreatModel("linf", 0.1)).x_adv.numpy())


def test_attack_errors_for_containers_name_the_argument(mlp_model, digits_batch):
    x, y = digits_batch
    threat = ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match="^x: labels are needed"):
        fgsm(mlp_model, x, None, threat)
    with pytest.raises(ValueError, match=r"^x: this DataLoader shuffles"):
        fgsm(mlp_model, DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True), None, threat)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor, got dtype torch.uint8.*/ 255"):
        fgsm(mlp_model, (x * 255).to(torch.uint8), y, threat)
    with pytest.raises(TypeError, match=rf"^y: expected integer class indices, got strings such as '{int(y[0])}'"):
        fgsm(mlp_model, x, [str(int(v)) for v in y], threat)


@pytest.mark.parametrize("form", ["DataLoader", "TensorDataset", "dict", "pair with list labels"])
def test_evaluate_takes_containers_and_agrees_with_tensors(form, mlp_model, digits):
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    settings = {"attacks": "fast", "checks": False, "progress": False}
    expected = evaluate(mlp_model, (x, y), 0.1, **settings)
    got = evaluate(mlp_model, _forms(x, y)[form], 0.1, **settings)
    assert got.results[0].robust_accuracy == expected.results[0].robust_accuracy
    assert got.clean_accuracy == expected.clean_accuracy and got.examples == expected.examples
    assert got.settings["data_sha256"] == expected.settings["data_sha256"]


def test_evaluate_refuses_uint8_images(mlp_model, digits):
    pixels = (digits["x_test"][:8] * 255).round().to(torch.uint8)
    with pytest.raises(TypeError, match=r"^data x: expected a floating-point tensor, got dtype torch.uint8"):
        evaluate(mlp_model, (pixels, digits["y_test"][:8]), 0.1, attacks="fast", checks=False, progress=False)
