"""How a trainer's fit runs: mixed precision, and the pieces of data-parallel training on several processes.

:class:`Precision` is the one place autocast and gradient scaling live (``fp32`` does neither, so a default fit is
bit for bit what it was). :class:`Replica` holds what one rank of a ``DistributedDataParallel`` fit needs: its
part of each global batch (:meth:`Replica.shard`), the training step wrapped as a module so that DDP sees every
forward of whatever ``training_step`` does (:class:`TrainingStep`), synchronised batch norm, and the epoch totals
summed over ranks. The trainer base class (:mod:`advlab.defenses.base`) uses them; a defense never needs to.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from advlab import distributed
from advlab.devices import AUTOCAST_DTYPES
from advlab.distributed import World

BUFFER_SYNC = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else "broadcast_buffers"
)
"""The name of DDP's option to broadcast buffers before each forward (renamed in PyTorch 2.13)."""


class Precision:
    """Autocast for the forward passes and, for ``fp16``, a ``torch.amp.GradScaler`` for backward and step.

    ``fp32`` is a no-op (no autocast context, plain ``loss.backward()`` and ``optimizer.step()``). ``bf16``
    autocasts to bfloat16 on any device (CPUs included) without scaling: its exponent range is float32's.
    ``fp16`` autocasts to float16 and scales the loss so that small gradients survive; a step whose gradients
    overflow is skipped and the scale lowered (PyTorch's dynamic loss scaling). Parameters, optimiser state and the
    inputs (adversarial examples included) stay float32; autocast runs the matrix products and convolutions in the
    low precision and the losses in float32.

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: the device the fit runs on.
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        self.precision = precision
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context of the forward passes: ``torch.autocast`` to the low precision, nothing for ``fp32``."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AUTOCAST_DTYPES[self.precision])

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, on the scaled loss for ``fp16`` (gradients then hold ``scale`` times their value)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; for ``fp16`` unscaled, skipped on overflow, and the scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state(self) -> dict[str, Any]:
        """The loss scaler's state (scale, growth tracker) for the checkpoint; empty without a scaler."""
        return {} if self.scaler is None else dict(self.scaler.state_dict())

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class TrainingStep(nn.Module):
    """A trainer's ``training_step`` as the forward of a module that holds the model.

    ``DistributedDataParallel`` wraps this module: every forward pass the step makes (crafting adversarial examples,
    several losses, sub-networks of a composed model) happens inside one DDP forward, and DDP averages the gradients
    of all the model's parameters in the backward pass that follows (PyTorch Lightning wraps its steps the same way).

    Args:
        step: the trainer's bound ``training_step``.
        model: the classifier being trained (a submodule here, so its parameters are DDP's).
    """

    def __init__(self, step: Callable[..., tuple[torch.Tensor, torch.Tensor]], model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, x: torch.Tensor, y: torch.Tensor, epoch: float, **kwargs: Any) -> Any:
        return self.step(self.model, x, y, epoch, **kwargs)


