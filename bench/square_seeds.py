"""How much of the last stage of ``standard`` is luck: Square alone, run with several seeds and budgets, on the
points that an earlier evaluation's gradient stages left robust.

``bench/eval_vs_autoattack.py`` writes advlab's full report beside its results (``OUT/LABEL-advlab-report``); its
per-example record says which points reached Square. This script reruns Square on exactly those points with each
``QUERIES:RESTARTS:SEED`` spec and prints how many it breaks, which ones, and the wall time, so the spread between
seeds can be set against the gap between libraries. Usage (project venv; ~100 s per spec on one thread):

    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_seeds.py \\
        --report bench/out/eval_vs_aa_pgd5_v2/pgd5-advlab-report --model runs/mnist-pgd5 \\
        5000:1:10 5000:1:11 2500:2:10 2500:2:11 5000:3:10:0.1

A fourth field is Square's ``focus`` (the fraction of examples that go on after ``--focus-after`` queries).

The report must come from a one-eps evaluation of the same model on the first N test images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def load_points(report_dir: str, model_dir: str, data: str | None = None, data_dir: str | None = None):
    """``(model, x, y, threat, reached, report)``: the points of a one-eps report's evaluation that reached Square."""
    import advlab
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    report = json.loads((Path(report_dir) / "report.json").read_text())
    if len(report["eps"]) != 1:
        raise SystemExit(f"--report: expected a one-eps evaluation, got eps {report['eps']}")
    ex = report["examples"]
    reached = [i for i, (rob, by) in enumerate(zip(ex["robust"], ex["broken_by"])) if rob[-1] or by == "square"]
    model = load_model(model_dir, device="cpu").eval()
    dataset = load_dataset(data or model.card["dataset"], split="test", data_dir=data_dir, n=report["n"])
    if torch.as_tensor(dataset.y).tolist() != ex["label"]:
        raise SystemExit("--report: its labels are not those of the first N test images of the dataset")
    x, y = torch.as_tensor(dataset.x)[reached], torch.as_tensor(dataset.y)[reached]
    threat = advlab.ThreatModel(report["norm"], eps=report["eps"][0])
    return model, x, y, threat, reached, report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", required=True, help="advlab report folder of a one-eps evaluation (report.json)")
    p.add_argument("--model", required=True, help="the model folder that report evaluated")
    p.add_argument("--data", default=None, help="dataset (default: the model card's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--p-init", type=float, default=None, help="Square's initial window fraction (default: advlab's)")
    p.add_argument("--focus-after", type=int, default=None, help="queries before the focus (default: advlab's)")
    p.add_argument("specs", nargs="+", metavar="QUERIES:RESTARTS:SEED[:FOCUS]")
    args = p.parse_args(argv)

    from advlab.attacks.square import DEFAULT_FOCUS_AFTER, P_INIT, square

    model, x, y, threat, reached, report = load_points(args.report, args.model, args.data, args.data_dir)
    broke_then = sum(by == "square" for by in report["examples"]["broken_by"])
    print(f"{len(reached)} points reached Square in the report; its Square broke {broke_then}", flush=True)
    for spec in args.specs:
        fields = spec.split(":")
        queries, restarts, seed = (int(v) for v in fields[:3])
        focus = float(fields[3]) if len(fields) > 3 else 1.0
        t0 = time.perf_counter()
        r = square(
            model,
            x,
            y,
            threat,
            max_queries=queries,
            restarts=restarts,
            generator=seed,
            p_init=P_INIT if args.p_init is None else args.p_init,
            focus=focus,
            focus_after=DEFAULT_FOCUS_AFTER if args.focus_after is None else args.focus_after,
        )
        wall = time.perf_counter() - t0
        broken = [reached[i] for i in torch.nonzero(r.success).flatten().tolist()]
        print(
            f"{spec}: broken {len(broken)}, robust {len(reached) - len(broken)} of {len(reached)}, {wall:.0f} s, "
            f"examples {broken}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
