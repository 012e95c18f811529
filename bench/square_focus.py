"""Why ``standard``'s Square can focus its budget: the examples Square fools late are the ones whose loss is
already high early.

On the points that an evaluation's gradient stages left to Square (as ``bench/square_seeds.py``), this runs the
paper's linf Square (one run, ``--queries``) once per seed, recording every example's best loss at a few
checkpoints and the query at which it is fooled. For each checkpoint it prints where the examples that some run
fooled later rank by loss among the examples still attacked then: if they all rank in the top ``f``, stopping the
others there (``square(..., focus=f, focus_after=checkpoint)``) loses none of them. Usage (project venv; ~100 s
per seed on one thread):

    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_focus.py \\
        --report bench/out/eval_vs_aa_pgd5_v2/pgd5-advlab-report --model runs/mnist-pgd5 20 21 22 23

The search loop below is Square's (``advlab.attacks.square``), written out so that it can record the ranks.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from square_seeds import load_points

CHECKPOINTS = (250, 500, 1000, 2000, 4000)


def _run(sq, model, x, y, threat, n_queries: int, seed: int):
    """One run of the paper's linf Square: (best loss per example at each checkpoint, query each was fooled at)."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(x.shape)
    x_best = (x + threat.eps * sq._random_signs((x.shape[0], x.shape[1], 1, x.shape[3]), g, x)).clamp(*threat.bounds)
    best, fooled = sq._query(model, x_best, y, False, shape)
    fooled_at = torch.where(fooled, 1, -1)
    at_checkpoint = {}
    for i in range(n_queries - 2):
        if i + 1 in CHECKPOINTS:  # the run has made i + 1 queries
            at_checkpoint[i + 1] = best.clone()
        act = (~fooled).nonzero().flatten()
        if act.numel() == 0:
            break
        x_new = sq._propose_linf(x[act], x_best[act], sq.p_schedule(i, n_queries), threat.eps, threat.bounds, g)
        loss, succ = sq._query(model, x_new, y[act], False, shape)
        take = (loss > best[act]) | succ
        x_best[act[take]], best[act[take]] = x_new[take], loss[take]
        fooled[act[succ]] = True
        fooled_at[act[succ]] = i + 2
    return at_checkpoint, fooled_at


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", required=True, help="advlab report folder of a one-eps linf evaluation")
    p.add_argument("--model", required=True, help="the model folder that report evaluated")
    p.add_argument("--data", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("seeds", nargs="+", type=int)
    args = p.parse_args(argv)
    sq = importlib.import_module("advlab.attacks.square")
    model, x, y, threat, reached, _ = load_points(args.report, args.model, args.data, args.data_dir)
    if threat.norm != "linf":
        raise SystemExit("--report: this script runs the linf search; give a linf evaluation")
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(_run(sq, model, x, y, threat, args.queries, seed))
        print(
            f"seed {seed}: fooled {int((runs[-1][1] > 0).sum())} of {len(reached)} in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    ever = torch.stack([f > 0 for _, f in runs]).any(0)
    print(f"fooled by some run: {int(ever.sum())}")
    print("checkpoint | worst rank (top %) of a later-fooled example, per seed | attacked then")
    for q in CHECKPOINTS:
        worst, alive_n = [], []
        for at, fooled_at in runs:
            if q not in at:
                continue
            alive = (fooled_at < 0) | (fooled_at > q)
            order = at[q][alive].argsort(descending=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel())
            later = ever[alive]
            worst.append(f"{100 * (int(rank[later].max()) + 1) / order.numel():.1f}" if bool(later.any()) else "-")
            alive_n.append(str(int(alive.sum())))
        print(f"{q} | {' / '.join(worst)} | {' / '.join(alive_n)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
