"""Training with DistributedDataParallel over two gloo processes on loopback gives what one process gives.

Two processes with the same global batch take the same optimiser steps as one: every rank draws the same permutation
per epoch, takes its contiguous part of each global batch, and weights its loss by its share, so the averaged
gradient is the gradient of the global batch's mean loss. What still differs, and the tolerances it sets:

- Standard training: only the order of floating-point sums (each rank sums its part's gradient, then gloo adds the
  two; one process sums all rows at once) — rounding, ~1e-7 relative per step, which Adam's normalised steps carry
  through two epochs to ~1e-6 in the loss. Tolerance: 1e-5 relative on each epoch's mean training loss.
- PGD training: rank 1 crafts its examples from random starts of its own stream (rank 0's are one process's), so half
  the examples start elsewhere in the eps-ball. Measured over six seeds, the epoch losses of two processes and one
  differ by at most 0.22% relative (0.01-0.22%). Tolerance: 1% relative.
- Batch norm (not in these MLPs) would normalise with each rank's half of the batch unless ``sync_bn`` (GPUs).

The 64-32-10 MLP on 1,024 digits trains two epochs in a fraction of a second; starting the processes dominates, so
the two-process reference runs of the module share one start (the ``two_processes`` fixture).
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
import torch
from _distributed_workers import DIE_CODE, digits, fit, fit_bn, fits, survivor, two

from advlab import distributed
from advlab.defenses import StandardTraining
from advlab.defenses._runtime import Replica, synchronised_batch_norm
from advlab.distributed import DistributedError, World

pytestmark = pytest.mark.distributed

N = 991
"""Training examples: batches of 99 split 50/49 (unequal parts, weighted), and a last batch of one example, which
leaves rank 1 without an example (it then takes part with weight 0)."""
STANDARD = dict(epochs=2, batch_size=99, lr=5e-3, seed=3, progress=False)
PGD = dict(epochs=2, batch_size=64, lr=5e-3, seed=3, progress=False, eps=0.2, steps=3)
N_PGD = 1024
STANDARD_RTOL = 1e-5
PGD_RTOL = 1e-2


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def two_processes(data):
    """Standard and PGD training in two processes: what each rank returned, per run."""
    runs = [("standard", STANDARD, N), ("pgd", PGD, N_PGD)]
    per_rank = two(fits, data, runs)
    return {name: [rank_result[i] for rank_result in per_rank] for i, (name, _, _) in enumerate(runs)}


def _losses(history):
    return torch.tensor([r["train_loss"] for r in history], dtype=torch.float64)


def test_the_ranks_end_with_the_same_weights_and_history(two_processes):
    for name, ((h0, w0), (h1, w1)) in two_processes.items():
        assert h0 == h1, name
        assert all(torch.equal(w0[k], w1[k]) for k in w0), name


def test_standard_training_gives_the_loss_curve_of_one_process(data, two_processes):
    history, weights = fit(data, "standard", STANDARD, N)
    (h2, w2), _ = two_processes["standard"]
    torch.testing.assert_close(_losses(h2), _losses(history), rtol=STANDARD_RTOL, atol=0)
    assert [r["train_accuracy"] for r in h2] == [r["train_accuracy"] for r in history]  # the same examples counted
    assert [r["val_accuracy"] for r in h2] == [r["val_accuracy"] for r in history]
    for k in weights:
        torch.testing.assert_close(w2[k], weights[k], rtol=1e-4, atol=1e-5)


def test_pgd_training_gives_the_loss_curve_of_one_process(data, two_processes):
    history, _ = fit(data, "pgd", PGD, N_PGD)
    (h2, _), _ = two_processes["pgd"]
    torch.testing.assert_close(_losses(h2), _losses(history), rtol=PGD_RTOL, atol=0)
    assert [r["epoch"] for r in h2] == [1, 2] and [r["lr"] for r in h2] == [r["lr"] for r in history]


def test_a_run_killed_during_an_epoch_resumes_with_the_same_result(data, two_processes, tmp_path):
    """Rank 1 dies halfway through the second epoch: the agent stops rank 0 within seconds and names the rank; the
    same command resumes from the checkpoint of the first epoch and ends with an uninterrupted run's weights."""
    settings = {**PGD, "checkpoint_dir": tmp_path / "ckpt"}
    t0 = time.perf_counter()
    with pytest.raises(DistributedError, match=f"rank 1 exited with code {DIE_CODE}"):
        two(fit, data, "pgd", settings, N_PGD, 1.5)
    assert time.perf_counter() - t0 < 60
    assert (tmp_path / "ckpt" / "checkpoint.safetensors").exists()
    (h0, w0), (h1, _) = two(fit, data, "pgd", settings, N_PGD)
    (ref_history, ref_weights), _ = two_processes["pgd"]
    assert h0 == h1 == ref_history
    assert all(torch.equal(w0[k], ref_weights[k]) for k in ref_weights)


