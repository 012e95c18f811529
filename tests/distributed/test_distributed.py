"""advlab.distributed: who a process is, collectives over two gloo processes on loopback, refusals and failures.

The processes are started by :func:`advlab.distributed.launch` (torch's elastic agent, as torchrun does); what each
runs is in ``_distributed_workers.py``. Each test starts its processes once (under a second, forked from a server
that imported torch once).
"""

from __future__ import annotations

import datetime
import time

import pytest
import torch
from _distributed_workers import collectives, different, late, two

from advlab import distributed
from advlab.distributed import DistributedError, World

pytestmark = pytest.mark.distributed


# ---------------------------------------------------------------------------------------------- one process


def test_one_process_is_rank_0_of_1_and_collectives_return_their_input(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == World(0, 1, 0, None)
    assert distributed.is_main() and not distributed.launched() and not distributed.world().distributed
    t = torch.tensor([1.0, 2.0])
    reduced = distributed.all_reduce(t, what="x")
    assert torch.equal(reduced, t) and reduced is not t
    assert [p.tolist() for p in distributed.gather_tensors(t, what="x")] == [[1.0, 2.0]]
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object("x") == "x"
    assert distributed.on_main(lambda: 5, what="x") == 5
    distributed.check_same({"anything": object()})
    distributed.barrier()
    assert distributed.init() is False  # not launched: nothing to join
    with distributed.process_group() as w:
        assert w == World(0, 1, 0, None)


def test_the_environment_of_torchrun_is_read_before_the_group_exists(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = distributed.world()
    assert (w.rank, w.size, w.local_rank, w.backend) == (3, 4, 1, None)
    assert distributed.launched() and not w.is_main and not w.distributed
    assert distributed.device_for("cpu") == torch.device("cpu")


def test_timeout_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout() == datetime.timedelta(seconds=distributed.DEFAULT_TIMEOUT_S)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout() == datetime.timedelta(seconds=12.5)
    assert distributed.timeout(3) == datetime.timedelta(seconds=3)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="ADVLAB_DIST_TIMEOUT.*positive number of seconds.*'soon'"):
        distributed.timeout()
    with pytest.raises(ValueError, match="positive"):
        distributed.timeout(0)


def test_backend_follows_the_device():
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for(None) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="nproc: expected a number of processes >= 1, got 0"):
        distributed.launch(collectives, nproc=0)
    with pytest.raises(ValueError, match="op: expected one of"):
        distributed.all_reduce(torch.zeros(1), "mean")
    with pytest.raises(ValueError, match="at least one dimension"):
        distributed.gather_tensors(torch.tensor(1.0))


def test_a_failure_in_one_process_passes_through_unchanged():
    """guard() only rewrites collective failures of a process that is one of several."""
    with pytest.raises(RuntimeError, match="^timeout in my own code$"), distributed.guard("x"):
        raise RuntimeError("timeout in my own code")


# ---------------------------------------------------------------------------------------------- two processes


def test_collectives_over_two_processes():
    r0, r1 = two(collectives)
    assert r0["world"] == World(0, 2, 0, "gloo") and r1["world"] == World(1, 2, 1, "gloo")
    assert r0["threads"] == r1["threads"] == 1
    assert r0["sum"] == r1["sum"] == [2.0, 1.0]
    assert r0["max"] == r1["max"] == [1.0]
    # variable sizes, in rank order, on rank 0 only
    assert [t.tolist() for t in r0["tensors"]] == [[[0.0] * 3] * 2, [[1.0] * 3] * 3] and r1["tensors"] is None
    assert r0["objects"] == [{"rank": 0}, {"rank": 1}] and r1["objects"] is None
    assert r0["broadcast"] == r1["broadcast"] == "from 0"
    assert r0["on_main"] == r1["on_main"] == 7
    assert r0["on_main_error"] == r1["on_main_error"] == "rank 0 refuses"  # rank 0's error, raised on every rank


def test_ranks_with_different_settings_are_refused_by_name():
    with pytest.raises(DistributedError) as info:
        two(different, "training settings")
    message = str(info.value)
    assert "ValueError: the ranks were started with different training settings" in message
    assert "rank 1 differs in seed (0 on rank 0, 1)" in message


def test_a_rank_that_never_arrives_stops_the_barrier_in_bounded_time():
    t0 = time.perf_counter()
    with pytest.raises(DistributedError) as info:
        two(late, 1.0)
    assert time.perf_counter() - t0 < 30
    message = str(info.value)
    assert "rank 0 exited with code 1" in message
    assert "a barrier rank 1 never reaches failed because another rank died, hangs or cannot be reached" in message
    assert "Ranks 1 failed to pass monitoredBarrier" in message  # gloo names the missing rank
