"""Processes that share one run through ``torch.distributed``: who this process is, collectives that fail loudly.

advlab scales out on the engine PyTorch users already run: ``torch.distributed``, launched by ``torchrun`` (gloo on
CPU, NCCL on GPUs), never a home-made one. This module is the one place the rest of advlab asks about it:

- :func:`world` (:func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main`): from an initialised
  process group, else from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else one
  process (rank 0 of 1). Every function below is a no-op, or returns its input, in one process.
- :func:`process_group` / :func:`init`: start the process group of a ``torchrun`` worker with a timeout
  (:func:`timeout`, ``ADVLAB_DIST_TIMEOUT`` seconds), on the backend of the device (:func:`backend_for`), and
  :func:`device_for` gives each local rank its own GPU.
- Collectives with a timeout that name what they were doing when they fail (:class:`DistributedError`):
  :func:`barrier`, :func:`all_reduce`, :func:`broadcast_object`, :func:`on_main` (rank 0 does something, every rank
  gets its result or its exception), :func:`gather_objects` and :func:`gather_tensors` (variable sizes) to rank 0,
  :func:`all_gather_objects` to every rank.
- :func:`check_same`: every rank was started with the same settings (refused before any work otherwise).
- :func:`launch`: start ``nproc`` local workers for a function through torch's elastic agent (what ``torchrun``
  runs), for ``--nproc N`` options and for tests.

Failure modes, and what a user sees:

- A rank that dies (killed, out of memory, an exception): under ``torchrun`` or :func:`launch` the elastic agent
  sees it within a fraction of a second, stops the other ranks and reports the rank and exit code (a rank whose
  collective failed meanwhile waits :data:`AGENT_GRACE_S` first, so the report names the rank that died). Without
  an agent the other ranks' next collective fails at once (gloo and NCCL notice the closed connection) or at the
  latest after :func:`timeout`, and raises :class:`DistributedError` naming the step.
- A rank that hangs (a deadlock, a stuck file system): the others wait at most :func:`timeout` in a collective,
  then raise :class:`DistributedError`; :func:`barrier` on gloo names the ranks that did not arrive.
- Ranks started with different settings: :func:`check_same` raises ``ValueError`` on every rank, naming the ranks
  and the settings that differ, before any work is done.

Examples:
    >>> with process_group(torch.device("cpu")) as w:   # under torchrun: gloo, rank and size from the environment
    ...     check_same({"epochs": 5, "seed": 0})
    ...     total = all_reduce(torch.tensor([float(w.rank)]), what="summing the ranks")
    >>> results = launch(work, 10, nproc=2)                # work(10) on two local workers; [rank 0's, rank 1's]
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT_ENV = "ADVLAB_DIST_TIMEOUT"
"""Environment variable: seconds a collective waits for the other ranks before it fails (default 1800)."""
DEFAULT_TIMEOUT_S = 1800.0
"""A collective fails after this many seconds without the other ranks (PyTorch's own default for gloo)."""
MONITOR_INTERVAL_S = 0.1
"""How often :func:`launch`'s agent looks at its workers (a dead one stops the others within about this)."""
AGENT_GRACE_S = 2.0
"""Under an elastic agent (torchrun, :func:`launch`), a rank whose collective failed because of another waits this long
before failing itself, so that the agent, which stops everyone at the first exit it sees, reports the rank that
failed first as the cause rather than the one that noticed it."""
FAILURE_MARKERS = (
    "connection closed by peer",
    "connection reset",
    "timed out",
    "timeout",
    "broken pipe",
    "nccl",
    "gloo",
    "process group",
    "monitoredbarrier",
    "failed to pass",
)
"""Phrases of gloo's and NCCL's errors that say a collective failed because of another rank."""


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died, hangs, or cannot be reached."""


# ---------------------------------------------------------------------------------------------- who am I


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its machine.

    ``backend`` is the initialised process group's (``"gloo"``, ``"nccl"``) or ``None`` when there is none.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, reports and model cards, and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """An initialised process group of more than one process: collectives are needed."""
        return self.backend is not None and self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default


def world() -> World:
    """This process's :class:`World`: from the initialised process group, else from ``torchrun``'s environment.

    Without either, one process: ``World(rank=0, size=1, local_rank=0, backend=None)``.

    Examples:
        >>> w = world()
        >>> part = indices.tensor_split(w.size)[w.rank]
    """
    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))
    return World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), local, None)


def rank() -> int:
    """This process's rank (0 in one process)."""
    return world().rank


def world_size() -> int:
    """The number of processes (1 in one process)."""
    return world().size


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 in one process)."""
    return world().local_rank


def is_main() -> bool:
    """Whether this is rank 0 (also true in one process)."""
    return world().is_main


def launched() -> bool:
    """Whether ``torchrun`` (or :func:`launch`) started this process as one of several: ``WORLD_SIZE`` > 1 is set."""
    return "RANK" in os.environ and _env_int("WORLD_SIZE", 1) > 1


# ---------------------------------------------------------------------------------------------- the process group


def timeout(seconds: float | None = None) -> datetime.timedelta:
    """How long a collective waits for the other ranks: ``seconds``, else ``ADVLAB_DIST_TIMEOUT``, else 1800 s.

    Args:
        seconds: an explicit timeout (> 0).

    Raises:
        ValueError: a timeout that is not a positive number of seconds.
    """
    value: Any = seconds if seconds is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    try:
        s = float(value)
    except (TypeError, ValueError):
        s = -1.0
    if not s > 0:
        raise ValueError(f"timeout ({TIMEOUT_ENV}): expected a positive number of seconds, got {value!r}")
    return datetime.timedelta(seconds=s)


def backend_for(device: torch.device | str | None) -> str:
    """The backend for ``device``: NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"