def test_ranks_started_with_different_settings_are_refused_before_any_work(data, tmp_path):
    settings = {**STANDARD, "checkpoint_dir": tmp_path / "ckpt"}
    with pytest.raises(DistributedError) as info:
        two(fit, data, "standard", settings, N, None, True)
    assert "the ranks were started with different training settings and data: rank 1 differs in seed" in str(info.value)
    assert not (tmp_path / "ckpt").exists()


def test_a_dead_rank_stops_the_other_with_a_clear_message_without_an_agent(data, tmp_path):
    """No torchrun, no elastic agent: rank 1 of a group started by hand dies in its first epoch; rank 0's next
    gradient reduction fails at once (gloo sees the closed connection) and fit raises DistributedError naming it."""
    ctx = multiprocessing.get_context("forkserver")
    out = tmp_path / "rank0.txt"
    args = (data, str(tmp_path / "rendezvous"), str(out), STANDARD, N)
    procs = [ctx.Process(target=survivor, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, DIE_CODE]
    kind, seconds, message = out.read_text().split("\n", 2)
    assert kind == "DistributedError"
    assert float(seconds) < 30
    assert message.startswith("rank 0 of 2: training epoch 1 failed because another rank died")
    assert "run the same command again to resume" in message


# ---------------------------------------------------------------------------------------------- one rank's view


@pytest.mark.parametrize("size", [2, 3])
def test_each_rank_takes_its_part_of_the_global_batch_weighted_by_its_share(size):
    idx = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    parts = [Replica(World(r, size, r, "gloo")).shard(idx) for r in range(size)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)  # contiguous, in order, everything once
    # DDP averages the ranks' gradients, (1 / size) sum_r w_r mean_r: each example then weighs w_r / (size n_r),
    # which must be 1 / n, as in the mean over the global batch
    assert [w / (size * p.numel()) for p, w in parts] == pytest.approx([1 / idx.numel()] * size)


def test_a_rank_without_examples_takes_part_with_weight_zero():
    idx = torch.tensor([7])
    assert Replica(World(0, 2, 0, "gloo")).shard(idx) == (idx, 2.0)
    part, weight = Replica(World(1, 2, 1, "gloo")).shard(idx)
    assert part.tolist() == [7] and weight == 0.0


def test_one_process_gets_the_whole_batch_unweighted():
    idx = torch.arange(5)
    part, weight = Replica(World()).shard(idx)
    assert part is idx and weight == 1.0


def test_sync_bn_swaps_batch_norm_layers_and_restores_them():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Sequential(torch.nn.BatchNorm1d(4))
    )
    originals = [net[1], net[2][0]]
    with synchronised_batch_norm(net, torch.device("cuda")) as swapped:  # structure only: nothing runs on a GPU
        assert swapped == 2
        assert isinstance(net[1], torch.nn.SyncBatchNorm) and isinstance(net[2][0], torch.nn.SyncBatchNorm)
        assert net[1].weight is originals[0].weight and net[1].running_mean is originals[0].running_mean
    assert net[1] is originals[0] and net[2][0] is originals[1]


def test_sync_bn_on_cpus_is_refused_with_the_reason():
    message = "sync_bn: PyTorch's SyncBatchNorm synchronises batch statistics on GPUs only"
    with (
        pytest.raises(ValueError, match=message),
        synchronised_batch_norm(torch.nn.BatchNorm1d(3), torch.device("cpu")),
    ):
        pass


def test_sync_bn_has_no_effect_in_one_process(data):
    x, y = data
    histories = []
    for sync_bn in (False, True):
        torch.manual_seed(0)  # the default initialisation of the layers below
        net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 10)
        )
        trainer = StandardTraining(**STANDARD, sync_bn=sync_bn).fit(net, (x[:300], y[:300]))
        assert isinstance(net[2], torch.nn.BatchNorm1d) and not isinstance(net[2], torch.nn.SyncBatchNorm)
        histories.append([r["train_loss"] for r in trainer.history_])
    assert histories[0] == histories[1]


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")


@pytest.mark.cuda
@needs_two_gpus
@pytest.mark.parametrize("sync_bn", [False, True])
def test_two_gpus_with_nccl_train_a_batch_norm_network(data, sync_bn):
    per_rank = distributed.launch(fit_bn, data, sync_bn, nproc=2, backend="nccl", timeout_s=120)
    (h0, w0), (h1, w1) = per_rank
    assert h0 == h1 and all(torch.equal(w0[k], w1[k]) for k in w0)  # rank 0's batch-norm statistics everywhere
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in h0)
