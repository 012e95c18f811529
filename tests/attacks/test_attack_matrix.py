"""Every attack against the model matrix (tests/model_matrix.py): networks in the forms users bring them.

The conformance suite (test_conformance.py) checks each attack deeply on one tiny MLP; this file checks the
properties that depend on the *model* across the matrix: BatchNorm (eval and train mode), dropout, residual
blocks, channels-last weights and inputs, a model with buffers and no parameters, a single-logit binary
classifier, a tabular MLP on a (-3, 3) box, a ``torch.export`` program and a TorchScript module.

Cases: every registered attack and norm on the BatchNorm and residual networks, and every model on PGD, APGD,
Square and FMN (every norm they declare). Each case runs the attack once and checks, against an independent
recomputation:

- shapes, dtype and device of ``x_adv``; ``success`` and ``distance`` of shape ``(N,)``;
- ``x_adv`` inside the box exactly (compared in its dtype) and inside the eps-ball up to float tolerance;
- ``success`` equal to the model's own prediction on ``x_adv`` (in eval mode; ``sigmoid > 1/2`` for the single
  logit);
- no side effects: the input, every module's mode, the ``requires_grad`` flags, parameter gradients, parameters
  *and buffers* (BatchNorm's running statistics) and the global RNGs are untouched;
- ``eps = 0`` returns ``x`` unchanged.

Settings are capped (a few steps, a hundred queries): these properties hold for any budget, and the whole file
runs in a few seconds.
"""

from __future__ import annotations

import dataclasses
import random
import warnings

import numpy as np
import pytest
import torch

from advlab import Targeted, ThreatModel
from advlab.attacks import ATTACKS, make_attack
from advlab.attacks.sgm import residual_blocks
from model_matrix import MODELS, MatrixModel, matrix_model

CAPS = {"steps": 5, "max_queries": 100, "restarts": 1, "binary_search_steps": 2}
"""Integer settings capped at these values (other settings keep their defaults)."""
EVERY_MODEL = ("pgd", "apgd", "square", "fmn")
"""Attacks run on every model of the matrix."""
EVERY_ATTACK = ("batchnorm", "residual")
"""Models every attack runs on."""
NEEDS_RESIDUAL_BLOCKS = ("sgm",)
"""Attacks that must refuse a model without residual block modules (the matrix's residual net writes its block
inline, in its ``forward``): they are checked to refuse it, naming the model, and to leave it untouched."""


def fast(name: str, norm: str):
    """The attack's config for ``norm`` with its integer settings capped by :data:`CAPS`."""
    config = make_attack(name, norm=norm)
    capped = {
        k: CAPS[k]
        for k, v in config.settings().items()
        if k in CAPS and isinstance(v, int) and not isinstance(v, bool) and v > CAPS[k]
    }
    return dataclasses.replace(config, **capped)


def _cases() -> list:
    cases = []
    for model in MODELS:
        for name, cls in ATTACKS.items():
            if model in EVERY_ATTACK or name in EVERY_MODEL:
                cases += [pytest.param(model, name, norm, id=f"{model}-{name}-{norm}") for norm in cls.norms]
    return cases


def predicted(case: MatrixModel, x: torch.Tensor) -> torch.Tensor:
    """The model's labels on ``x``, computed without advlab: eval mode, ``logit > 0`` for the single logit."""
    model = case.fresh()
    if case.name != "exported":  # an exported program keeps the (eval) mode it was exported in
        model.eval()
    with torch.no_grad():
        out = model(x)
    return (out.reshape(-1) > 0).long() if case.name == "single_logit" else out.argmax(1)