def device_for(device: torch.device | str) -> torch.device:
    """``device`` for this process: a CUDA device without an index becomes ``cuda:LOCAL_RANK`` (and current).

    One GPU per process is what NCCL needs; ``--device cuda`` under ``torchrun`` then means each rank's own GPU.

    Args:
        device: the device asked for (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if device.index is None:
        device = torch.device("cuda", local_rank() if launched() or dist.is_initialized() else 0)
    torch.cuda.set_device(device)
    return device


def init(
    device: torch.device | str | None = None, *, backend: str | None = None, timeout_s: float | None = None
) -> bool:
    """Initialise the process group of a worker started by ``torchrun`` (``env://``); ``False`` when not needed.

    Nothing happens in a process that was not launched as one of several, or whose group is already initialised.

    Args:
        device: the device this rank computes on; picks the backend (NCCL for CUDA, gloo otherwise).
        backend: overrides the backend.
        timeout_s: seconds a collective waits (see :func:`timeout`).

    Returns:
        Whether this call initialised the group (then :func:`shutdown` it at the end).

    Raises:
        DistributedError: the rendezvous with the other ranks failed or timed out.
    """
    if not launched() or dist.is_initialized():
        return False
    chosen = backend or backend_for(device)
    kwargs: dict[str, Any] = {"backend": chosen, "timeout": timeout(timeout_s)}
    if chosen == "nccl" and device is not None:
        kwargs["device_id"] = device_for(device)
    with guard("joining the other ranks (init_process_group)"):
        dist.init_process_group(**kwargs)
    log.debug("rank %d of %d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), chosen)
    return True


def shutdown() -> None:
    """Destroy the process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    device: torch.device | str | None = None, *, backend: str | None = None, timeout_s: float | None = None
) -> Iterator[World]:
    """Within it, a ``torchrun`` worker is in its process group (initialised here unless it already was).

    A process not launched by ``torchrun`` runs alone (``World()``); a group initialised here is destroyed on exit.

    Args:
        device: the device of this rank (the backend follows it).
        backend: overrides the backend.
        timeout_s: seconds a collective waits (see :func:`timeout`).

    Examples:
        >>> with process_group(device) as w:
        ...     trainer.fit(model, train)          # DistributedDataParallel when w.size > 1
    """
    started = init(device, backend=backend, timeout_s=timeout_s)
    try:
        yield world()
    finally:
        if started:
            shutdown()


