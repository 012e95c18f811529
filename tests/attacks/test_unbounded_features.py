"""Unbounded features (issue 14): every attack on a tabular model whose bounds are ``(-inf, inf)``.

Standardised tabular data has no natural box; the norm ball alone bounds the perturbations. The model is a small
MLP on scikit-learn's wine data (13 standardised features, 3 classes) behind ``Classifier(bounds=(-inf, inf))``,
attacked with ``ThreatModel(norm, eps)`` (no bounds: the classifier's are used). The conformance properties run
here for every registered attack and norm: shapes, finite outputs inside the ball, success recomputed, eps = 0,
determinism, a threat model without bounds equal to one with the classifier's, numpy in and out; the accuracy
drop for the attacks the issue names; the analytic optimum of a linear model without a box.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import ATTACKS, get_attack, make_attack

INF = math.inf
UNBOUNDED = (-INF, INF)
NUM_CLASSES = 3
N_FEATURES = 13

EPS = {"linf": 0.5, "l2": 1.5, "l1": 3.0, "l0": 3}
"""Radii for the property checks, in standard deviations of the features."""
STRONG_EPS = {"linf": 1.5, "l2": 4.0, "l1": 8.0}
"""Radii at which the attacks the issue names fool a good share of the batch."""
MUST_WORK = ("pgd", "fgsm", "apgd", "square", "deepfool", "cw-l2", "fmn", "spsa")
"""The attacks issue 14 names; each must lower accuracy at :data:`STRONG_EPS` (every attack passes the rest)."""
MIN_SUCCESS_RATE = 0.5

FAST: dict[str, dict] = {
    "pgd": {"steps": 20},
    "mifgsm": {"steps": 10},
    "bim": {"steps": 20},
    "apgd": {"steps": 20},
    "apgd-t": {"steps": 20},
    "square": {"max_queries": 400},
    "spsa": {"steps": 60},
    "nes": {"steps": 30},
    "fmn": {"steps": 60},
    "cw-l2": {"steps": 200, "binary_search_steps": 5},
    "cw-linf": {"steps": 20},
    "boundary": {"steps": 200},
    "hopskipjump": {"steps": 8},
    "lbfgs": {"binary_search_steps": 4, "steps": 30},
    "jsma": {"gamma": 1.0},
    # Input diversity and translation invariance resize and smooth images; on feature vectors (which they refuse,
    # test_transfer_boosting.py) they run without them.
    "difgsm": {"diversity_prob": 0.0},
    "tifgsm": {"diversity_prob": 0.0, "kernel_size": 1},
}
"""Settings that keep this file fast (attacks not listed run with their defaults)."""
NOT_FOR_THIS_MODEL: dict[str, str] = {
    "sgm": "decays the gradient through residual blocks; the tabular MLP has none (refusal: test_sgm.py)",
}
"""Attacks that refuse the tabular MLP by design (left out of this file)."""


def _linear(d_in: int, d_out: int) -> nn.Linear:
    return nn.utils.skip_init(nn.Linear, d_in, d_out)  # no draw from the global RNG


@pytest.fixture(scope="module")
def wine() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's wine data, each feature standardised to mean 0 and standard deviation 1."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


@pytest.fixture(scope="module")
def tabular_model(wine, train_classifier) -> Classifier:
    """A 13-32-3 ReLU MLP on the standardised wine features, with unbounded inputs."""
    x, y = wine
    net = nn.Sequential(_linear(N_FEATURES, 32), nn.ReLU(), _linear(32, NUM_CLASSES))
    train_classifier(net, x, y, steps=200, lr=0.01, seed=5)
    return Classifier(net, bounds=UNBOUNDED, num_classes=NUM_CLASSES, input_shape=(N_FEATURES,)).eval()


@pytest.fixture(scope="module")
def tabular_batch(wine, tabular_model) -> tuple[torch.Tensor, torch.Tensor]:
    """12 examples (four per class) the model classifies correctly."""
    x, y = wine
    with torch.no_grad():
        ok = tabular_model(x).argmax(1) == y
    idx = torch.cat([(ok & (y == c)).nonzero().flatten()[:4] for c in range(NUM_CLASSES)])
    return x[idx].clone(), y[idx].clone()


def _cases(goals: bool = True) -> list:
    cases = []
    for name, cls in ATTACKS.items():
        if name in NOT_FOR_THIS_MODEL:
            continue
        for norm in cls.norms:
            for goal in ("untargeted", "targeted") if goals and cls.supports_targeted else ("untargeted",):
                cases.append(pytest.param(name, norm, goal, id=f"{name}-{norm}-{goal}"))
    return cases


def _attack(name: str, norm: str, **extra):
    return make_attack(name, norm=norm, **{**FAST.get(name, {}), **extra})


def _run(name, norm, model, x, y, threat, goal=None, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-gradient warnings of the decision-based attacks
        return _attack(name, norm)(model, x, y, threat, goal=goal, generator=seed)


def _goal(goal: str, y: torch.Tensor):
    return Targeted((y + 1) % NUM_CLASSES) if goal == "targeted" else None


def _tol(eps: float) -> float:
    return 1e-5 * max(1.0, eps) + 1e-6


@pytest.mark.parametrize("name,norm,goal", _cases())
def test_attack_output_is_finite_in_the_ball_and_success_is_recomputed(name, norm, goal, tabular_model, tabular_batch):
    x, y = tabular_batch
    assert float(x.min()) < 0.0 < float(x.max())  # standardised: far outside [0, 1]
    threat = ThreatModel(norm, EPS[norm])  # no bounds: the classifier's (-inf, inf)
    result = _run(name, norm, tabular_model, x, y, threat, _goal(goal, y))
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(torch.isfinite(x_adv).all()), "an unbounded box must never give inf or NaN"
    dist = threat.distance(x_adv, x)
    assert float(dist.max()) <= threat.eps + _tol(threat.eps)
    # contains() on the threat model itself would use the default box (0, 1): resolve it with the model's bounds
    assert bool(threat.resolve(tabular_model.bounds).contains(x_adv, x).all())
    torch.testing.assert_close(result.distance, dist)
    with torch.no_grad():
        pred = tabular_model(x_adv).argmax(1)
    expected = pred == (y + 1) % NUM_CLASSES if goal == "targeted" else pred != y
    assert torch.equal(result.success, expected)


@pytest.mark.parametrize("name,norm,goal", _cases(goals=False))
def test_eps_zero_determinism_and_bounds_from_the_classifier(name, norm, goal, tabular_model, tabular_batch):
    x, y = tabular_batch
    zero = _run(name, norm, tabular_model, x, y, ThreatModel(norm, 0))
    assert torch.equal(zero.x_adv, x)
    implicit = _run(name, norm, tabular_model, x, y, ThreatModel(norm, EPS[norm]), seed=4)
    explicit = _run(name, norm, tabular_model, x, y, ThreatModel(norm, EPS[norm], UNBOUNDED), seed=4)
    assert torch.equal(implicit.x_adv, explicit.x_adv), "a threat model without bounds takes the classifier's"
    again = _run(name, norm, tabular_model, x, y, ThreatModel(norm, EPS[norm]), seed=4)
    assert torch.equal(implicit.x_adv, again.x_adv)
    as_numpy = _run(name, norm, tabular_model, x.numpy(), y.numpy(), ThreatModel(norm, EPS[norm]), seed=4)
    assert isinstance(as_numpy.x_adv, np.ndarray)
    np.testing.assert_array_equal(as_numpy.x_adv, implicit.x_adv.numpy())


@pytest.mark.parametrize("name,norm", [(n, nm) for n in MUST_WORK for nm in get_attack(n).norms if nm in STRONG_EPS])
def test_named_attacks_lower_accuracy(name, norm, tabular_model, tabular_batch):
    x, y = tabular_batch
    threat = ThreatModel(norm, STRONG_EPS[norm])
    result = _run(name, norm, tabular_model, x, y, threat)
    with torch.no_grad():
        robust = float((tabular_model(result.x_adv).argmax(1) == y).float().mean())
    assert robust == pytest.approx(1.0 - result.success_rate)
    assert result.success_rate >= MIN_SUCCESS_RATE, f"{name} {norm}: success {result.success_rate}"


def test_half_bounded_features_stay_above_the_floor(tabular_model, tabular_batch):
    """Bounds (low, inf), e.g. counts that cannot go negative: the finite side is enforced, the other is not."""
    x, y = tabular_batch
    floor = float(x.min())
    model = Classifier(tabular_model.module, bounds=(floor, INF), num_classes=NUM_CLASSES, input_shape=(N_FEATURES,))
    for name, norm in (("pgd", "linf"), ("cw-l2", "l2"), ("deepfool", "l2"), ("square", "linf"), ("spsa", "linf")):
        result = _run(name, norm, model.eval(), x, y, ThreatModel(norm, STRONG_EPS[norm]))
        assert bool(torch.isfinite(result.x_adv).all())
        assert float(result.x_adv.min()) >= floor
        assert float(ThreatModel(norm, STRONG_EPS[norm]).distance(result.x_adv, x).max()) <= STRONG_EPS[norm] + 1e-4


DUAL = {"linf": lambda w: w.abs().sum(), "l2": lambda w: w.norm(), "l1": lambda w: w.abs().max()}


def _linear_points(make_linear_binary):
    model, w, b = make_linear_binary(d=20, seed=3, bounds=UNBOUNDED)
    x = torch.randn(200, 20, generator=torch.Generator().manual_seed(11)) * 2.0
    margin = x @ w + b
    keep = (margin.abs() > 5.0).nonzero().flatten()[:8]
    return model, w, b, x[keep], (margin[keep] > 0).long()


@pytest.mark.parametrize(
    "name,norm", [("pgd", "linf"), ("pgd", "l2"), ("fgsm", "linf"), ("fgsm", "l2"), ("apgd", "l2")]
)
def test_linear_model_without_a_box_reaches_the_analytic_optimum(name, norm, make_linear_binary):
    """Without a box, the most the margin w.x + b can move is eps * ||w||_dual, and gradient attacks reach it."""
    model, w, _b, x, y = _linear_points(make_linear_binary)
    eps = {"linf": 0.05, "l2": 0.5}[norm]
    settings = {"steps": 100, "step_size": eps / 4} if (name, norm) == ("pgd", "l2") else {}
    result = make_attack(name, norm=norm, **settings)(model, x, y, ThreatModel(norm, eps), generator=0)
    sign = torch.where(y == 1, 1.0, -1.0)
    moved = sign * ((x - result.x_adv) @ w)
    torch.testing.assert_close(moved, (eps * DUAL[norm](w)).expand_as(moved), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["deepfool", "cw-l2", "fmn"])
def test_minimum_norm_attacks_find_the_analytic_minimum_without_a_box(name, make_linear_binary):
    """The smallest L2 perturbation flipping sign(w.x + b) is |margin| / ||w||_2; no box stands in the way."""
    model, w, b, x, y = _linear_points(make_linear_binary)
    minimal = (x @ w + b).abs() / w.norm()
    result = make_attack(name, norm="l2")(model, x, y, ThreatModel("l2", float(minimal.max()) * 3), generator=0)
    assert bool(result.success.all())
    assert bool((result.distance >= minimal * (1 - 1e-4)).all())
    assert bool((result.distance <= minimal * 1.1 + 1e-3).all())


def test_procedures_on_unbounded_inputs(tabular_model, tabular_batch, wine):
    """A universal perturbation stays finite and in its ball; image transformations refuse an infinite box."""
    from advlab.dataset_level import universal_perturbation
    from advlab.physical.transforms import parse_transform

    x, _ = wine
    uap = universal_perturbation(tabular_model, x[:40], ThreatModel("l2", 2.0), max_passes=2, generator=0)
    v = torch.as_tensor(uap.perturbation)
    assert bool(torch.isfinite(v).all()) and float(v.norm()) <= 2.0 + 1e-4
    assert uap.threat.bounds == UNBOUNDED  # the classifier's bounds
    with pytest.raises(ValueError, match=r"^bounds: the transformations of images need a finite pixel range"):
        parse_transform("noise=0..0.1", bounds=UNBOUNDED)
