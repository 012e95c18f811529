"""What the processes of the distributed tests run (module-level functions: the processes are spawned, not forked).

The tests start processes with :func:`two`: through the same :func:`advlab.distributed.launch` as ``--nproc``, but
forked from a server process that has imported torch and advlab once (``forkserver``), so that each start costs a
fraction of a second instead of two seconds of imports per process.

The data is scikit-learn's 8x8 digits in [0, 1], loaded by the test and passed to the processes (which then need not
import scikit-learn: a second saved per process); the model a 64-32-10 MLP of the zoo, initialised from its seed, so
every process builds the same one. The training functions return what the tests compare: the per-epoch history
without the wall time, and the weights.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import torch

from advlab import distributed, zoo
from advlab.defenses import DEFENSES

DIE_CODE = 17
"""Exit status of a rank the tests kill."""
TIMEOUT_S = 60
"""Collectives of the tests give up after this (a hung test fails instead of hanging CI)."""
PRELOAD = ["torch", "torch._dynamo", "advlab.defenses", "advlab.cli.train", __name__]
"""What the server imports once: torch._dynamo too, which the first optimiser imports (two seconds)."""

multiprocessing.set_forkserver_preload(PRELOAD)


def two(fn: Any, *args: Any) -> list[Any]:
    """``fn(*args)`` in two processes of one gloo group; their results in rank order."""
    return distributed.launch(fn, *args, nproc=2, timeout_s=TIMEOUT_S, start_method="forkserver")


Data = tuple[torch.Tensor, torch.Tensor]
N_VAL = 397
"""The last digits are the validation set."""


def digits() -> Data:
    """All 1797 digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    return x, torch.tensor(d.target)


def model() -> Any:
    return zoo.build_classifier("mlp", (1, 8, 8), 10, seed=2, hidden=(32,))


def fit(
    data: Data,
    name: str,
    settings: dict[str, Any],
    n: int,
    die_at: float | None = None,
    seed_by_rank: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Train defense ``name`` on the first ``n`` digits of ``data`` (the last :data:`N_VAL` are the validation set).

    ``die_at``: rank 1 exits with :data:`DIE_CODE` at that fractional epoch (a killed process). ``seed_by_rank``:
    rank r trains with ``seed + r`` (ranks started with different settings).
    """
    x, y = data
    settings = dict(settings)
    if seed_by_rank:
        settings["seed"] = settings.get("seed", 0) + distributed.rank()
    trainer = DEFENSES.get(name)(**settings)
    if die_at is not None:
        _die_at(trainer, die_at)
    clf = model()
    trainer.fit(clf, (x[:n], y[:n]), (x[-N_VAL:], y[-N_VAL:]))
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in trainer.history_]
    return history, {k: v.detach().clone() for k, v in clf.state_dict().items()}


def fit_bn(data: Data, sync_bn: bool) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """A batch-norm network trained on each rank's GPU (``cuda:LOCAL_RANK``), with or without synchronised batch norm."""
    x, y = data
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 10)
    )
    trainer = DEFENSES.get("standard")(epochs=2, batch_size=64, lr=5e-3, progress=False, device="cuda", sync_bn=sync_bn)
    trainer.fit(net, (x[:1024], y[:1024]), (x[-N_VAL:], y[-N_VAL:]))
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in trainer.history_]
    return history, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _die_at(trainer: Any, at: float) -> None:
    inner = trainer.training_step

    def step(model: Any, x: torch.Tensor, y: torch.Tensor, epoch: float, **kwargs: Any) -> Any:
        if epoch >= at and distributed.rank() == 1:
            os._exit(DIE_CODE)
        return inner(model, x, y, epoch, **kwargs)

    trainer.training_step = step


def fits(data: Data, runs: list[tuple[str, dict[str, Any], int]]) -> list[Any]:
    """Several :func:`fit` in one set of processes (the processes start once)."""
    return [fit(data, name, settings, n) for name, settings, n in runs]


def collectives() -> dict[str, Any]:
    """Every collective of advlab.distributed once; what rank r saw."""
    w = distributed.world()
    out: dict[str, Any] = {"world": w, "threads": torch.get_num_threads()}
    out["sum"] = distributed.all_reduce(torch.tensor([1.0, float(w.rank)]), what="a sum").tolist()
    out["max"] = distributed.all_reduce(torch.tensor([float(w.rank)]), "max", what="a max").tolist()
    out["tensors"] = distributed.gather_tensors(torch.full((w.rank + 2, 3), float(w.rank)), what="rows")
    out["objects"] = distributed.gather_objects({"rank": w.rank})
    out["broadcast"] = distributed.broadcast_object(f"from {w.rank}", what="a string")
    out["on_main"] = distributed.on_main(lambda: w.rank * 10 + 7, what="a value")
    try:
        distributed.on_main(_refuse, what="a refusal")
    except ValueError as exc:
        out["on_main_error"] = str(exc)
    distributed.check_same({"a": 1, "b": [1, 2]})
    distributed.barrier("the end")
    return out


def _refuse() -> None:
    raise ValueError("rank 0 refuses")


def different(what: str) -> None:
    """Rank r compares a configuration whose ``seed`` is r."""
    distributed.check_same({"seed": distributed.rank(), "epochs": 3}, what=what)


def late(barrier_timeout_s: float) -> None:
    """Rank 1 never arrives at rank 0's barrier (it returns after rank 0 gave up)."""
    if distributed.rank() == 1:
        time.sleep(barrier_timeout_s + 3)
        return
    distributed.barrier("a barrier rank 1 never reaches", timeout_s=barrier_timeout_s)


def survivor(rank: int, data: Data, init_file: str, out_file: str, settings: dict[str, Any], n: int) -> None:
    """A rank of a group started without an agent (torch.multiprocessing): rank 1 dies during the first epoch,
    rank 0 writes what it raised and how long it took to notice, then exits."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=distributed.timeout(60)
    )
    t0 = time.perf_counter()
    try:
        fit(data, "standard", settings, n, die_at=0.5)
    except Exception as exc:
        Path(out_file).write_text(f"{type(exc).__name__}\n{time.perf_counter() - t0:.2f}\n{exc}")
    os._exit(0)