# ---------------------------------------------------------------------------------------------- collectives


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because of another rank (closed connection, timeout...)."""
    if isinstance(exc, DistributedError):
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in FAILURE_MARKERS)


@contextlib.contextmanager
def guard(what: str, *, timeout_s: float | None = None) -> Iterator[None]:
    """Turn a collective's failure inside the block into a :class:`DistributedError` that says what was going on.

    Only in a process that is one of several (in one process, and for other exceptions, nothing changes).

    Args:
        what: what the block does, e.g. ``"training epoch 3"`` (the message says where the run stopped).
        timeout_s: the timeout the block's collectives use, for the message (default: :func:`timeout`).
    """
    try:
        yield
    except Exception as exc:
        if not (launched() or world().distributed) or not is_collective_failure(exc):
            raise
        if "TORCHELASTIC_RUN_ID" in os.environ:
            time.sleep(AGENT_GRACE_S)  # let the agent see the rank that failed first (it then stops this one)
        w = world()
        raise DistributedError(
            f"rank {w.rank} of {w.size}: {what} failed because another rank died, hangs or cannot be reached "
            f"({type(exc).__name__}: {str(exc).strip()[:300]}). Look at the other ranks' output for the first "
            f"error; collectives wait at most {timeout(timeout_s).total_seconds():g} s ({TIMEOUT_ENV}). Finished "
            "checkpoints are kept: run the same command again to resume."
        ) from exc


def _wait(work: Any, what: str, seconds: float | None) -> None:
    with guard(what, timeout_s=seconds):
        if work is not None:
            work.wait(timeout(seconds))


def barrier(what: str = "waiting for the other ranks", *, timeout_s: float | None = None) -> None:
    """Wait until every rank arrives, at most :func:`timeout` (gloo names the ranks that did not arrive).

    Args:
        what: what the ranks are waiting for (in the error message).
        timeout_s: seconds to wait (see :func:`timeout`).

    Raises:
        DistributedError: a rank did not arrive in time or died.
    """
    w = world()
    if not w.distributed:
        return
    with guard(what, timeout_s=timeout_s):
        if w.backend == "gloo":
            dist.monitored_barrier(timeout=timeout(timeout_s), wait_all_ranks=True)
        else:
            dist.barrier()


def _comm_device(tensor: torch.Tensor) -> torch.device:
    """Where a collective's tensors live: the current GPU for NCCL, the CPU for gloo."""
    if world().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if tensor.device.type != "cpu" else tensor.device


def all_reduce(
    tensor: torch.Tensor, op: str = "sum", *, what: str = "all_reduce", timeout_s: float | None = None
) -> torch.Tensor:
    """The elementwise ``op`` (``"sum"``, ``"max"``, ``"min"``) of ``tensor`` over all ranks, on every rank.

    Returns a new tensor on the device of ``tensor``; ``tensor`` itself is not changed (in one process, a copy).

    Args:
        tensor: this rank's values (same shape and dtype on every rank).
        op: the reduction.
        what: what is being reduced (in the error message).
        timeout_s: seconds to wait (see :func:`timeout`).

    Raises:
        DistributedError: another rank died or did not answer in time.

    Examples:
        >>> totals = all_reduce(torch.tensor([loss_sum, correct, seen], dtype=torch.float64), what="epoch totals")
    """
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    if op not in ops:
        raise ValueError(f"op: expected one of {sorted(ops)}, got {op!r}")
    out = tensor.detach().clone()
    if not world().distributed:
        return out
    buf = out.to(_comm_device(out))
    _wait(dist.all_reduce(buf, op=ops[op], async_op=True), what, timeout_s)
    return buf.to(tensor.device)


