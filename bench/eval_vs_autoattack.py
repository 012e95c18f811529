"""Robust accuracy and cost of advlab's evaluation presets versus the reference, torchattacks' and ART's AutoAttack.

For each model (a folder written by ``advlab train``), the first ``--n`` test images are attacked at ``--eps`` by
  * advlab:        ``advlab.evaluate(..., attacks=PRESET)`` (``standard`` = APGD-CE on every example, APGD-T and
                   Square on the examples closest to breaking; see advlab.evaluation.presets),
  * reference:     Croce & Hein's AutoAttack (``import autoattack``, version "standard": APGD-CE, APGD-T and FAB-T
                   with 100 iterations and 9 targets, Square with 5000 queries), from ../shared/peers/auto-attack,
                   installed into the peers venv by bench/setup_peers.sh (never an advlab dependency),
  * torchattacks:  ``torchattacks.AutoAttack(version="standard")`` (APGD-CE, APGD-T, FAB-T, Square) as shipped:
                   note that torchattacks 3.5.1 builds it with each gradient attack's default of 10 iterations,
                   where Croce & Hein's AutoAttack uses 100,
  * torchattacks-paper: the same four attacks through ``torchattacks.MultiAttack`` at the paper's settings
                   (100 iterations for APGD-CE, APGD-T and FAB-T, 9 target classes, Square with 5000 queries),
  * ART:           ``art.attacks.evasion.AutoAttack`` with its default list (APGD-CE and APGD-DLR with 5 restarts
                   each, DeepFool, Square),
and the robust accuracies (with 95% Wilson intervals), wall times and passes of the model are written side by side.
Every library attacks the network through one counter (``advlab.passes.count_passes`` around the network: one
forward pass per example per call, one backward pass per example when a gradient reaches the output); advlab's
evaluation counts into the same counter, and its report's breakdown (``report.passes``) is recorded beside it. The peers get the
network with its normalisation as a plain ``nn.Module`` (bench/_peers.py), as a user would give it to them.

Run it with the peers venv's python, which sees advlab and the project's torch build as well as the peers
(see bench/setup_peers.sh); a library that does not import is skipped and reported as such:

    bash bench/setup_peers.sh
    # the two MNIST models (CPU: minutes for the standard one, much longer for PGD training)
    .venv/bin/advlab train --data mnist --arch wong-cnn --epochs 5 --out runs/mnist-std
    .venv/bin/advlab train --data mnist --arch wong-cnn --defense pgd --epochs 12 --lr 5e-3 --schedule cyclic \\
        --batch-size 100 --set eps=0.3 --set steps=5 --set eps_rampup=0.2 --out runs/mnist-pgd
    nice bench/.peers-venv/bin/python bench/eval_vs_autoattack.py \\
        --model standard=runs/mnist-std --model pgd-at=runs/mnist-pgd --eps 0.3 --n 1000 --out bench/out/eval_vs_aa

Results go to ``OUT/results.json`` and a Markdown table is printed (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from _peers import PeerModel

log = logging.getLogger("bench")


def _accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((pred.cpu() == y.cpu()).float().mean())


def run_advlab(model, x, y, eps, norm, preset, batch_size, seed, checks, report_dir=None):
    from advlab.evaluation import evaluate
    from advlab.reports import write_report

    t0 = time.perf_counter()
    report = evaluate(
        model, (x, y), eps, norm=norm, attacks=preset, batch_size=batch_size, seed=seed, checks=checks, progress=False
    )
    wall = time.perf_counter() - t0
    if report_dir is not None:
        write_report(report, report_dir)  # the full advlab report (HTML + JSON) of this run
    r = report.results[-1]
    return {
        "robust_accuracy": r.robust_accuracy,
        "clean_accuracy": report.clean_accuracy,
        "wall_s": wall,
        "attacks": [a["label"] for a in report.attacks],
        "per_stage_accuracy": {s.attack: s.accuracy_after for s in r.stages},
        "per_stage": [
            {
                "attack": s.attack,
                "attacked": s.n_attacked,
                "broken": s.n_broken,
                "wall_s": s.wall_time_s,
                "forward_passes": s.forward_passes,
                "backward_passes": s.backward_passes,
            }
            for s in r.stages
        ],
        "report_passes": {  # advlab's own count (report.json), beside the benchmark's independent counter
            "clean": report.passes.clean.total,
            "attacks": report.passes.attacks.total,
            "checks": report.passes.checks.total,
            "total": report.passes.total.total,
        },
        "checks_failed": [c.name for c in report.failed_checks],
    }


def run_reference(model, x, y, eps, norm, batch_size, seed):
    """The reference AutoAttack (Croce & Hein's code, ``../shared/peers/auto-attack``), version ``standard``."""
    import autoattack

    aa = autoattack.AutoAttack(
        PeerModel(model), norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=seed,
        device=str(x.device), verbose=True,
    )  # fmt: skip
    log_text = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log_text):
        adv = aa.run_standard_evaluation(x, y, bs=batch_size)
    wall = time.perf_counter() - t0
    print(log_text.getvalue(), end="")
    broken_by = {m.group(1).lower(): float(m.group(2)) / 100 for m in re.finditer(
        r"robust accuracy after ([\w-]+): ([\d.]+)%", log_text.getvalue())}  # fmt: skip
    return {
        "robust_accuracy": _accuracy(model, adv, y, batch_size),
        "wall_s": wall,
        "version": f"fra31/auto-attack {getattr(autoattack, '__version__', 'a392200')}",
        "attacks": ["apgd-ce (100)", "apgd-t (100, 9 targets)", "fab-t (100, 9 targets)", "square (5000)"],
        "per_stage": broken_by,
    }


