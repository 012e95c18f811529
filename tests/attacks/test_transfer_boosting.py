"""The transfer-boosting attacks (DI, TI, NI, SI-NI, VMI/VNI): their limits are MI-FGSM bit for bit, their transforms
match hand-written references, and whole runs match torchattacks-style reference loops written here from the papers.

The reference loops follow the papers' code (and torchattacks): gradients of the summed per-example losses (each
example's gradient on the same scale as its neighbours'), normalised by their mean absolute value,
the step ``alpha * sign(g)``, then a clip to the eps-ball and to [0, 1]. advlab normalises by the L1 norm (a factor
``d`` apart, the same direction) and projects through its threat model, so the two agree up to float rounding: the
tests allow a few coordinates whose sign of a near-zero momentum differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import difgsm, mifgsm, nifgsm, sinifgsm, tifgsm, vmifgsm, vnifgsm
from advlab.attacks.transfer import diverse_inputs, gaussian_kernel
from advlab.rng import ExampleRNG

EPS = {"linf": 0.1, "l2": 1.0}


@pytest.fixture(scope="module")
def conv_model(digits, train_classifier) -> Classifier:
    """A small CNN on the 8x8 digits (spatial gradients for TI and DI)."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 64, 10)
    )
    train_classifier(net, digits["x_train"], digits["y_train"], steps=150, lr=0.01, seed=5)
    return Classifier(net, num_classes=10, input_shape=(1, 8, 8)).eval()


@pytest.fixture(scope="module")
def batch(digits):
    return digits["x_test"][:24].clone(), digits["y_test"][:24].clone()


# ---------------------------------------------------------------------- limits: MI-FGSM bit for bit
LIMITS = [
    ("difgsm p=0", lambda m, x, y, t, **k: difgsm(m, x, y, t, diversity_prob=0.0, **k), {}),
    ("tifgsm 1x1, p=0", lambda m, x, y, t, **k: tifgsm(m, x, y, t, kernel_size=1, diversity_prob=0.0, **k), {}),
    ("nifgsm mu=0", lambda m, x, y, t, **k: nifgsm(m, x, y, t, momentum=0.0, **k), {"momentum": 0.0}),
    ("sinifgsm m=1 no NI", lambda m, x, y, t, **k: sinifgsm(m, x, y, t, scales=1, nesterov=False, **k), {}),
    ("vmifgsm N=0", lambda m, x, y, t, **k: vmifgsm(m, x, y, t, samples=0, **k), {}),
]


@pytest.mark.parametrize("label,attack,mi_settings", LIMITS, ids=[c[0] for c in LIMITS])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_limit_is_mifgsm_bit_for_bit(label, attack, mi_settings, norm, conv_model, batch):
    if label.startswith("vmi") and norm == "l2":
        pytest.skip("variance tuning is linf only")
    x, y = batch
    threat = ThreatModel(norm, EPS[norm])
    for goal in (None, Targeted((y + 1) % 10)):
        got = attack(conv_model, x, y, threat, goal=goal, generator=3)
        want = mifgsm(conv_model, x, y, threat, goal=goal, **mi_settings)
        assert torch.equal(got.x_adv, want.x_adv), label
        assert torch.equal(got.success, want.success)


def test_sinifgsm_with_one_scale_is_nifgsm_and_vnifgsm_without_samples_is_nifgsm(conv_model, batch):
    x, y = batch
    threat = ThreatModel("linf", 0.1)
    ni = nifgsm(conv_model, x, y, threat).x_adv
    assert torch.equal(sinifgsm(conv_model, x, y, threat, scales=1).x_adv, ni)
    assert torch.equal(vnifgsm(conv_model, x, y, threat, samples=0).x_adv, ni)


def test_boosts_change_the_result(conv_model, batch):
    """Each boost does something: its default run differs from MI-FGSM's."""
    x, y = batch
    threat = ThreatModel("linf", 0.1)
    mi = mifgsm(conv_model, x, y, threat).x_adv
    for attack in (difgsm, tifgsm, nifgsm, sinifgsm, vmifgsm, vnifgsm):
        assert not torch.equal(attack(conv_model, x, y, threat).x_adv, mi), attack.__name__