def broadcast_object(obj: Any, src: int = 0, *, what: str = "broadcast") -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small objects and state, not for bulk data).

    Args:
        obj: the object (ignored on the other ranks).
        src: the rank that sends.
        what: what is sent (in the error message).
    """
    if not world().distributed:
        return obj
    box = [obj]
    with guard(what):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], Any], *, what: str) -> Any:
    """Run ``fn`` on rank 0 only; every rank returns its result, or raises the exception it raised.

    For what one process must do alone (reading a checkpoint, checking a folder) when every rank needs the outcome:
    an error on rank 0 stops every rank with the same message, instead of leaving the others waiting in their next
    collective. The result travels pickled: keep it small (state, not data sets).

    Args:
        fn: what rank 0 does.
        what: what it is (in the error message of a failed broadcast).

    Examples:
        >>> saved = on_main(checkpoint.load, what="reading the checkpoint")
    """
    if not world().distributed:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as exc:
            outcome = (False, exc)
    ok, value = broadcast_object(outcome, what=what)
    if not ok:
        raise value
    return value


def gather_objects(obj: Any, *, dst: int = 0, what: str = "gather") -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst`` (a list in rank order); ``None`` on the other ranks.

    Args:
        obj: this rank's (small, picklable) object.
        dst: the rank that receives.
        what: what is gathered (in the error message).
    """
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] | None = [None] * w.size if w.rank == dst else None
    with guard(what):
        dist.gather_object(obj, out, dst=dst)
    return out


def gather_tensors(
    tensor: torch.Tensor, *, dst: int = 0, what: str = "gather", timeout_s: float | None = None
) -> list[torch.Tensor] | None:
    """Every rank's ``tensor`` on rank ``dst``, in rank order; the first dimension may differ between ranks.

    The other dimensions and the dtype must agree. Results are on the device of ``tensor``; ``None`` off ``dst``.

    Args:
        tensor: this rank's tensor (e.g. its shard's per-example results), at least one dimension.
        dst: the rank that receives.
        what: what is gathered (in the error message).
        timeout_s: seconds to wait (see :func:`timeout`).

    Raises:
        ValueError: a 0-dimensional tensor, or ranks whose tensors differ in more than their first dimension.
        DistributedError: another rank died or did not answer in time.

    Examples:
        >>> parts = gather_tensors(success_of_my_shard, what="per-example outcomes")
        >>> if parts is not None:
        ...     success = torch.cat(parts)
    """
    w = world()
    if tensor.dim() == 0:
        raise ValueError("tensor: expected at least one dimension to gather along, got a 0-d tensor")
    if not w.distributed:
        return [tensor.detach().clone()]
    shapes = all_gather_objects((tuple(tensor.shape), str(tensor.dtype)), what=what)
    if len({(s[1:], d) for s, d in shapes}) != 1:
        raise ValueError(f"{what}: the ranks' tensors differ beyond their first dimension: {shapes}")
    longest = max(s[0] for s, _ in shapes)
    buf = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=_comm_device(tensor))
    buf[: tensor.shape[0]] = tensor.detach()
    parts = [torch.empty_like(buf) for _ in range(w.size)] if w.rank == dst else None
    _wait(dist.gather(buf, parts, dst=dst, async_op=True), what, timeout_s)
    if parts is None:
        return None
    return [p[: s[0]].to(tensor.device) for p, (s, _) in zip(parts, shapes)]


def all_gather_objects(obj: Any, *, what: str = "all_gather") -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order (pickled: for state and shards' results, not data sets).

    Args:
        obj: this rank's picklable object.
        what: what is gathered (in the error message).

    Raises:
        DistributedError: another rank died or did not answer in time.

    Examples:
        >>> parts = all_gather_objects({"idx": shard, "loss": loss}, what="the losses at the focus point")
    """
    if not world().distributed:
        return [obj]
    out: list[Any] = [None] * world().size
    with guard(what):
        dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------- same settings


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration's canonical JSON (sorted keys; other values by ``str``)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def check_same(config: Mapping[str, Any], *, what: str = "settings") -> None:
    """Refuse to go on unless every rank has the same ``config``: call it before any work.

    Ranks compare a hash of the configuration; when they differ, every rank raises the same error, naming the
    ranks and the keys that differ from rank 0's, so that no rank starts work the others will not match.

    Args:
        config: what must agree (settings, data and model fingerprints); JSON-friendly.
        what: what it is, for the message (``"settings"``, ``"command line"``).

    Raises:
        ValueError: the ranks were started with different configurations.
        DistributedError: another rank died or did not answer in time.

    Examples:
        >>> check_same({**trainer.settings(), "n_train": len(train)}, what="training settings")
    """
    if not world().distributed:
        return
    mine = dict(config)
    seen = all_gather_objects((config_digest(mine), mine), what=f"comparing the {what} of the ranks")
    ref_hash, ref = seen[0]
    differing = [(r, cfg) for r, (h, cfg) in enumerate(seen) if h != ref_hash]
    if not differing:
        return
    parts = []
    for r, cfg in differing:
        keys = sorted(k for k in set(ref) | set(cfg) if ref.get(k) != cfg.get(k))
        shown = ", ".join(f"{k} ({ref.get(k)!r} on rank 0, {cfg.get(k)!r})" for k in keys[:5])
        parts.append(f"rank {r} differs in {shown or 'its values'}" + (" ..." if len(keys) > 5 else ""))
    raise ValueError(
        f"the ranks were started with different {what}: {'; '.join(parts)}. Start every rank with the same "
        "command and settings (torchrun passes the same arguments to each)."
    )


# ---------------------------------------------------------------------------------------------- local workers


def _worker(fn: Callable[..., Any], backend: str, timeout_s: float | None, threads: int | None, *args: Any) -> Any:
    """What each process of :func:`launch` runs: join the group, call ``fn(*args)``, leave the group.

    An exception is recorded in the agent's error file (as ``torch.distributed.elastic``'s ``@record`` does), so
    that :func:`launch` can say what failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    handler = get_error_handler()
    handler.initialize()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with process_group(backend=backend, timeout_s=timeout_s):
            return fn(*args)
    except Exception as exc:
        handler.record_exception(exc)
        raise


