"""VAT (Miyato et al.): the power-iteration direction against the Hessian's top eigenvector, semi-supervised
data handling (unlabelled set, labels -1), supervised trainers refusing unlabelled data, the CLI --labels."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp

from advlab.defenses import VAT, GoodfellowTraining, StandardTraining
from advlab.defenses.trades import kl_to
from advlab.defenses.vat import split_labelled, vat_direction


def test_power_iteration_finds_top_eigenvector_of_kl_hessian():
    """Linear softmax model on 6 features: H = W^T (diag(p) - p p^T) W at r = 0 (closed form), compared with
    torch's autograd Hessian of r -> KL(p(x) || p(x + r)) and with the power-iteration direction."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 6, generator=g))
        lin.bias.copy_(torch.randn(4, generator=g))
    x = torch.rand(1, 6, generator=g)
    p = F.softmax(lin(x), 1)[0]
    h = lin.weight.T @ (torch.diag(p) - torch.outer(p, p)) @ lin.weight
    h_autograd = torch.autograd.functional.hessian(lambda r: kl_to(lin(x), lin(x + r[None]))[0], torch.zeros(6))
    torch.testing.assert_close(h_autograd, h, rtol=1e-4, atol=1e-5)
    top = torch.linalg.eigh(h.detach()).eigenvectors[:, -1]
    d = vat_direction(lin, x, xi=1e-3, n_power=20, generator=g)[0]
    assert abs(float(d @ top)) > 0.999
    assert float(d.norm()) == pytest.approx(1.0)
    # one iteration (the paper's setting) already moves a random start toward it
    starts = [
        abs(float(F.normalize(torch.randn(6, generator=torch.Generator().manual_seed(s)), dim=0) @ top))
        for s in range(20)
    ]
    ones = [
        abs(float(vat_direction(lin, x, xi=1e-3, n_power=1, generator=torch.Generator().manual_seed(s))[0] @ top))
        for s in range(20)
    ]
    assert sum(ones) / 20 > sum(starts) / 20 + 0.2


def test_semi_supervised_fit_uses_unlabelled_data_and_labels_minus_one():
    x, y = digits()
    lab, rest = split_labelled(y[:1400], 50, 10, seed=0)
    s = dict(eps=1.0, epochs=2, lr=1e-2, batch_size=32, unlabeled_batch_size=128, progress=False)
    a = VAT(**s).fit(mlp(), (x[lab], y[lab]), (x[1400:], y[1400:]), unlabeled=x[:1400][rest])
    y_marked = y[:1400].clone()
    y_marked[rest] = -1
    # the same split given as labels -1 is the same training (labelled first, unlabelled in file order)
    b = VAT(**s).fit(
        mlp(), (torch.cat([x[lab], x[:1400][rest]]), torch.cat([y[lab], y_marked[rest]])), (x[1400:], y[1400:])
    )
    for pa, pb in zip(a.model_.parameters(), b.model_.parameters()):
        torch.testing.assert_close(pa, pb)
    assert a.unlabeled_.shape[0] == 1350
    assert len(a.history_) == 2 and 0 <= a.history_[-1]["val_accuracy"] <= 1


def test_split_labelled_is_balanced_and_seeded():
    _, y = digits()
    lab, rest = split_labelled(y, 100, 10, seed=3)
    assert torch.bincount(y[lab], minlength=10).tolist() == [10] * 10
    assert lab.numel() + rest.numel() == y.numel() and not set(lab.tolist()) & set(rest.tolist())
    assert torch.equal(lab, split_labelled(y, 100, 10, seed=3)[0])
    assert not torch.equal(lab, split_labelled(y, 100, 10, seed=4)[0])
    with pytest.raises(ValueError, match="labels"):
        split_labelled(y, 105, 10)


def test_supervised_trainers_refuse_unlabelled_data():
    x, y = digits()
    with pytest.raises(ValueError, match="unlabeled: the 'standard' trainer is supervised"):
        StandardTraining(progress=False).fit(mlp(), (x[:50], y[:50]), unlabeled=x[50:100])
    y2 = y[:50].clone()
    y2[:5] = -1
    with pytest.raises(ValueError, match="'goodfellow' trainer is supervised"):
        GoodfellowTraining(progress=False).fit(mlp(), (x[:50], y2))


@pytest.mark.parametrize(
    "kwargs, match", [({"eps": 0.0}, "eps"), ({"xi": -1}, "xi"), ({"n_power": 0}, "n_power"), ({"alpha": -1}, "alpha")]
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAT(**kwargs)


def test_cli_labels_trains_semi_supervised(tmp_path, capsys):
    from advlab.cli import main

    out = tmp_path / "vat"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--arch",
                "mlp",
                "--defense",
                "vat",
                "--labels",
                "50",
                "--epochs",
                "1",
                "--batch-size",
                "25",
                "--set",
                "unlabeled_batch_size=256",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["defense"] == "vat" and card["training"]["n_train"] == 50
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--arch",
                "mlp",
                "--labels",
                "50",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "std"),
            ]
        )
        != 0
    )
    assert "'standard' trainer is supervised" in capsys.readouterr().err