# ---------------------------------------------------------------------- transforms against references
def _diverse_reference(x: torch.Tensor, u: torch.Tensor, rate: float, prob: float) -> torch.Tensor:
    """Xie et al.'s transform one row at a time: F.interpolate to the drawn size, F.pad at the drawn place."""
    out = x.clone()
    h, w = x.shape[-2:]
    for i in range(x.shape[0]):
        if not u[i, 0] < prob:
            continue
        low_h, low_w = int(h * rate), int(w * rate)
        rh = low_h + int(np.floor(float(u[i, 1]) * (h - low_h)))
        rw = low_w + int(np.floor(float(u[i, 1]) * (w - low_w)))
        top = int(np.floor(float(u[i, 2]) * (h - rh)))
        left = int(np.floor(float(u[i, 3]) * (w - rw)))
        small = F.interpolate(x[i : i + 1], size=[rh, rw], mode="bilinear", align_corners=False)
        out[i] = F.pad(small, [left, w - rw - left, top, h - rh - top], value=0)[0]
    return out


@pytest.mark.parametrize("shape,rate", [((40, 3, 32, 32), 0.9), ((40, 1, 28, 28), 0.7), ((40, 2, 9, 13), 0.5)])
def test_diverse_inputs_match_interpolate_and_pad(shape, rate):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    u = torch.rand(shape[0], 4, generator=g)
    got = diverse_inputs(x, u, rate, 0.6)
    want = _diverse_reference(x, u, rate, 0.6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    untouched = u[:, 0] >= 0.6
    assert untouched.any() and torch.equal(got[untouched], x[untouched])
    assert not torch.equal(got[~untouched], x[~untouched])


def test_gaussian_kernel_matches_the_papers_gkern():
    from scipy import stats

    for size, sigmas in ((15, 3.0), (5, 3.0), (7, 2.0)):
        profile = stats.norm.pdf(np.linspace(-sigmas, sigmas, size))
        raw = np.outer(profile, profile)
        np.testing.assert_allclose(gaussian_kernel(size, sigmas).numpy(), raw / raw.sum(), rtol=1e-6)
    assert torch.equal(gaussian_kernel(1, 3.0), torch.ones(1, 1))


# ---------------------------------------------------------------------- whole runs against reference loops
def _reference(model, x, y, eps, steps, *, mu=1.0, kernel=None, lookahead=False, scales=1, variance=None):
    """The papers' MI-FGSM family loop (torchattacks' form): NI lookahead, SI copies, TI kernel, VMI variance."""
    alpha = eps / steps
    x_adv, m, v = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(steps):
        x_var = x_adv.clone().requires_grad_(True)
        point = x_var + mu * alpha * m if lookahead else x_var
        grad = (
            sum(
                torch.autograd.grad(F.cross_entropy(model(point / 2**i), y, reduction="sum"), x_var)[0]
                for i in range(scales)
            )
            / scales
        )
        if variance is not None:
            samples, beta, draw = variance
            tuned = grad + v
            points = (x_adv[:, None] + beta * eps * (2 * draw(samples) - 1)).flatten(0, 1).requires_grad_(True)
            loss = F.cross_entropy(model(points), y.repeat_interleave(samples), reduction="sum")
            neighbours = torch.autograd.grad(loss, points)[0]
            v = neighbours.view(x.shape[0], samples, *x.shape[1:]).mean(1) - grad
            grad = tuned
        if kernel is not None:
            grad = F.conv2d(grad, kernel[None, None], padding=kernel.shape[0] // 2)
        m = mu * m + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        x_adv = x_adv + alpha * m.sign()
        x_adv = torch.clamp(x + torch.clamp(x_adv - x, -eps, eps), 0, 1).detach()
    return x_adv


def _agree(got: torch.Tensor, want: torch.Tensor, eps: float) -> None:
    """Same iterates up to coordinates whose near-zero momentum changed sign by rounding (at most 1%)."""
    far = (got - want).abs() > 1e-5
    assert float(far.float().mean()) <= 0.01, f"{int(far.sum())} of {far.numel()} coordinates differ"
    assert float((got - want).abs().max()) <= 2 * eps + 1e-6


@pytest.mark.parametrize(
    "name,call,reference",
    [
        ("nifgsm", lambda m, x, y, t: nifgsm(m, x, y, t), {"lookahead": True}),
        ("sinifgsm", lambda m, x, y, t: sinifgsm(m, x, y, t), {"lookahead": True, "scales": 5}),
        (
            "tifgsm",
            lambda m, x, y, t: tifgsm(m, x, y, t, kernel_size=3, diversity_prob=0.0),
            {"kernel": gaussian_kernel(3, 3.0)},
        ),
    ],
)
def test_matches_the_reference_loop(name, call, reference, conv_model, batch):
    x, y = batch
    eps = 0.1
    got = call(conv_model, x, y, ThreatModel("linf", eps)).x_adv
    want = _reference(conv_model.module, x, y, eps, 10, **reference)
    _agree(got, want, eps)


@pytest.mark.parametrize("nesterov", [False, True])
def test_variance_tuning_matches_the_reference_loop_on_the_same_draws(nesterov, conv_model, batch):
    """A torch.Generator gives both loops the same neighbours: one (N, samples, ...) uniform draw per step."""
    x, y = batch
    eps, samples = 0.1, 4
    attack = vnifgsm if nesterov else vmifgsm
    got = attack(conv_model, x, y, ThreatModel("linf", eps), samples=samples, generator=11).x_adv
    g = torch.Generator().manual_seed(11)

    def draw(k: int) -> torch.Tensor:
        return torch.rand((x.shape[0], k, *x.shape[1:]), generator=g)

    want = _reference(conv_model.module, x, y, eps, 10, lookahead=nesterov, variance=(samples, 1.5, draw))
    _agree(got, want, eps)


# ---------------------------------------------------------------------- randomness, inputs
@pytest.mark.parametrize("attack", [difgsm, tifgsm, vmifgsm])
def test_keyed_randomness_does_not_depend_on_the_batch(attack, conv_model, batch):
    """With an ExampleRNG an example's transforms and neighbours are its own, whatever else is in the batch."""
    x, y = batch
    threat = ThreatModel("linf", 0.1)
    ids = torch.arange(100, 100 + x.shape[0])
    full = attack(conv_model, x, y, threat, generator=ExampleRNG(5, "transfer", ids)).x_adv
    part = attack(conv_model, x[7:15], y[7:15], threat, generator=ExampleRNG(5, "transfer", ids[7:15])).x_adv
    torch.testing.assert_close(part, full[7:15], atol=1e-5, rtol=0)
    other = attack(conv_model, x, y, threat, generator=ExampleRNG(6, "transfer", ids)).x_adv
    assert not torch.equal(other, full)


@pytest.mark.parametrize("attack", [difgsm, tifgsm])
def test_spatial_boosts_refuse_inputs_that_are_not_images(attack, make_linear_binary):
    model, _, _ = make_linear_binary(d=20, seed=0)
    x = torch.zeros(4, 20)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^x: .* needs inputs of shape \(N, C, H, W\)"):
        attack(model, x, y, ThreatModel("linf", 0.1, (-100.0, 100.0)))


def test_even_kernel_size_is_refused():
    with pytest.raises(ValueError, match="^kernel_size: expected a positive odd int"):
        tifgsm.config(kernel_size=4)


def test_lookahead_runs_for_l2(conv_model, batch):
    x, y = batch
    threat = ThreatModel("l2", 1.0)
    result = sinifgsm(conv_model, x, y, threat)
    assert float(threat.distance(result.x_adv, x).max()) <= 1.0 + 1e-5
    assert result.success_rate > 0.3


# ---------------------------------------------------------------------- the logit loss
def test_logit_loss_is_the_labels_logit():
    from advlab.losses import get_loss

    logits = torch.tensor([[1.0, 5.0, -2.0], [0.5, 0.0, 3.0]])
    labels = torch.tensor([1, 2])
    loss = get_loss("logit")
    assert torch.equal(loss(logits, labels, False), torch.tensor([-5.0, -3.0]))
    assert torch.equal(loss(logits, labels, True), torch.tensor([5.0, 3.0]))


def test_logit_loss_drives_a_targeted_attack(conv_model, batch):
    """The loss's gradient is the target logit's: a targeted MI-FGSM on it reaches the target like one on CE."""
    x, y = batch
    threat = ThreatModel("linf", 0.3)
    target = Targeted((y + 1) % 10)
    logit = mifgsm(conv_model, x, y, threat, goal=target, steps=20, loss="logit")
    ce = mifgsm(conv_model, x, y, threat, goal=target, steps=20, loss="ce")
    assert logit.success_rate >= 0.8 * ce.success_rate > 0