def launch(
    fn: Callable[..., Any],
    *args: Any,
    nproc: int,
    backend: str = "gloo",
    timeout_s: float | None = None,
    threads: int | None = 1,
    start_method: str = "spawn",
) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` new local processes in one process group; their results in rank order.

    The processes are started by torch's elastic agent (``torch.distributed.launcher``, what ``torchrun`` runs)
    with a rendezvous on a free local port; each joins the group (``backend``, :func:`timeout`) before ``fn`` runs
    and leaves it after. ``fn`` and ``args`` must be picklable (a module-level function): the processes are
    spawned, not forked. Each process computes on ``threads`` threads (``None``: PyTorch's default), one by default
    as ``torchrun`` does, so that ``nproc`` processes share the cores instead of oversubscribing them.

    Failure modes: an exception or a dead process in any rank makes the agent stop the others (within about
    :data:`MONITOR_INTERVAL_S`) and this call raise :class:`DistributedError` naming the rank and its exit code.

    Args:
        fn: the function each rank runs (it may read :func:`world`).
        *args: its arguments (the same on every rank).
        nproc: number of processes (>= 1).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per process).
        timeout_s: seconds a collective waits (see :func:`timeout`).
        threads: intra-op threads per process.
        start_method: ``"spawn"`` (a fresh interpreter per process) or ``"forkserver"`` (forked from a server
            process started once: much faster when a program launches many times; preload the heavy modules with
            ``multiprocessing.set_forkserver_preload``). ``"fork"`` is unsafe once PyTorch has started threads.

    Raises:
        ValueError: ``nproc`` < 1.
        DistributedError: a rank failed.

    Examples:
        >>> launch(train_one, "runs/x", nproc=2)      # the same as torchrun --nproc-per-node 2 with train_one
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc: expected a number of processes >= 1, got {nproc!r}")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"advlab-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL_S,
        start_method=start_method,
    )
    try:
        results = elastic_launch(config, _worker)(fn, backend, timeout_s, threads, *args)
    except ChildFailedError as exc:
        raise DistributedError(_failure_summary(exc, nproc)) from exc
    return [results[r] for r in sorted(results)]


def _failure_summary(exc: Any, nproc: int) -> str:
    """One line per failed rank of a :func:`launch` (rank, exit code, its message when it recorded one)."""
    lines = []
    for r, failure in sorted(exc.failures.items()):
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        text = str(message or "").strip()
        detail = f": {text.splitlines()[0][:500]}" if text and not text.startswith("To enable traceback") else ""
        lines.append(f"rank {r} exited with code {failure.exitcode}{detail}")
    return (
        f"{len(lines)} of {nproc} local processes failed ({'; '.join(lines)}); the others were stopped. The first "
        "failure is the cause: see its output above."
    )
