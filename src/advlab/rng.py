"""Randomness keyed by example: each example draws from its own stream, whatever batch or process it falls into.

An attack that draws from one ``torch.Generator`` for a whole batch gives an example a different random start when
the batch size, the order of examples or the number of processes changes, and so a different outcome. An
:class:`ExampleRNG` gives row ``i`` of a batch the draws of the stream keyed by ``(seed, stage, ids[i])``: the
``k``-th call that includes an example returns the same numbers for it whatever else is in the batch. It is a
counter-based generator (Philox4x32-10, Salmon et al. 2011, the generator of cuRAND and of PyTorch on CUDA),
vectorised over rows with int64 tensor arithmetic, so a draw is a few hundred small tensor operations for the whole
batch rather than a loop over examples.

Attacks take either kind of randomness through :func:`as_rng`: a ``torch.Generator`` or an int seed (one stream for
the batch, as before: :class:`GeneratorRNG`, bit for bit the draws of the generator) or an :class:`ExampleRNG`. Both
answer ``rand``, ``randn``, ``randint`` and ``rows`` (the randomness of a subset of the rows, sharing its streams).

Examples:
    >>> rng = ExampleRNG(seed=0, stage=("eps", 0, "pgd"), ids=torch.arange(100, 164))
    >>> x0 = x + eps * (2 * rng.rand(x.shape) - 1)     # row i: the stream of example 100 + i
    >>> sub = rng.rows(torch.tensor([3, 7]))            # examples 103 and 107, their draw counts carried on
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from typing import Protocol

import torch

from advlab import validation

DEFAULT_SEED = 0
"""Seed used when an attack that draws random numbers gets no ``generator``: results are reproducible by default."""

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
"""Philox4x32 round multipliers (Random123)."""
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
"""Philox4x32 key increments (Weyl sequence: the golden ratio and sqrt(3) - 1, times 2^32)."""
ROUNDS = 10
"""Philox4x32-10: the round count of Random123's default and of cuRAND."""
MASK32 = 0xFFFFFFFF


class RNG(Protocol):
    """The randomness an attack draws from: a batch stream (:class:`GeneratorRNG`) or per-example streams."""

    def rand(
        self, shape: Sequence[int], *, dtype: torch.dtype = ..., device: torch.device | str | None = ...
    ) -> torch.Tensor: ...

    def randn(
        self, shape: Sequence[int], *, dtype: torch.dtype = ..., device: torch.device | str | None = ...
    ) -> torch.Tensor: ...

    def randint(
        self, low: int, high: int, shape: Sequence[int], *, device: torch.device | str | None = ...
    ) -> torch.Tensor: ...

    def rows(self, index: torch.Tensor) -> RNG: ...


