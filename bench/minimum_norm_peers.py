"""Agreement of advlab's DeepFool, C&W L2 and JSMA with Foolbox 3 / torchattacks on a digits MLP (no download).

Every library attacks the same ``nn.Module`` on the same correctly classified test digits; the table shows the
success rate and median distance of each, and the median ratio advlab / peer on examples both fooled (1.0 means
the same minimal perturbations). For JSMA the budget is a whole number of feature pairs (torchattacks rounds
``gamma * d / 2`` up, advlab down), so ``gamma`` is chosen to make both budgets equal, and identical
``x_adv`` are counted.

Usage (from the repository root; the peers come from ``bench/setup_peers.sh``):

    nice bench/.peers-venv/bin/python bench/minimum_norm_peers.py --n 16 --out bench/out/minimum_norm_peers.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import carlini_wagner_l2, deepfool, jsma
from advlab.io import write_json
from advlab.provenance import provenance


def digits_mlp(seed: int = 1) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A 64-64-10 ReLU MLP trained full-batch on scikit-learn digits (deterministic), and the test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1234))
    x, y = x[perm], y[perm]
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5 if p.dim() >= 2 else 0.0 * p)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[:1437]), y[:1437]).backward()
        opt.step()
    net.eval()
    return Classifier(net, num_classes=10, input_shape=(1, 8, 8)).eval(), x[1437:], y[1437:]


def compare(
    name: str,
    ours,
    peer_x: torch.Tensor,
    peer_success: torch.Tensor,
    x: torch.Tensor,
    p: float,
    seconds: tuple[float, float],
) -> dict:
    peer_d = (peer_x - x).flatten(1).norm(p=p, dim=1)
    both = ours.success & peer_success
    row = {
        "attack": name,
        "ours_success": float(ours.success.float().mean()),
        "ours_median": float(ours.distance[ours.success].median()),
        "peer_success": float(peer_success.float().mean()),
        "peer_median": float(peer_d[peer_success].median()),
        "median_ratio": float((ours.distance[both] / peer_d[both]).median()),
        "ours_seconds": seconds[0],
        "peer_seconds": seconds[1],
    }
    print(
        f"{name:28s} ours {row['ours_success']:.3f} / {row['ours_median']:.4f}   peer {row['peer_success']:.3f} / "
        f"{row['peer_median']:.4f}   ratio {row['median_ratio']:.4f}   time {seconds[0]:.1f}s vs {seconds[1]:.1f}s"
    )
    return row


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="correctly classified test digits to attack")
    parser.add_argument("--cw-steps", type=int, default=1000)
    parser.add_argument("--cw-bss", type=int, default=9)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    import foolbox as fb
    import torchattacks

    model, x_test, y_test = digits_mlp()
    with torch.no_grad():
        ok = (model(x_test).argmax(1) == y_test).nonzero().flatten()[: args.n]
    x, y = x_test[ok].clone(), y_test[ok].clone()
    fmodel = fb.PyTorchModel(model.module, bounds=(0, 1))
    crit = fb.criteria.Misclassification(y)
    rows = []

    for norm, attack, p in (
        ("l2", fb.attacks.L2DeepFoolAttack, 2.0),
        ("linf", fb.attacks.LinfDeepFoolAttack, float("inf")),
    ):
        ours, t0 = timed(lambda: deepfool(model, x, y, ThreatModel(norm, 100.0)))  # noqa: B023 - called within this iteration
        (_, xc, s), t1 = timed(lambda: attack(steps=50, candidates=10, overshoot=0.02)(fmodel, x, crit, epsilons=None))  # noqa: B023 - called within this iteration
        rows.append(compare(f"deepfool-{norm} vs foolbox", ours, xc, s, x, p, (t0, t1)))

    ours, t0 = timed(
        lambda: carlini_wagner_l2(
            model, x, y, ThreatModel("l2", 100.0), steps=args.cw_steps, binary_search_steps=args.cw_bss
        )
    )
    cw = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=args.cw_bss, steps=args.cw_steps, stepsize=0.01, initial_const=1e-3, abort_early=True
    )
    (_, xc, s), t1 = timed(lambda: cw(fmodel, x, crit, epsilons=None))
    rows.append(compare("cw-l2 vs foolbox", ours, xc, s, x, 2.0, (t0, t1)))

    target = (y + 1) % 10
    for pairs in (3, 8):
        gamma = 2 * pairs / 64
        ours, t0 = timed(lambda: jsma(model, x, y, ThreatModel("l0", 64), goal=Targeted(target), gamma=gamma))  # noqa: B023 - called within this iteration
        atk = torchattacks.JSMA(model.module, theta=1.0, gamma=gamma)
        atk.set_mode_targeted_by_label(quiet=True)
        xa, t1 = timed(lambda: atk(x, target))  # noqa: B023 - called within this iteration
        with torch.no_grad():
            s = model(xa).argmax(1) == target
        row = compare(f"jsma ({pairs} pairs) vs torchattacks", ours, xa, s, x, 0.0, (t0, t1))
        row["identical_x_adv"] = int(((xa - ours.x_adv).abs().flatten(1).amax(1) < 1e-6).sum())
        print(f"{'':28s} identical x_adv on {row['identical_x_adv']}/{x.shape[0]}")
        rows.append(row)

    if args.out:
        write_json(
            args.out,
            {
                "rows": rows,
                "n": int(x.shape[0]),
                "provenance": provenance(foolbox=fb.__version__, torchattacks=torchattacks.__version__),
            },
        )


if __name__ == "__main__":
    main()
