"""Speed on the device without changing the numbers reported: precision, memory, batch sizes and data transfers.

Reduced precision (``"bf16"``, ``"fp16"``) is autocast around a model's forward passes; :func:`full_precision`
turns it off for the forwards whose answers are counted (the success check of an attack, every prediction a report
shows), so a flip that only bf16 rounding makes is never reported as a success. Out-of-memory errors halve the
batch and retry (:class:`Batches`); :func:`auto_batch_size` finds the largest batch that fits a CUDA device;
:func:`to_device` moves CPU data to a CUDA device through pinned memory without blocking the host.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn

log = logging.getLogger(__name__)

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16", "fp16")
"""The precisions of a model's forward passes: full float32, or autocast to bfloat16 or float16."""

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each reduced precision."""

CPU_BATCH_SIZE = 250
"""What ``batch_size="auto"`` gives off CUDA: a CPU has no memory limit worth probing, and batches beyond a few
hundred examples gain nothing there (CPU forwards already run in cache-sized chunks)."""

PROBE_START = 16
"""The first batch size the memory probe of :func:`auto_batch_size` tries (then 32, 64, ...)."""

PROBE_CAP = 8192
"""The largest batch size :func:`auto_batch_size` tries on a device that has memory for more."""

PROBE_RESOLUTION = 8
"""After an out-of-memory error, :func:`largest_batch` bisects until the gap between the largest batch that fitted
and the smallest that did not is at most 1/8 of the former."""

_FULL_PRECISION: contextvars.ContextVar[bool] = contextvars.ContextVar("advlab_full_precision", default=False)
_OWN_LAYOUT: contextvars.ContextVar[bool] = contextvars.ContextVar("advlab_own_layout", default=False)


# ---------------------------------------------------------------------- precision
def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision`` checked: one of :data:`PRECISIONS`, and supported on ``device`` when one is given.

    bf16 runs on CPUs and on CUDA devices that support it (compute capability 8.0 and above); fp16 only on CUDA
    (a CPU has no fast float16 arithmetic, and float16 gradients underflow without loss scaling).

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: where the forward passes run (``None``: check the name only).

    Returns:
        The precision.

    Raises:
        ValueError: an unknown precision, or one the device does not support.

    Examples:
        >>> check_precision("bf16", "cpu")
        'bf16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device is None or precision == "fp32":
        return precision
    dev = torch.device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(
            f"precision: fp16 needs a CUDA device, and the model is on {dev.type}; use bf16 there (or fp32)"
        )
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision: this CUDA device has no bfloat16 arithmetic (before compute capability 8.0); "
                         "use fp16 or fp32")  # fmt: skip
    if precision == "bf16" and dev.type not in ("cpu", "cuda") and not torch.amp.is_autocast_available(dev.type):
        raise ValueError(f"precision: autocast is not available on {dev.type}; use fp32")
    return precision


@contextlib.contextmanager
def _flag_set(flag: contextvars.ContextVar[bool]) -> Iterator[None]:
    """``flag`` set for the block, and back to what it was afterwards (a block inside another one included)."""
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def full_precision() -> contextlib.AbstractContextManager[None]:
    """Forward passes inside this block run at full precision, whatever precision their classifiers were given.

    It reaches every :class:`advlab.Classifier` called in the block, including one wrapped in another module (an
    EOT average, an ensemble), and turns off an autocast the caller opened around it. The attack boundary checks
    success in it and :func:`advlab.models.predict` predicts in it.

    Examples:
        >>> with full_precision():
        ...     logits = model(x_adv)  # float32 even for Classifier(net, precision="bf16")
    """
    return _flag_set(_FULL_PRECISION)


def is_full_precision() -> bool:
    """Whether the caller is inside a :func:`full_precision` block."""
    return _FULL_PRECISION.get()


def own_layout() -> contextlib.AbstractContextManager[None]:
    """Forward passes inside this block run each classifier's module with its weights in the module's own layout.

    Attack mode holds a CPU network's kernels channels-last (:data:`advlab.models.CPU_CHANNELS_LAST`), which gives
    the same logits up to float rounding; the forwards that decide what is reported run in this block, so that they
    are exactly what the module computes. :func:`full_precision` implies it.
    """
    return _flag_set(_OWN_LAYOUT)


def is_own_layout() -> bool:
    """Whether the caller is inside an :func:`own_layout` or a :func:`full_precision` block."""
    return _OWN_LAYOUT.get() or _FULL_PRECISION.get()


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a forward pass at ``precision`` on ``device_type``.

    Inside :func:`full_precision` it turns autocast off (a caller's own autocast included); at ``"fp32"`` outside it,
    it changes nothing (the forward runs exactly as without advlab).

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ...
        precision: one of :data:`PRECISIONS`.

    Raises:
        ValueError: ``precision`` is not supported on ``device_type`` (:func:`check_precision`).

    Examples:
        >>> with autocast("cpu", "bf16"):
        ...     logits = net(x)
    """
    if _FULL_PRECISION.get():
        if torch.amp.is_autocast_available(device_type):
            return torch.autocast(device_type, enabled=False)
        return contextlib.nullcontext()
    if precision == "fp32":
        return contextlib.nullcontext()
    supported(device_type, precision)
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[precision])


