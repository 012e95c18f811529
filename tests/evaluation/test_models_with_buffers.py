"""Models with BatchNorm and 0-dim buffers, end to end through ``advlab.evaluate``.

BatchNorm's ``num_batches_tracked`` is a 0-dim int64 buffer; the model fingerprint of the checkpoint
configuration once crashed on it (``self.dim() cannot be 0 to view Long as Byte``) for every BatchNorm model.
"""

from __future__ import annotations

import pytest
import torch
from _evaltoy import toy_data
from torch import nn

from advlab import Classifier
from advlab.attacks import PGD
from advlab.evaluation import evaluate

EPS = [0.05, 0.15, 0.3]
PGD5 = PGD(steps=5)


class BatchNormMargin(nn.Module):
    """The toy margin model behind an eval-mode BatchNorm: logits ``[0, scale * (x0 - 0.5)]``.

    The running mean is 0.5 and the running variance ``1 - bn.eps``, so BatchNorm subtracts 0.5 (and divides by
    one); ``scale`` is a 0-dim float buffer. Class 1 iff ``x0 > 0.5``; under linf, PGD breaks an example at eps
    iff its margin ``x0 - 0.5`` is below eps (the model is linear).
    """

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2)
        self.bn.running_mean.fill_(0.5)
        self.bn.running_var.fill_(1.0 - self.bn.eps)
        self.bn.num_batches_tracked.fill_(7)
        self.register_buffer("scale", torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * self.bn(x)[:, 0]
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _bn_toy() -> Classifier:
    return Classifier(BatchNormMargin(), num_classes=2, input_shape=(2,)).eval()


@pytest.mark.parametrize("train_mode", [False, True])
def test_batchnorm_model_with_0dim_buffers_matches_closed_form(train_mode):
    clf = _bn_toy()
    assert clf.module.bn.num_batches_tracked.dim() == 0 and clf.module.scale.dim() == 0
    x, y, margin = toy_data()
    if train_mode:  # evaluated in eval mode (running statistics), with a warning; the mode is restored
        clf.train()
        with pytest.warns(UserWarning, match="train mode"):
            rep = evaluate(clf, (x, y), EPS, attacks=[PGD5], checks=False)
        assert clf.module.bn.training
        clf.eval()
    else:
        rep = evaluate(clf, (x, y), EPS, attacks=[PGD5], checks=False)
    with torch.no_grad():
        pred = clf(x).argmax(1)
    assert torch.equal(pred, torch.ones_like(y))  # every margin is positive
    assert rep.clean_accuracy == pytest.approx((pred == y).float().mean().item())
    assert rep.examples["pred_clean"] == pred.tolist()
    for i, e in enumerate(EPS):
        expected = (y == 1) & (margin >= e)
        assert [row[i] for row in rep.examples["robust"]] == expected.tolist()
        assert rep.results[i].robust_accuracy == pytest.approx(expected.float().mean().item())
    assert clf.module.bn.num_batches_tracked.item() == 7  # evaluation never updates the running statistics


def _digits_bn_model(digits) -> Classifier:
    """Linear-BatchNorm-ReLU-Linear on digits, trained in train mode (non-trivial running statistics)."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.utils.skip_init(nn.Linear, 64, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.utils.skip_init(nn.Linear, 32, 10),
    )
    with torch.no_grad():
        for layer in (net[1], net[4]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * (2.0 / layer.weight.shape[1]) ** 0.5)
            layer.bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = digits["x_train"], digits["y_train"]
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return Classifier(net, num_classes=10, input_shape=(1, 8, 8)).eval()


def test_batchnorm_digits_model_end_to_end_and_resume(digits, tmp_path):
    clf = _digits_bn_model(digits)
    assert clf.module[2].num_batches_tracked.item() == 60
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    eps = [0.05, 0.1]
    rep = evaluate(clf, (x, y), eps, attacks=[PGD5], checkpoint_dir=tmp_path, batch_size=16)
    with torch.no_grad():
        pred_clean = clf(x).argmax(1)
        pred_adv = clf(rep.x_adv).argmax(1)
    assert rep.clean_accuracy == pytest.approx((pred_clean == y).float().mean().item()) and rep.clean_accuracy > 0.8
    assert rep.examples["pred_clean"] == pred_clean.tolist()
    # an independent recount: an example is robust at eps iff it is correct and its stored point is not an
    # adversarial example found within eps; every stored adversarial example is misclassified and in its ball
    dist = (rep.x_adv - x).flatten(1).abs().max(1).values
    for i, e in enumerate(eps):
        broken = (pred_adv != y) & (dist <= e + 1e-6)
        expected = (pred_clean == y) & ~broken
        assert [row[i] for row in rep.examples["robust"]] == expected.tolist()
        assert rep.results[i].robust_accuracy == pytest.approx(expected.float().mean().item())
    assert rep.results[-1].robust_accuracy < rep.clean_accuracy
    assert [c.name for c in rep.checks][:3] == ["randomness", "gradients", "large_eps"]
    # the 0-dim buffer is part of the model fingerprint: the same model resumes, another count is refused
    again = evaluate(clf, (x, y), eps, attacks=[PGD5], checkpoint_dir=tmp_path, batch_size=16)
    assert [(r.robust_accuracy, [s.n_broken for s in r.stages]) for r in again.results] == [
        (r.robust_accuracy, [s.n_broken for s in r.stages]) for r in rep.results
    ]
    assert again.examples == rep.examples and torch.equal(again.x_adv, rep.x_adv)
    clf.module[2].num_batches_tracked.add_(1)
    with pytest.raises(ValueError, match=r"another configuration \(differs in: model_sha256\)"):
        evaluate(clf, (x, y), eps, attacks=[PGD5], checkpoint_dir=tmp_path, batch_size=16)