@dataclasses.dataclass
class Snapshot:
    """Everything an attack must leave as it found it."""

    modes: dict
    flags: list
    grads: list
    state: dict
    rngs: tuple

    @classmethod
    def of(cls, model: torch.nn.Module) -> Snapshot:
        params = list(model.parameters())
        return cls(
            modes={name: m.training for name, m in model.named_modules()},
            flags=[p.requires_grad for p in params],
            grads=[None if p.grad is None else p.grad.clone() for p in params],
            state={k: v.detach().clone() for k, v in model.state_dict().items()},
            rngs=(torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
        )

    def assert_same(self, other: Snapshot) -> None:
        assert other.modes == self.modes, "a module's train/eval mode changed"
        assert other.flags == self.flags, "requires_grad flags changed"
        for a, b in zip(self.grads, other.grads):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), "a parameter's .grad changed"
        assert other.state.keys() == self.state.keys()
        for key, value in self.state.items():
            assert torch.equal(other.state[key], value), f"{key} changed (parameters and buffers must not move)"
        assert torch.equal(other.rngs[0], self.rngs[0]), "the global torch RNG was used"
        assert np.array_equal(other.rngs[1], self.rngs[1]), "the global numpy RNG was used"
        assert other.rngs[2] == self.rngs[2], "the global Python RNG was used"


def _attack(config, model, x, y, threat, case: MatrixModel):
    if case.name == "batchnorm_train":  # attacked in eval mode, with a warning that says so
        with pytest.warns(UserWarning, match="train mode"):
            return config(model, x, y, threat, generator=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no other model of the matrix is suspicious
        return config(model, x, y, threat, generator=0)


@pytest.mark.parametrize("model_name,name,norm", _cases())
def test_attack_on_matrix_model(model_name, name, norm):
    case = matrix_model(model_name)
    model = case.fresh()
    x, y = case.x.clone(), case.y.clone()
    threat = ThreatModel(norm, case.eps(norm), case.bounds)
    config = fast(name, norm)
    before = Snapshot.of(model)
    if name in NEEDS_RESIDUAL_BLOCKS and not residual_blocks(model):
        with pytest.raises(ValueError, match="^model: .* residual blocks"):
            _attack(config, model, x, y, threat, case)
        before.assert_same(Snapshot.of(model))
        return

    result = _attack(config, model, x, y, threat, case)

    # no side effects
    assert torch.equal(x, case.x) and torch.equal(y, case.y)
    before.assert_same(Snapshot.of(model))
    # shapes, dtype, device
    x_adv = result.x_adv
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert x_adv.dtype == x.dtype and x_adv.device == x.device
    assert result.success.shape == (x.shape[0],) and result.distance.shape == (x.shape[0],)
    # box exactly (in the tensor's dtype), ball up to float tolerance
    assert bool((x_adv >= threat.bounds[0]).all()) and bool((x_adv <= threat.bounds[1]).all())
    dist = threat.distance(x_adv, x)
    assert float(dist.max()) <= threat.eps * (1 + 1e-5) + 1e-6, f"outside the {norm} ball: {float(dist.max())}"
    torch.testing.assert_close(result.distance, dist)
    # success recomputed independently
    labels = result.labels.cpu()
    pred = predicted(case, x_adv)
    expected = pred == labels if result.targeted else pred != labels
    assert torch.equal(result.success.cpu(), expected)
    if not result.targeted:
        assert torch.equal(labels, y)


@pytest.mark.parametrize("model_name,name,norm", _cases())
def test_eps_zero_returns_x_on_matrix_model(model_name, name, norm):
    case = matrix_model(model_name)
    threat = ThreatModel(norm, 0.0, case.bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batchnorm_train's train-mode warning
        result = fast(name, norm)(case.fresh(), case.x, case.y, threat, generator=0)
    assert torch.equal(result.x_adv, case.x)
    assert torch.equal(result.distance, torch.zeros(case.x.shape[0]))


@pytest.mark.parametrize("model_name", MODELS)
def test_targeted_pgd_on_matrix_model(model_name):
    """A targeted goal on every model: success means the model predicts the target (for two classes: the other)."""
    case = matrix_model(model_name)
    target = (case.y + 1) % case.num_classes
    threat = ThreatModel("linf", 3 * case.eps("linf"), case.bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = fast("pgd", "linf")(case.fresh(), case.x, case.y, threat, goal=Targeted(target), generator=0)
    pred = predicted(case, result.x_adv)
    assert torch.equal(result.success, pred == target)
    assert result.success_rate > 0.0