# ---------------------------------------------------------------------------------------------- Philox4x32-10
def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``m * x`` for a 32-bit constant ``m`` and int64 tensor ``x`` of 32-bit values.

    ``x`` is split into 16-bit halves, so no intermediate exceeds 2^49 (int64 never wraps):
    ``m * x = b * 2^16 + a`` with ``a = m * x_lo`` and ``b = m * x_hi``.
    """
    a = x & 0xFFFF
    a *= m  # < 2^48
    b = x >> 16
    b *= m  # < 2^48
    hi = (b + (a >> 16)) >> 16
    lo = ((b & 0xFFFF) << 16).add_(a).bitwise_and_(MASK32)
    return hi, lo


def philox4x32(counter: Sequence[torch.Tensor], key: tuple[int, int], rounds: int = ROUNDS) -> list[torch.Tensor]:
    """Philox4x32 of the four 32-bit counter words (int64 tensors of one shape) under a 64-bit key.

    Args:
        counter: words ``c0..c3`` (values in ``[0, 2^32)``), tensors broadcast to one shape.
        key: words ``(k0, k1)``.
        rounds: rounds (10 for Philox4x32-10).

    Returns:
        The four 32-bit output words, int64 tensors of the counter's shape.

    References:
        Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11 (Random123).

    Examples:
        >>> zero = torch.zeros(1, dtype=torch.int64)
        >>> [hex(int(w)) for w in philox4x32([zero] * 4, (0, 0))]
        ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def stage_key(seed: int, stage: Hashable) -> tuple[int, int]:
    """The 64-bit Philox key of ``(seed, stage)``: BLAKE2b of their ``repr``, so any hashable stage label works."""
    digest = hashlib.blake2b(repr((int(seed), stage)).encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value & MASK32, value >> 32


# ---------------------------------------------------------------------------------------------- per-example streams
class ExampleRNG:
    """Per-example random streams keyed by ``(seed, stage, example id)`` (see the module docstring).

    Args:
        seed: the run's seed.
        stage: a label of the stage drawing (an eps index, an attack name...), any hashable value.
        ids: the example id of each row of the batch, int64 ``(R,)``; ids must be unique within a batch.
        device: where draws are made (default: the device of ``ids``).

    Each call to a drawing method advances the streams of the rows it draws for by one step, whatever it draws.
    Call ``k`` for an example yields the same numbers for it in any batch, provided the example makes the same
    calls with the same per-row shapes (the attack's logic for it does not depend on the other rows).
    """

    def __init__(self, seed: int, stage: Hashable, ids: torch.Tensor, device: torch.device | str | None = None) -> None:
        ids = torch.as_tensor(ids, dtype=torch.int64)
        if ids.dim() != 1:
            raise ValueError(f"ids: expected a vector of example ids, got shape {tuple(ids.shape)}")
        self.key = stage_key(seed, stage)
        self.device = torch.device(device) if device is not None else ids.device
        self.ids = ids.to(self.device)
        self.calls = torch.zeros(ids.shape[0], dtype=torch.int64, device=self.device)
        self._index: torch.Tensor | None = None  # the rows this view draws for (None: all)

    def rows(self, index: torch.Tensor) -> ExampleRNG:
        """The streams of the rows ``index`` of this batch (a view: draws advance the same streams)."""
        view = object.__new__(ExampleRNG)
        view.key, view.device, view.ids, view.calls = self.key, self.device, self.ids, self.calls
        index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        view._index = index if self._index is None else self._index[index]
        return view

    def __len__(self) -> int:
        return int(self.ids.shape[0] if self._index is None else self._index.shape[0])

    def _rows(self) -> torch.Tensor:
        return torch.arange(self.ids.shape[0], device=self.device) if self._index is None else self._index

    def row_ids(self) -> torch.Tensor:
        """The example id of each row (int64 ``(R,)``)."""
        return self.ids[self._rows()]

    def positions(self) -> torch.Tensor:
        """Each row's stream position: the number of calls that drew for it (int64 ``(R,)``, a copy)."""
        return self.calls[self._rows()].clone()

    def seek(self, positions: torch.Tensor) -> None:
        """Set each row's stream position (resume streams saved with :meth:`positions`)."""
        positions = torch.as_tensor(positions, dtype=torch.int64, device=self.device)
        if positions.shape != (len(self),):
            raise ValueError(f"positions: expected one per row, shape ({len(self)},), got {tuple(positions.shape)}")
        self.calls[self._rows()] = positions

    def words(self, per_row: int) -> torch.Tensor:
        """``per_row`` raw 32-bit words per row (int64 ``(R, per_row)``), advancing each row's stream by one call."""
        rows = self._rows()
        ids, calls = self.ids[rows], self.calls[rows]
        blocks = max(1, math.ceil(per_row / 4))
        block = torch.arange(blocks, device=self.device, dtype=torch.int64)[None, :]
        counter = (ids[:, None] & MASK32, ids[:, None] >> 32, calls[:, None].expand(-1, blocks), block)
        out = torch.stack(philox4x32(counter, self.key), dim=-1).reshape(len(rows), blocks * 4)
        self.calls[rows] += 1
        return out[:, :per_row]

    def _per_row(self, shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self):
            raise ValueError(f"shape: the first dimension must be the {len(self)} rows drawn for, got {shape}")
        return math.prod(shape[1:]), shape

    def rand(
        self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Uniform numbers in ``[0, 1)`` of ``shape`` (its first dimension is the rows)."""
        n, shape = self._per_row(shape)
        bits = 53 if dtype == torch.float64 else 24
        words = self.words(2 * n if bits == 53 else n).to(torch.float64)
        if bits == 53:
            u = ((words[:, 0::2] // 32) * 2.0**26 + words[:, 1::2] // 64) * 2.0**-53
        else:
            u = (words // 256) * 2.0**-24
        return u.reshape(shape).to(device=device or self.device, dtype=dtype)

    def randn(
        self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Standard normal numbers of ``shape`` (Box-Muller on the row's uniforms)."""
        n, shape = self._per_row(shape)
        words = self.words(2 * n).to(torch.float64)
        u1 = (words[:, 0::2] // 256 + 1) * 2.0**-24  # in (0, 1]: log is finite
        u2 = (words[:, 1::2] // 256) * 2.0**-24
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
        return z.reshape(shape).to(device=device or self.device, dtype=dtype)

    def randint(
        self, low: int, high: int, shape: Sequence[int], *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Integers uniform in ``[low, high)`` of ``shape`` (int64), by multiply-shift of 32-bit words."""
        if high <= low:
            raise ValueError(f"randint: expected low < high, got {low}, {high}")
        n, shape = self._per_row(shape)
        words = self.words(n)
        span = high - low
        values = (words * span) >> 32 if span < 2**31 else torch.floor(words / 2.0**32 * span).to(torch.int64)
        return (values + low).reshape(shape).to(device or self.device)


# ---------------------------------------------------------------------------------------------- one batch stream
class GeneratorRNG:
    """One stream for the whole batch: the draws of a ``torch.Generator``, exactly as ``torch.rand(...,
    generator=g)`` makes them. :meth:`rows` returns the same stream (a subset draws the next numbers)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.device = generator.device

    def rows(self, index: torch.Tensor) -> GeneratorRNG:
        return self

    def rand(
        self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        out = torch.rand(tuple(shape), generator=self.generator, device=self.device, dtype=dtype)
        return out if device is None else out.to(device)

    def randn(
        self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        out = torch.randn(tuple(shape), generator=self.generator, device=self.device, dtype=dtype)
        return out if device is None else out.to(device)

    def randint(
        self, low: int, high: int, shape: Sequence[int], *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        out = torch.randint(low, high, tuple(shape), generator=self.generator, device=self.device)
        return out if device is None else out.to(device)


def as_rng(generator: torch.Generator | int | RNG | None, device: torch.device | str = "cpu") -> RNG:
    """The randomness of an attack's ``generator`` argument.

    ``None`` is seed :data:`DEFAULT_SEED`, an int a seed, a ``torch.Generator`` is used as it is (one stream for
    the batch), and an :class:`ExampleRNG` gives each example its own stream.

    Raises:
        TypeError, ValueError: a generator of another kind, or a negative seed.
    """
    if isinstance(generator, (ExampleRNG, GeneratorRNG)):
        return generator
    if isinstance(generator, torch.Generator):
        return GeneratorRNG(generator)
    seed = DEFAULT_SEED if generator is None else validation.check_int("generator", generator, minimum=0)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return GeneratorRNG(g)
