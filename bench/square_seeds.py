"""How much of the last stage of ``standard`` is luck: Square alone, run with several seeds and budgets, on the
points that an earlier evaluation's gradient stages left robust.

``bench/eval_vs_autoattack.py`` writes advlab's full report beside its results (``OUT/LABEL-advlab-report``); its
per-example record says which points reached Square. This script reruns Square on exactly those points with each
``QUERIES:RESTARTS:SEED`` spec and prints how many it breaks, which ones, and the wall time, so the spread between
seeds can be set against the gap between libraries. Usage (project venv; ~100 s per spec on one thread):

    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_seeds.py \\
        --report bench/out/eval_vs_aa_pgd5_v2/pgd5-advlab-report --model runs/mnist-pgd5 \\
        5000:1:10 5000:1:11 2500:2:10 2500:2:11

The report must come from a one-eps evaluation of the same model on the first N test images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", required=True, help="advlab report folder of a one-eps evaluation (report.json)")
    p.add_argument("--model", required=True, help="the model folder that report evaluated")
    p.add_argument("--data", default=None, help="dataset (default: the model card's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--p-init", type=float, default=None, help="Square's initial window fraction (default: advlab's)")
    p.add_argument("specs", nargs="+", metavar="QUERIES:RESTARTS:SEED")
    args = p.parse_args(argv)

    import advlab
    from advlab.attacks.square import P_INIT, square
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    report = json.loads((Path(args.report) / "report.json").read_text())
    if len(report["eps"]) != 1:
        raise SystemExit(f"--report: expected a one-eps evaluation, got eps {report['eps']}")
    ex = report["examples"]
    reached = [i for i, (rob, by) in enumerate(zip(ex["robust"], ex["broken_by"])) if rob[-1] or by == "square"]
    model = load_model(args.model, device="cpu").eval()
    data = load_dataset(args.data or model.card["dataset"], split="test", data_dir=args.data_dir, n=report["n"])
    if torch.as_tensor(data.y).tolist() != ex["label"]:
        raise SystemExit("--report: its labels are not those of the first N test images of the dataset")
    x, y = torch.as_tensor(data.x)[reached], torch.as_tensor(data.y)[reached]
    threat = advlab.ThreatModel(report["norm"], eps=report["eps"][0])
    broke_then = sum(by == "square" for by in ex["broken_by"])
    print(f"{len(reached)} points reached Square in the report; its Square broke {broke_then}", flush=True)
    for spec in args.specs:
        queries, restarts, seed = (int(v) for v in spec.split(":"))
        t0 = time.perf_counter()
        r = square(model, x, y, threat, n_queries=queries, restarts=restarts, generator=seed,
                   p_init=P_INIT if args.p_init is None else args.p_init)
        wall = time.perf_counter() - t0
        broken = [reached[i] for i in torch.nonzero(r.success).flatten().tolist()]
        print(f"{spec}: broken {len(broken)}, robust {len(reached) - len(broken)} of {len(reached)}, {wall:.0f} s, "
              f"examples {broken}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