def _run_torchattack(atk, model, x, y, batch_size, attacks: list[str]) -> dict:
    """Time a torchattacks attack over ``x`` in batches; robust accuracy of what it returns."""
    import torchattacks

    t0 = time.perf_counter()
    adv = torch.cat([atk(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    wall = time.perf_counter() - t0
    return {
        "robust_accuracy": _accuracy(model, adv, y, batch_size),
        "wall_s": wall,
        "version": torchattacks.__version__,
        "attacks": attacks,
    }


def run_torchattacks(model, x, y, eps, norm, batch_size, seed):
    import torchattacks

    atk = torchattacks.AutoAttack(
        PeerModel(model),
        norm={"linf": "Linf", "l2": "L2"}[norm],
        eps=eps,
        version="standard",
        n_classes=model.num_classes or 10,
        seed=seed,
    )
    return _run_torchattack(atk, model, x, y, batch_size, ["apgd-ce", "apgd-t", "fab-t", "square"])


def run_torchattacks_paper(model, x, y, eps, norm, batch_size, seed):
    """AutoAttack's "standard" version at the settings of Croce & Hein 2020 (and their reference code), built
    from torchattacks' own attacks: 100 iterations each for APGD-CE, APGD-T and FAB-T (not the 10 that
    ``torchattacks.AutoAttack`` uses), all 9 target classes, Square with 5000 queries."""
    import torchattacks as ta

    peer = PeerModel(model)
    tnorm = {"linf": "Linf", "l2": "L2"}[norm]
    k = model.num_classes or 10
    atk = ta.MultiAttack(
        [
            ta.APGD(peer, norm=tnorm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
            ta.APGDT(peer, norm=tnorm, eps=eps, steps=100, n_restarts=1, n_classes=k, seed=seed),
            ta.FAB(peer, norm=tnorm, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=k, seed=seed),
            ta.Square(peer, norm=tnorm, eps=eps, n_queries=5000, n_restarts=1, seed=seed),
        ]
    )
    return _run_torchattack(
        atk, model, x, y, batch_size, ["apgd-ce (100)", "apgd-t (100, 9 targets)", "fab-t (100)", "square (5000)"]
    )


def run_art(model, x, y, eps, norm, batch_size, seed):
    import art
    from art.attacks.evasion import AutoAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=PeerModel(model),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=model.num_classes or 10,
        clip_values=(0.0, 1.0),
        device_type="gpu" if x.is_cuda else "cpu",
    )
    attack = AutoAttack(
        estimator=clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=eps / 4, batch_size=batch_size
    )
    np.random.seed(seed)  # ART draws its random starts and Square's squares from the global generators
    torch.manual_seed(seed)
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    t0 = time.perf_counter()
    adv = attack.generate(x=xn, y=yn)
    wall = time.perf_counter() - t0
    return {
        "robust_accuracy": _accuracy(model, torch.from_numpy(adv).to(x.device), y, batch_size),
        "wall_s": wall,
        "version": art.__version__,
        "attacks": ["apgd-ce x5", "apgd-dlr x5", "deepfool", "square"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="LABEL=DIR", help="model folder (repeatable)")
    p.add_argument("--data", default=None, help="dataset (default: the model card's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--preset", default="standard", help="advlab preset or comma-separated attack list")
    p.add_argument(
        "--impl",
        default="advlab,reference,torchattacks",
        help="which implementations to run: advlab, reference (Croce & Hein's AutoAttack), torchattacks, "
        "torchattacks-paper, art",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checks", action="store_true", help="also run advlab's masking checks (counted in its time)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="bench/out/eval_vs_aa")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from advlab.data import load_dataset
    from advlab.evaluation import wilson_interval
    from advlab.passes import count_passes
    from advlab.provenance import provenance
    from advlab.zoo import load_model

    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    preset = args.preset if "," not in args.preset else args.preset.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"settings": vars(args), "provenance": provenance(torch_threads=torch.get_num_threads()), "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        if not path:
            label, path = Path(spec).name, spec
        model = load_model(path, device=args.device)
        model.module, counter = count_passes(model.module)  # every library's passes through the network, alike
        data = load_dataset(args.data or model.card.get("dataset"), "test", data_dir=args.data_dir, n=args.n)
        x, y = data.x.to(args.device), data.y.to(args.device)
        row = {"path": path, "n": len(y), "clean_accuracy": _accuracy(model, x, y, args.batch_size)}
        counter.reset()  # the clean accuracy above is not any library's cost
        for impl in impls:
            counter.reset()
            log.info("%s: %s on %d images at eps %g ...", label, impl, len(y), args.eps)
            try:
                if impl == "advlab":
                    res = run_advlab(
                        model,
                        x,
                        y,
                        args.eps,
                        args.norm,
                        preset,
                        args.batch_size,
                        args.seed,
                        args.checks,
                        out / f"{label}-advlab-report",
                    )
                elif impl == "torchattacks":
                    res = run_torchattacks(model, x, y, args.eps, args.norm, args.batch_size, args.seed)
                elif impl == "torchattacks-paper":
                    res = run_torchattacks_paper(model, x, y, args.eps, args.norm, args.batch_size, args.seed)
                elif impl == "art":
                    res = run_art(model, x, y, args.eps, args.norm, args.batch_size, args.seed)
                elif impl == "reference":
                    res = run_reference(model, x, y, args.eps, args.norm, args.batch_size, args.seed)
                else:
                    raise ValueError(f"unknown implementation {impl!r}")
                k = round(res["robust_accuracy"] * len(y))
                res["ci95"] = list(wilson_interval(k, len(y)))
                spent = counter.passes()
                counter.reset()
                res["forward_passes"], res["backward_passes"] = spent.forward, spent.backward
                res["passes"] = res["forward_passes"] + res["backward_passes"]
            except Exception as exc:  # record and go on: one peer failing must not lose the others' numbers
                res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=3)}
            log.info("  %s", {k: v for k, v in res.items() if k != "traceback"})
            row[impl] = res
            results["models"][label] = row
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    _print_passes(results, impls)
    print(f"\n| model | n | clean | {' | '.join(impls)} |")
    print("|---|---|---|" + "---|" * len(impls))
    for label, row in results["models"].items():
        cells = []
        for impl in impls:
            r = row.get(impl, {})
            cells.append(
                f"error: {r['error'][:60]}"
                if "error" in r
                else f"{100 * r['robust_accuracy']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] "
                f"in {r['wall_s']:.0f} s"
            )
        print(f"| {label} | {row['n']} | {100 * row['clean_accuracy']:.1f}% | {' | '.join(cells)} |")
    return 0


def _print_passes(results: dict, impls: list[str]) -> None:
    """Passes (forward + backward, in examples) and wall time of each library, and their ratio to the reference."""
    print(
        "\n| model | library | robust | forward | backward | passes | wall s | passes: ref / this | wall: ref / this |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, row in results["models"].items():
        ref = row.get("reference", {})
        for impl in impls:
            r = row.get(impl, {})
            if "error" in r or not r:
                continue
            ratio = f"{ref['passes'] / r['passes']:.1f}x" if "passes" in ref and r["passes"] else "-"
            wall = f"{ref['wall_s'] / r['wall_s']:.1f}x" if "wall_s" in ref and r["wall_s"] else "-"
            print(
                f"| {label} | {impl} | {100 * r['robust_accuracy']:.1f}% | {r['forward_passes']:,} | "
                f"{r['backward_passes']:,} | {r['passes']:,} | {r['wall_s']:.0f} | {ratio} | {wall} |"
            )


if __name__ == "__main__":
    sys.exit(main())