@functools.cache
def supported(device_type: str, precision: str) -> bool:
    """:func:`check_precision` on a device type, remembered (it runs before every reduced-precision forward).

    Raises:
        ValueError: ``precision`` is not supported on ``device_type``.
    """
    check_precision(precision, device_type)
    return True


# ---------------------------------------------------------------------- compilation
def compile_module(module: nn.Module) -> nn.Module | None:
    """``torch.compile(module)``, or ``None`` with a one-line note where compilation cannot run here.

    Compilation itself happens at the first call; :meth:`advlab.Classifier.forward` falls back to the module
    uncompiled, with the same note, when that first call fails for a reason of the compiler.

    Args:
        module: the network.

    Examples:
        >>> fast = compile_module(net) or net
    """
    if not torch._dynamo.is_dynamo_supported():
        log.warning("compile: torch.compile does not run on this Python/platform; running the model uncompiled")
        return None
    try:
        return cast(nn.Module, torch.compile(module))
    except Exception as exc:  # an unsupported module or platform: say why in one line, run uncompiled
        note_compile_failure(exc)
        return None


def note_compile_failure(exc: BaseException) -> None:
    """Log the one-line note that compilation failed and the model runs uncompiled (the error's first line)."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    log.warning("compile: torch.compile failed (%s: %s); running the model uncompiled", type(exc).__name__, first)


# ---------------------------------------------------------------------- memory and batches
def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA out-of-memory error (``torch.cuda.OutOfMemoryError``)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def free_memory() -> None:
    """Release what an out-of-memory error left behind: garbage, then the CUDA caching allocator's free blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Batches:
    """Runs work over ``n`` examples in batches, halving the batch after an out-of-memory error and retrying.

    The batch size stays halved for the rest of the work (the next call of :meth:`run` too): a batch that did not
    fit once would not fit the next time either.

    Args:
        batch_size: the examples per batch to start with.

    Examples:
        >>> batches = Batches(512)
        >>> parts = batches.run(lambda start, stop: attack(x[start:stop]), n=len(x))
    """

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a whole number >= 1, got {batch_size}")
        self.size = batch_size
        self.halvings = 0
        """How many out-of-memory errors halved the batch."""

    def run(self, work: Callable[[int, int], T], n: int, done: Callable[[int], None] | None = None) -> list[T]:
        """``work(start, stop)`` over ``range(n)`` in order, one result per batch that ran.

        Args:
            work: the work on examples ``start`` to ``stop - 1``.
            n: the number of examples.
            done: called with the number of examples done after each batch.

        Returns:
            The results, in order of their examples.

        Raises:
            torch.cuda.OutOfMemoryError: one example alone does not fit.
        """
        out: list[T] = []
        start = 0
        while start < n:
            stop = min(start + self.size, n)
            try:
                out.append(work(start, stop))
            except torch.cuda.OutOfMemoryError:
                if stop - start <= 1:
                    raise  # one example alone does not fit: nothing left to halve
                self.halve(stop - start)
                continue
            start = stop
            if done is not None:
                done(stop)
        return out

    def halve(self, failed: int) -> None:
        """After an out-of-memory error on a batch of ``failed`` examples: free memory, halve the batch size."""
        free_memory()
        self.size = max(1, failed // 2)
        self.halvings += 1
        log.warning("out of memory on a batch of %d examples; retrying with batches of %d", failed, self.size)


def largest_batch(try_batch: Callable[[int], object], *, cap: int, start: int = PROBE_START) -> int:
    """The largest batch size at most ``cap`` for which ``try_batch(size)`` does not run out of memory.

    Doubles from ``start`` until an out-of-memory error or ``cap``, then backs off: halves until a size fits when
    the first failed, and bisects between the largest size that fitted and the smallest that did not until they
    are within 1/:data:`PROBE_RESOLUTION` of each other.

    Args:
        try_batch: runs the workload on a batch of the given size; raises ``torch.cuda.OutOfMemoryError`` when it
            does not fit.
        cap: the largest size worth trying (the number of examples, :data:`PROBE_CAP`).
        start: the first size tried.

    Returns:
        The size.

    Raises:
        torch.cuda.OutOfMemoryError: a batch of one example does not fit.
    """
    size, good = max(1, min(start, cap)), 0
    while fits(try_batch, size):  # grow: double until a size fails or the cap fits
        good = size
        if size >= cap:
            return cap
        size = min(2 * size, cap)
    bad = size
    while good == 0:  # the first size failed: halve until one fits
        if bad == 1:
            raise torch.cuda.OutOfMemoryError("a batch of one example does not fit in the device's memory")
        size = bad // 2
        if fits(try_batch, size):
            good = size
        else:
            bad = size
    while bad - good > max(1, good // PROBE_RESOLUTION):  # back off: bisect between what fitted and what did not
        mid = (good + bad) // 2
        if fits(try_batch, mid):
            good = mid
        else:
            bad = mid
    return good


def fits(try_batch: Callable[[int], object], size: int) -> bool:
    """Whether ``try_batch(size)`` runs without an out-of-memory error (memory freed after one)."""
    try:
        try_batch(size)
    except torch.cuda.OutOfMemoryError:
        free_memory()
        return False
    return True


def auto_batch_size(
    try_batch: Callable[[int], object], device: torch.device | str, *, cap: int = PROBE_CAP, start: int = PROBE_START
) -> int:
    """The batch size ``batch_size="auto"`` means on ``device``: probed on CUDA, :data:`CPU_BATCH_SIZE` elsewhere.

    Args:
        try_batch: runs the workload (the attack, shortened) on a batch of the given size.
        device: where it runs.
        cap: the largest size worth trying (usually the number of examples).
        start: the first size the probe tries.

    Returns:
        The size, logged with how it was found.

    Examples:
        >>> size = auto_batch_size(lambda b: attack(model, x[:b], y[:b], threat), "cuda", cap=len(x))
    """
    cap = max(1, cap)
    if torch.device(device).type != "cuda":
        size = min(CPU_BATCH_SIZE, cap)
        log.info("batch size auto: %d on %s (memory is probed on CUDA devices only)", size, torch.device(device))
        return size
    size = largest_batch(try_batch, cap=min(cap, PROBE_CAP), start=start)
    log.info("batch size auto: %d (the largest that fits %s, probed up to %d)", size, device, min(cap, PROBE_CAP))
    return size


# ---------------------------------------------------------------------- transfers
def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` on ``device`` (cast to ``dtype``): a CPU tensor goes to a CUDA device through pinned memory, without
    blocking the host.

    The copy is queued on the current stream, so the kernels that read it run after it; nothing else changes from
    ``t.to(device, dtype)``.

    Args:
        t: the tensor.
        device: where it goes.
        dtype: the dtype it takes (``None``: its own).

    Examples:
        >>> x_gpu = to_device(x, "cuda")
    """
    dev = torch.device(device)
    if dev.type == "cuda" and t.device.type == "cpu":
        if dtype is not None and dtype != t.dtype:
            t = t.to(dtype)  # cast on the host: fewer bytes cross when it narrows, one copy either way
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev, dtype)
