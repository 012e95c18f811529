"""Bounds that float32 cannot represent, such as (-0.2, 0.3) (found by running CleverHans v4's PyTorch tests).

Clamping a float32 tensor to (-0.2, 0.3) gives float32's nearest values, -0.2000000030 and 0.3000000119: the edges
of the box *in float32*. Every check of the box compares in the tensor's dtype, so an attack's output is a valid
input of the next attack, SPSA's clipped probes are valid queries, and a float64 copy of a result lies inside the
box in float64 too.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier, ThreatModel, validation
from advlab.attacks import apgd, fgsm, pgd, spsa, square
from advlab.evaluation import evaluate
from advlab.oracles import TorchOracle
from model_matrix import matrix_model

LO, HI = -0.2, 0.3
BOUNDS = (LO, HI)


def _mapped():
    """The residual network of the matrix behind an affine map from (-0.2, 0.3) to [0, 1], and its data mapped."""
    case = matrix_model("residual")
    clf = Classifier(case.fresh(), mean=[LO], std=[HI - LO], bounds=BOUNDS, num_classes=10, input_shape=(1, 8, 8))
    x = (case.x * (HI - LO) + LO).clamp(LO, HI)  # pixels 0 and 1 land on float32's edges of the box
    return clf.eval(), x, case.y


def test_float32_edges_are_inside_and_one_float32_step_beyond_is_not():
    edges = torch.tensor([[LO, HI]]).clamp(LO, HI)
    assert float(edges.max()) > HI and float(edges.min()) < LO  # in float64 both stick out
    validation.check_input(edges, BOUNDS)
    above = torch.nextafter(edges[:, 1:], torch.tensor(1.0))
    below = torch.nextafter(edges[:, :1], torch.tensor(-1.0))
    for bad in (above, below):
        with pytest.raises(ValueError, match="x: values must lie inside bounds"):
            validation.check_input(bad, BOUNDS)
    validation.check_input(edges.double().clamp(LO, HI), BOUNDS)  # float64 compares in float64
    with pytest.raises(ValueError, match="inside bounds"):
        validation.check_input(edges.double(), BOUNDS)  # 0.30000001 is outside in float64


def test_an_attacks_output_is_a_valid_input_of_the_next_attack():
    clf, x, y = _mapped()
    threat = ThreatModel("linf", 0.05, BOUNDS)
    first = pgd(clf, x, y, threat, steps=5)
    assert bool(threat.contains(first.x_adv, x).all())
    assert float(first.x_adv.max()) > HI  # the edge in float32 is reached, and it is 0.30000001 in float64
    for attack in (fgsm, apgd, square):  # fed back as the clean input of another attack
        again = attack(clf, first.x_adv, y, threat, **({"max_queries": 50} if attack is square else {}))
        assert bool(threat.contains(again.x_adv, first.x_adv).all())
    evaluate(clf, (first.x_adv, y), 0.05, attacks=["fgsm"], checks=False)  # and of an evaluation


def test_spsa_on_an_oracle_with_such_bounds_runs_to_the_end():
    """SPSA clips its probes into the box; the oracle must accept them (it once refused 0.30000001 and crashed)."""
    clf, x, y = _mapped()
    oracle = TorchOracle(clf, mode="scores", bounds=BOUNDS)
    threat = ThreatModel("linf", 0.05, BOUNDS)
    result = spsa(oracle, x[:4], y[:4], threat, steps=5, generator=0)
    assert result.info["verified"] is True and result.info["stopped"] is None
    assert bool(threat.contains(torch.as_tensor(result.x_adv), x[:4]).all())


def test_float64_results_lie_inside_the_box_in_float64():
    """A float64 input comes back as float64, inside (-0.2, 0.3) in float64 too, and is a valid input again."""
    clf, x, y = _mapped()
    threat = ThreatModel("linf", 0.05, BOUNDS)
    for x64 in (x.double().clamp(LO, HI), x.double().clamp(LO, HI).numpy()):
        result = pgd(clf, x64, y, threat, steps=5)
        out = torch.as_tensor(result.x_adv)
        assert out.dtype == torch.float64 and type(result.x_adv) is type(x64)
        assert float(out.min()) >= LO and float(out.max()) <= HI
        assert float((out - torch.as_tensor(x64)).abs().max()) <= 0.05 + 1e-6
        pgd(clf, result.x_adv, y, threat, steps=2)


def test_the_server_accepts_probes_on_the_float32_edges():
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from advlab.blackbox.server import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient may warn about its httpx backend
        from starlette.testclient import TestClient

        net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        client = TestClient(create_app(Classifier(net, bounds=BOUNDS, input_shape=(4,)).eval()))
    edges = torch.tensor([[LO, HI, LO, HI]]).clamp(LO, HI)
    answer = client.post("/predict", json={"inputs": edges.tolist()})
    assert answer.status_code == 200, answer.text
    outside = np.nextafter(edges.numpy(), np.float32(1.0))
    assert client.post("/predict", json={"inputs": outside.tolist()}).status_code == 422
