"""An evaluation shared out between processes: which examples a rank attacks, and how the ranks' results meet.

Every rank of a ``torch.distributed`` run holds the whole data set and the model, and attacks its own examples,
every ``size``-th one starting at its rank (:func:`shard_of`). Because every draw is keyed by the example (see
:mod:`advlab.evaluation.engine`), an example's outcome does not depend on which rank attacks it or with which others.
The ranks meet twice:

- in a focused Square stage, where the focus ranks the losses of every example of the stage
  (:func:`decide_focus`): each rank sends its examples' losses, or the decision it stored before a kill; then the
  examples kept (the costly part) are shared out evenly (:func:`share_go_on`);
- at the end of the cascade (:func:`pack` on each rank, :func:`merge` of every rank's pack), so that the
  masking checks run once, over the whole set (each rank runs its share of them: :func:`check_units`), and one
  report is written.

In one process both are a pass-through: :func:`shard_of` is every example and no collective runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from advlab import distributed
from advlab.attacks.square import FocusPoint, focus_selection, top_scores
from advlab.distributed import World
from advlab.evaluation.checks import COSTLIEST_FIRST

SUMMED = ("n_attacked", "n_broken", "queries_sum", "queries_count", "forward", "backward")
"""A stage's bookkeeping that adds up over the ranks (its wall time is the longest rank's)."""


def shard_of(n: int, world: World) -> torch.Tensor:
    """The indices of the examples rank ``world.rank`` of ``world.size`` attacks: every ``size``-th from its rank.

    Interleaved rather than contiguous, so that each rank gets its share of every part of the data (a data set
    sorted by class, say, still gives every rank the same mix of easy and hard examples).

    Examples:
        >>> shard_of(10, World(rank=1, size=4))
        tensor([1, 5, 9])
    """
    return torch.arange(n)[world.rank :: world.size]


def check_units(world: World) -> tuple[str, ...]:
    """The gradient-masking checks rank ``world.rank`` runs: every ``size``-th of them, the costliest first.

    Every rank runs its checks on the same examples (the checks' draws are keyed by the example, as the attacks'),
    so the results are the ones one process gets.

    Examples:
        >>> check_units(World(rank=0, size=2))
        ('blackbox', 'large_eps')
    """
    return COSTLIEST_FIRST[world.rank :: world.size]


def closest_selection(margins: torch.Tensor, fraction: float, ids: torch.Tensor) -> torch.Tensor:
    """Bool mask of the ``ceil(fraction * m)`` of ``m`` examples with the highest margins (closest to breaking).

    Ties go to the smaller example id, so the choice depends neither on the examples' order nor on their sharing
    out between processes.

    Examples:
        >>> closest_selection(torch.tensor([-3.0, -0.5, -2.0, -0.5]), 0.5, torch.tensor([9, 8, 7, 6]))
        tensor([False,  True, False,  True])
    """
    n_keep = math.ceil(fraction * margins.shape[0])
    if n_keep == 0:
        return torch.zeros(margins.shape[0], dtype=torch.bool)
    return top_scores(margins, n_keep, ids)


def decide_closest(
    known: torch.Tensor | None,
    idx: torch.Tensor,
    margins: torch.Tensor,
    fraction: float,
    ids: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """The examples a :class:`~advlab.evaluation.presets.Closest` stage attacks, over every rank's: bool ``(n,)``.

    Each rank sends the decision it stored before a kill (every rank's is the same), else its still-robust examples
    ``idx`` and their margins; the decision is the first one sent, or :func:`closest_selection` over every example
    sent. In one process, no collective.

    Args:
        known: this rank's stored decision, or ``None``.
        idx: the indices of this rank's examples still robust.
        margins: their highest margins so far.
        fraction: the share attacked.
        ids: the ids of all ``n`` examples (they break ties).
        n: the number of examples in the evaluation.
    """
    mine: dict[str, Any] = {"keep": known} if known is not None else {"idx": idx, "margins": margins}
    parts = distributed.all_gather_objects(mine, what="choosing the examples closest to breaking over every rank's")
    decided = [p["keep"] for p in parts if "keep" in p]
    if decided:
        return decided[0]
    keep = torch.zeros(n, dtype=torch.bool)
    everyone = torch.cat([p["idx"] for p in parts])
    keep[everyone] = closest_selection(torch.cat([p["margins"] for p in parts]), fraction, ids[everyone])
    return keep


def sum_over_ranks(values: tuple[int, ...]) -> tuple[int, ...]:
    """Integers summed over every rank (the values themselves in one process)."""
    parts = distributed.all_gather_objects(list(values), what="adding up the ranks' counts")
    return tuple(sum(p[j] for p in parts) for j in range(len(values)))


def decide_focus(
    known: torch.Tensor | None,
    idx: torch.Tensor,
    point: FocusPoint | None,
    focus: float,
    ids: torch.Tensor,
    n: int,
    min_fooled: int = 0,
) -> torch.Tensor:
    """The focus of a Square stage over every rank's examples: bool ``(n,)``, True where the first run goes on.

    Each rank sends what it has: the decision ``known``, when it stored one before the run was killed (every rank's
    is the same), else the losses of its examples ``idx`` at the focus point. The decision is the first one sent, or
    :func:`~advlab.attacks.square.focus_selection` over every example sent (ties broken by the example ids, so the
    decision does not depend on how the examples were shared out). In one process, no collective.

    Args:
        known: this rank's stored decision, or ``None``.
        idx: the indices of this rank's examples in the stage.
        point: their points (``None`` when the rank has none, or has the decision).
        focus: the fraction of examples that go on.
        ids: the ids of all ``n`` examples.
        n: the number of examples in the evaluation.
        min_fooled: no example goes on when fewer than this many, over every rank, were fooled by the focus point.
    """
    mine = _focus_message(known, idx, point)
    parts = distributed.all_gather_objects(mine, what="deciding Square's focus over every rank's examples")
    decided = [p["keep"] for p in parts if "keep" in p]
    if decided:
        return decided[0]
    keep = torch.zeros(n, dtype=torch.bool)
    everyone = torch.cat([p["idx"] for p in parts])
    if everyone.numel() == 0:
        return keep
    joined = FocusPoint(
        x_best=torch.empty(everyone.numel(), 0),
        best_loss=torch.cat([p["loss"] for p in parts]),
        fooled=torch.cat([p["fooled"] for p in parts]),
        entered=torch.cat([p["entered"] for p in parts]),
        queries=torch.zeros(everyone.numel(), dtype=torch.int64),
    )
    keep[everyone] = focus_selection(joined, focus, ids[everyone], min_fooled)
    return keep


def share_go_on(
    known: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    idx: torch.Tensor,
    point: FocusPoint | None,
    go_on: Callable[[torch.Tensor, FocusPoint], tuple[torch.Tensor, torch.Tensor]],
    world: World,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The examples every rank kept at Square's focus point, shared out evenly: ``(indices, points, queries)``, or
    ``None`` when no rank kept any.

    Each rank sends its results of all the kept examples when it stored them (before a kill: the first sent are
    used), else the indices and focus points of its own kept examples ``idx``. Then every rank runs ``go_on`` on
    every ``size``-th of all kept examples, in index order, and the results meet, in index order.

    Args:
        known: this rank's stored results, or ``None``.
        idx: this rank's kept examples.
        point: their focus points (``None`` when there are none, or when ``known`` is given).
        go_on: runs examples on from their points: ``(points, queries)``.
        world: this process's place.
    """
    mine = {"results": known} if known is not None else {"idx": idx, "point": point}
    parts = distributed.all_gather_objects(mine, what="sharing out Square's kept examples")
    stored = [p["results"] for p in parts if "results" in p]
    if stored:
        return stored[0]
    given = [p for p in parts if p["point"] is not None]
    if not given:
        return None
    everyone = torch.cat([p["idx"] for p in given])
    order = everyone.argsort()
    joined = FocusPoint.cat([p["point"] for p in given]).rows(order)
    assigned = torch.arange(world.rank, everyone.numel(), world.size)
    x, q = go_on(everyone[order][assigned], joined.rows(assigned))
    done = distributed.all_gather_objects((everyone[order][assigned], x, q), what="gathering Square's kept examples")
    out_idx = torch.cat([d[0] for d in done])
    back = out_idx.argsort()
    return out_idx[back], torch.cat([d[1] for d in done])[back], torch.cat([d[2] for d in done])[back]


def _focus_message(known: torch.Tensor | None, idx: torch.Tensor, point: FocusPoint | None) -> dict[str, Any]:
    if known is not None:
        return {"keep": known}
    if point is None:
        idx = idx[:0]
        return {"idx": idx, "loss": torch.zeros(0), "fooled": torch.zeros(0, dtype=torch.bool),
                "entered": torch.zeros(0, dtype=torch.bool)}  # fmt: skip
    return {"idx": idx, "loss": point.best_loss.float(), "fooled": point.fooled, "entered": point.entered}


def pack(tensors: dict[str, torch.Tensor], meta: dict[str, Any], x: torch.Tensor, shard: torch.Tensor) -> dict:
    """What a rank sends of its state: per-example values of its shard, and its stages' bookkeeping.

    A tensor with one value per example travels for the shard's examples; one with a point per example (the worst
    cases, the minimum-norm points) only for the examples whose point moved from the clean input.
    """
    out: dict[str, Any] = {"idx": shard, "values": {}, "rows": {}, "meta": meta}
    for name, t in tensors.items():
        if name.startswith(("focus_keep_", "go_on_", "closest_slice_")):
            continue  # the same on every rank
        if t.dim() == 1:
            out["values"][name] = t[shard]
        else:
            moved = shard[(t[shard] != x[shard].to(t.dtype)).flatten(1).any(1)]
            out["rows"][name] = (moved, t[moved])
    return out


def merge(packs: list[dict], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Every rank's pack written into ``tensors`` (in place), and the ranks' bookkeeping merged into a new ``meta``.

    Counts add up (the forward and backward passes of each stage and of the clean pass too), the queries of the
    examples broken are pooled, wall times are the longest rank's (the ranks run side by side), and a stage is done
    when it is done on every rank.
    """
    for p in packs:
        for name, values in p["values"].items():
            tensors[name][p["idx"]] = values
        for name, (rows, points) in p["rows"].items():
            tensors[name][rows] = points
    merged = dict(meta)
    metas = [p["meta"] for p in packs]
    merged["clean_wall_s"] = max(m["clean_wall_s"] for m in metas)
    merged["clean_passes"] = {key: sum(m["clean_passes"][key] for m in metas) for key in ("forward", "backward")}
    merged["clean_done"] = all(m["clean_done"] for m in metas)
    merged["stages"] = {key: _merge_stage([m["stages"][key] for m in metas if key in m["stages"]])
                        for key in metas[0]["stages"]}  # fmt: skip
    return merged


def _merge_stage(stages: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(stages[0])
    for key in SUMMED:
        out[key] = sum(s[key] for s in stages)
    out["queries_broken"] = sorted(q for s in stages for q in s["queries_broken"])
    out["wall_s"] = max(s["wall_s"] for s in stages)
    out["done"] = all(s["done"] for s in stages)
    return out