class Replica:
    """One rank's view of a data-parallel fit.

    Every rank draws the same permutation per epoch and cuts each global batch of ``batch_size`` examples into
    ``world.size`` contiguous parts, one per rank (:meth:`shard`), so the global batch is the same as in one
    process. Each rank's loss is weighted by its share of the batch (``n_rank * size / n_batch``), so DDP's average
    of the ranks' gradients is the gradient of the mean loss over the global batch even when the parts differ in
    size (the last batch of an epoch). A rank left without examples (a last batch smaller than the number of ranks)
    runs the step on one example with weight 0, so that every rank takes part in every gradient reduction.

    Args:
        world: this process's place in the run.
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def shard(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's part of the global batch ``idx`` and the weight of its loss."""
        if not self.world.distributed:
            return idx, 1.0
        part = idx.tensor_split(self.world.size)[self.world.rank]
        if part.numel() == 0:
            return idx[:1], 0.0
        return part, part.numel() * self.world.size / idx.numel()

    def part(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of ``idx`` (unweighted: the unlabelled batch of a semi-supervised step)."""
        if not self.world.distributed:
            return idx
        part = idx.tensor_split(self.world.size)[self.world.rank]
        return part if part.numel() else idx[:1]

    def totals(self, values: list[float], what: str) -> list[float]:
        """``values`` summed over the ranks (the epoch's loss, correct and seen counts); unchanged in one process."""
        if not self.world.distributed:
            return values
        return all_reduced(values, what)

    def any(self, flag: bool, what: str) -> bool:
        """Whether ``flag`` holds on any rank (an early stop decided on one rank stops them all)."""
        if not self.world.distributed:
            return flag
        return bool(all_reduced([float(flag)], what)[0] > 0)

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics drift apart between DDP forwards)."""
        if not self.world.distributed:
            return
        with distributed.guard("synchronising the buffers"):
            for buf in module.buffers():
                if buf.numel():
                    torch.distributed.broadcast(buf, src=0)

    def wrap(
        self,
        step: TrainingStep,
        device: torch.device,
        *,
        find_unused_parameters: bool,
        constants: Iterable[torch.Tensor] = (),
    ) -> nn.parallel.DistributedDataParallel:
        """``step`` inside ``DistributedDataParallel`` (rank 0's parameters broadcast to all).

        DDP broadcasts rank 0's buffers before every forward (batch-norm statistics); a network whose only buffers
        are ``constants`` (the classifier's normalisation) skips that collective, a sixth of a small CNN's step.
        """
        fixed = {id(t) for t in constants}
        options: dict[str, Any] = {
            "device_ids": [device] if device.type == "cuda" else None,
            "find_unused_parameters": find_unused_parameters,
            BUFFER_SYNC: any(id(b) not in fixed for b in step.buffers()),
        }
        with distributed.guard("setting up DistributedDataParallel"):
            return nn.parallel.DistributedDataParallel(step, **options)


def all_reduced(values: list[float], what: str) -> list[float]:
    """The sums over ranks of ``values`` (float64 on the wire)."""
    return distributed.all_reduce(torch.tensor(values, dtype=torch.float64), what=what).tolist()


@contextlib.contextmanager
def synchronised_batch_norm(module: nn.Module, device: torch.device) -> Iterator[int]:
    """Within it, the batch-norm layers of ``module`` are ``torch.nn.SyncBatchNorm``: statistics over all ranks.

    The layers are swapped for ``SyncBatchNorm`` layers that share their parameters and buffers, and swapped back
    on exit, so the caller's module keeps its own classes. Yields the number of layers swapped.

    Args:
        module: the network.
        device: where it trains; PyTorch's ``SyncBatchNorm`` synchronises on GPUs only.

    Raises:
        ValueError: a CPU device in a run of several processes (``SyncBatchNorm`` refuses CPU tensors).
    """
    if device.type == "cpu":
        raise ValueError(
            "sync_bn: PyTorch's SyncBatchNorm synchronises batch statistics on GPUs only (NCCL); on CPUs each rank "
            "normalises with the statistics of its own part of the batch. Drop sync_bn (--sync-bn) or train on GPUs"
        )
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                setattr(parent, name, _as_sync(child))
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _as_sync(bn: nn.modules.batchnorm._BatchNorm) -> nn.SyncBatchNorm:
    """A ``SyncBatchNorm`` sharing ``bn``'s parameters and buffers (updates reach ``bn``)."""
    sync = nn.SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    sync.weight, sync.bias = bn.weight, bn.bias
    sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.training = bn.training
    return sync


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Shapes and order-sensitive sums of the training data: ranks that loaded different data differ here."""
    rows = torch.arange(1, x.shape[0] + 1, dtype=torch.float64, device=x.device)
    per_row = x.reshape(x.shape[0], -1).sum(1, dtype=torch.float64)
    return {
        "x_shape": list(x.shape),
        "x_sum": float(per_row @ rows),
        "y_sum": float(y.reshape(y.shape[0], -1).sum(1, dtype=torch.float64) @ rows),
    }
