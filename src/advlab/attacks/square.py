"""Square Attack (Andriushchenko et al. 2020): score-based random search with square updates, linf and l2.

The attack only calls the model's forward pass (no gradients). It starts from a structured point on the
boundary of the eps-ball (vertical stripes for linf, a grid of pseudo-Gaussian blocks for l2) and at each
iteration proposes a change restricted to a random square window whose side shrinks on a fixed schedule;
a proposal is kept when it increases the loss. Every example stops as soon as it is fooled, and its queries
are counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, Randomness, run_attack
from advlab.attacks.registry import AttackConfig, register_attack
from advlab.devices import full_precision, to_device
from advlab.goals import Goal, is_success
from advlab.losses import cross_entropy, margin
from advlab.result import AttackResult
from advlab.rng import RNG, ExampleRNG, as_rng
from advlab.settings import NonNegativeInt, PositiveInt, Range
from advlab.threat import ThreatModel

P_INIT = 0.8
"""Initial fraction of pixels a square covers (AutoAttack's value; the paper tunes 0.05-0.3 per data set)."""
SCHEDULE_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""The square's area ``p`` halves after each of these iterations (for a budget of 10,000 queries) ..."""
SCHEDULE_BUDGET = 10_000
"""... and the schedule is rescaled to the actual budget: iteration ``i`` counts as ``i / n_queries * 10,000``."""
MAX_RESAMPLES = 10
"""linf: redraw the colours of a window at most this many times when the proposal would not change the image."""
L2_MIN_SIDE = 3
"""l2 windows are at least 3 pixels wide (and of odd side) so the pseudo-Gaussian pattern has a centre."""
L2_INIT_GRID = 5
"""The l2 initialisation tiles the image with blocks of side ``height // 5``."""
DEFAULT_FOCUS_AFTER = 1000
"""With ``focus < 1``: the query of a run after which only the most promising examples go on (see :func:`square`)."""
DRAW_AHEAD = 64
"""Iterations whose random choices one call of per-example streams draws at once (see ``_KeyedDraws``)."""

_TINY = 1e-12


# ---------------------------------------------------------------------------------------------- schedule
def p_schedule(i: int, n_queries: int, p_init: float = P_INIT) -> float:
    """Fraction of the image a square covers at iteration ``i`` (Andriushchenko et al. 2020, Sec. 3).

    ``p_init`` halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000-query
    budget; for another budget the iteration is rescaled to ``int(i / n_queries * 10000)``.

    Examples:
        >>> p_schedule(0, 10_000), p_schedule(11, 10_000), p_schedule(8001, 10_000)
        (0.8, 0.4, 0.0015625)
    """
    it = int(i / n_queries * SCHEDULE_BUDGET)
    return p_init / 2 ** sum(it > t for t in SCHEDULE_POINTS)


# ---------------------------------------------------------------------------------------------- windows
def _as_image(x: torch.Tensor) -> torch.Tensor:
    """View ``x`` as ``(N, C, H, W)``: images as they are, ``(N, C, L)`` as one row, anything else as one flat row."""
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
    return x.reshape(x.shape[0], 1, 1, -1)


def window_size(p: float, height: int, width: int, *, minimum: int = 1, odd: bool = False) -> tuple[int, int]:
    """Side(s) of a window covering a fraction ``p`` of the ``height x width`` plane.

    Images get squares of side ``round(sqrt(p * H * W))``; one-row (or one-column) inputs get segments of
    length ``round(p * L)``. The result is at least ``minimum``, odd when asked, and fits the plane.
    """
    if height > 1 and width > 1:
        s = max(round(math.sqrt(p * height * width)), minimum)
        if odd and s % 2 == 0:
            s += 1
        s = min(s, height, width)
        return s, s
    length = max(round(p * height * width), minimum)
    if odd and length % 2 == 0:
        length += 1
    length = min(length, height * width)
    return (length, 1) if width == 1 else (1, length)


# ---------------------------------------------------------------------------------------------- random choices
class _BatchDraws:
    """Square's random choices from one stream for the whole batch (a ``torch.Generator``), in the reference order.

    Each choice is a separate draw for every row of the batch, in the order of the paper's code: the attack's
    output for a ``torch.Generator`` is what it always was.
    """

    def __init__(self, rng: RNG) -> None:
        self.rng = rng

    def begin(self, i: int) -> None:
        """Iteration ``i`` starts (nothing is drawn ahead)."""

    def keep(self, stay: torch.Tensor) -> None:
        """Only the rows ``stay`` go on (the stream is the batch's)."""

    def corners(self, n: int, sh: int, sw: int, height: int, width: int, device: torch.device):
        """The top-left corner ``(top (N,), left (N,))`` of a random ``sh x sw`` window per row."""
        # to_device: a draw of a CPU generator crosses to an accelerator without a host sync
        top = to_device(self.rng.randint(0, height - sh + 1, (n,)), device)
        left = to_device(self.rng.randint(0, width - sw + 1, (n,)), device)
        return top, left

    def signs(self, n: int, c: int, like: torch.Tensor) -> torch.Tensor:
        """One random sign per row and channel, ``(N, C, 1, 1)`` in ``like``'s dtype."""
        return _random_signs((n, c, 1, 1), self.rng, like)

    def resigns(self, same: torch.Tensor, c: int, like: torch.Tensor) -> torch.Tensor:
        """New signs for the rows ``same`` (drawn for every row, as the reference does)."""
        return self.signs(same.shape[0], c, like)

    def flips(self, n: int, device: torch.device) -> torch.Tensor:
        """Whether each row's l2 pattern is transposed."""
        return to_device(self.rng.randint(0, 2, (n,)).bool(), device)


class _KeyedDraws:
    """Square's random choices from per-example streams (an :class:`~advlab.rng.ExampleRNG`), drawn ahead.

    One Philox call draws the choices of the next :data:`DRAW_AHEAD` iterations of every active row (an ``ExampleRNG``
    call costs about as much for one word per row as for a hundred), and turns them at once into window corners
    and signs (the windows' sides follow the schedule, known ahead), so an iteration only reads its column. A block
    of iterations starts at the run's first iteration, at each ``stops`` iteration (the focus point, where a run may
    pause and resume; the run's end) and every ``DRAW_AHEAD`` iterations after one: a row's draws depend only on its
    own stream and history, never on the other rows. Per iteration a row takes one word per window (its corner,
    uniform over the positions by multiply-shift) and bits: one per channel for the signs, one for the l2 pattern's
    transposition, and (linf, several channels) one per channel for each of the :data:`MAX_RESAMPLES` redraws of
    signs a proposal may need (each row reads its own, whether or not the others redraw).

    Args:
        rng: the streams of the run's rows.
        norm: ``"linf"`` (one window per iteration) or ``"l2"`` (two, and a transposition).
        like: the run's images ``(N, C, H, W)`` (device, dtype, shape).
        sides: the window's sides at an iteration.
        start: the run's first iteration.
        stops: iterations where a block must end.
    """

    def __init__(
        self,
        rng: ExampleRNG,
        norm: str,
        like: torch.Tensor,
        sides: Callable[[int], tuple[int, int]],
        start: int,
        stops: tuple[int, ...],
    ) -> None:
        self.rng, self.sides, self.stops = rng, sides, stops
        self.windows = 1 if norm == "linf" else 2
        _, self.c, self.h, self.w = like.shape
        self.device, self.dtype = like.device, like.dtype
        # the bits of an iteration: [l2: transposition] signs [linf, several channels: the redrawn signs]
        self.redraws = MAX_RESAMPLES if norm == "linf" and self.c > 1 else 0
        self.bits = (self.windows - 1) + self.c * (1 + self.redraws)
        self.next_block, self.at, self.j, self.corner, self.attempt = start, start, 0, 0, 0
        self.tops: list[torch.Tensor] = []
        self.lefts: list[torch.Tensor] = []
        self.sign = torch.empty(0)  # (R, L, 1 + redraws, C): the signs, then the redrawn ones
        self.flip = torch.empty(0)

    def begin(self, i: int) -> None:
        """Iteration ``i`` starts: its choices are the next column of the block (a new block where one starts)."""
        if i >= self.next_block:
            end = min([i + DRAW_AHEAD] + [s for s in self.stops if s > i])
            self.draw_block(i, end)
            self.next_block, self.at = end, i
        self.j, self.corner, self.attempt = i - self.at, 0, 0

    def draw_block(self, first: int, end: int) -> None:
        """The choices of iterations ``first .. end - 1``: corners ``(R, L)`` per window, signs ``(R, L, C)``."""
        words_per = self.windows + math.ceil(self.bits / 32)
        steps = end - first
        words = to_device(self.rng.words(steps * words_per).reshape(-1, steps, words_per), self.device)
        sides = torch.tensor([self.sides(i) for i in range(first, end)], dtype=torch.int64, device=self.device)
        span_h, span_w = self.h - sides[:, 0] + 1, self.w - sides[:, 1] + 1
        at = (words[:, :, : self.windows] * (span_h * span_w)[None, :, None]) >> 32  # uniform over the positions
        self.tops = [at[:, :, k] // span_w for k in range(self.windows)]
        self.lefts = [at[:, :, k] % span_w for k in range(self.windows)]
        shifts = torch.arange(32, device=self.device, dtype=torch.int64)
        bits = ((words[:, :, self.windows :, None] >> shifts) & 1).reshape(words.shape[0], steps, -1)
        self.flip = bits[:, :, 0].bool()
        signs = bits[:, :, self.windows - 1 : self.windows - 1 + self.c * (1 + self.redraws)]
        self.sign = (2 * signs - 1).to(self.dtype).reshape(words.shape[0], steps, 1 + self.redraws, self.c)

    def keep(self, stay: torch.Tensor) -> None:
        """Only the rows ``stay`` (bool over the active rows) go on."""
        if self.sign.shape[0] == stay.shape[0]:  # a block is drawn (before the first, there is none to keep)
            stay_d = stay.to(self.device)
            self.tops = [t[stay_d] for t in self.tops]
            self.lefts = [t[stay_d] for t in self.lefts]
            self.sign, self.flip = self.sign[stay_d], self.flip[stay_d]
        self.rng = self.rng.rows(stay.nonzero().flatten())

    def corners(self, n: int, sh: int, sw: int, height: int, width: int, device: torch.device):
        k = self.corner
        self.corner += 1
        return self.tops[k][:, self.j], self.lefts[k][:, self.j]

    def signs(self, n: int, c: int, like: torch.Tensor) -> torch.Tensor:
        return self.sign[:, self.j, 0, :, None, None]

    def resigns(self, same: torch.Tensor, c: int, like: torch.Tensor) -> torch.Tensor:
        self.attempt += 1
        return self.sign[:, self.j, self.attempt, :, None, None]

    def flips(self, n: int, device: torch.device) -> torch.Tensor:
        return self.flip[:, self.j]


_Draws = _BatchDraws | _KeyedDraws


def _draws(
    rng: RNG, norm: str, like: torch.Tensor, p_init: float, n_queries: int, start: int, stops: tuple[int, ...]
) -> _Draws:
    """The source of a run's random choices: per-example streams drawn ahead, or the batch's stream as it comes."""
    if not isinstance(rng, ExampleRNG):
        return _BatchDraws(rng)
    h, w = like.shape[2], like.shape[3]

    def sides(i: int) -> tuple[int, int]:
        return _window(norm, p_schedule(i, n_queries, p_init), h, w)

    return _KeyedDraws(rng, norm, like, sides, start, stops)


def _window(norm: str, p: float, h: int, w: int) -> tuple[int, int]:
    """The sides of the proposal's window(s) covering ``p`` of the image (l2: odd, at least 3)."""
    return window_size(p, h, w) if norm == "linf" else window_size(p, h, w, minimum=L2_MIN_SIDE, odd=True)


def _random_signs(shape: tuple[int, ...], rng: RNG, like: torch.Tensor) -> torch.Tensor:
    """Random signs of ``shape`` (first dimension: the rows), in ``like``'s dtype and device."""
    s = to_device(rng.randint(0, 2, shape), like.device, like.dtype)
    return 2 * s - 1


def _window_mask(top: torch.Tensor, left: torch.Tensor, sh: int, sw: int, height: int, width: int) -> torch.Tensor:
    """``(N, 1, H, W)``: True inside each row's ``sh x sw`` window at ``(top, left)``."""
    device = top.device
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + sh)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + sw)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


# ---------------------------------------------------------------------------------------------- l2 patterns
def _eta(a: int, b: int) -> torch.Tensor:
    """Concentric rectangles around the centre with weights ``1 / (k + 1)^2`` (the paper's ``eta``), unit l2 norm."""
    rc, cc = a // 2, b // 2
    rings = max(a // 2 + 1, b // 2 + 1)
    r = torch.arange(a, dtype=torch.float64)[:, None]
    c = torch.arange(b, dtype=torch.float64)[None, :]
    ring = torch.maximum((r - rc).abs(), (c - cc).abs())
    k = torch.arange(rings, dtype=torch.float64)
    weights = 1.0 / (k + 1) ** 2
    value = (weights[None, None, :] * (k[None, None, :] >= ring[:, :, None])).sum(-1)
    return value / value.norm()


def pseudo_gaussian_pattern(a: int, b: int) -> torch.Tensor:
    """The l2 update pattern of the paper: ``+eta`` on the first half, ``-eta`` on the second, unit l2 norm.

    The halves split the longer side (rows for a square); callers transpose square patterns at random.
    """
    if a < b:
        return pseudo_gaussian_pattern(b, a).T.contiguous()
    top = a // 2
    out = torch.zeros(a, b, dtype=torch.float64)
    if top > 0:
        out[:top] = _eta(top, b)
    out[top:] = -_eta(a - top, b)
    return out / out.norm()


def _place(
    pattern: torch.Tensor, flip: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Put ``pattern`` (transposed where ``flip``) at each example's window; zeros elsewhere, ``(N, 1, H, W)``."""
    sh, sw = pattern.shape
    n = top.shape[0]
    device = top.device
    per_example = pattern[None].expand(n, sh, sw)
    if sh == sw:
        per_example = torch.where(flip[:, None, None], pattern.T[None], per_example)
    rel_r = torch.arange(height, device=device)[None, :] - top[:, None]
    rel_c = torch.arange(width, device=device)[None, :] - left[:, None]
    inside = ((rel_r >= 0) & (rel_r < sh))[:, :, None] & ((rel_c >= 0) & (rel_c < sw))[:, None, :]
    rr = rel_r.clamp(0, sh - 1)[:, :, None].expand(n, height, width)
    cc = rel_c.clamp(0, sw - 1)[:, None, :].expand(n, height, width)
    idx = torch.arange(n, device=device)[:, None, None].expand(n, height, width)
    full = per_example[idx, rr, cc] * inside
    return full[:, None]


def _l2_blocks(h: int, w: int) -> tuple[int, int, list[tuple[int, int]]]:
    """The l2 start's block sides and the top-left corners of its blocks (a centred ``5 x 5`` grid)."""
    bh = max(h // L2_INIT_GRID, 1) if h > 1 else 1
    bw = max(w // L2_INIT_GRID, 1) if w > 1 else 1
    if h > 1 and w > 1:
        bh = bw = min(bh, bw)
    off_h, off_w = (h - bh * L2_INIT_GRID) // 2 if h > 1 else 0, (w - bw * L2_INIT_GRID) // 2 if w > 1 else 0
    off_h, off_w = max(off_h, 0), max(off_w, 0)
    corners = [(top, left) for top in range(off_h, h - bh + 1, bh) for left in range(off_w, w - bw + 1, bw)]
    return bh, bw, corners


def _l2_init(x: torch.Tensor, eps: float, rng: RNG) -> torch.Tensor:
    """The paper's l2 start: a grid of pseudo-Gaussian blocks with random signs per channel, scaled to norm eps.

    From one stream for the batch each block transposes its pattern for every row or none (the reference's
    draws); from per-example streams each row draws its transpositions and signs, in one call.
    """
    n, c, h, w = x.shape
    bh, bw, corners = _l2_blocks(h, w)
    pattern = pseudo_gaussian_pattern(bh, bw).to(x.device, x.dtype)
    delta = torch.zeros_like(x)
    if isinstance(rng, ExampleRNG):
        bits = rng.randint(0, 2, (n, len(corners), 1 + c)).to(x.device)
        for b, (top, left) in enumerate(corners):
            flip = bits[:, b, 0].bool()[:, None, None, None]
            block = torch.where(flip, pattern.T, pattern) if bh == bw else pattern[None, None]
            signs = (2 * bits[:, b, 1:] - 1).to(x.dtype)[:, :, None, None]
            delta[:, :, top : top + bh, left : left + bw] += block * signs
    else:
        for top, left in corners:
            block = pattern
            if bh == bw and bool(rng.randint(0, 2, (1,))):
                block = pattern.T
            signs = _random_signs((n, c, 1, 1), rng, x)
            delta[:, :, top : top + bh, left : left + bw] += block[None, None] * signs
    norms = delta.reshape(n, -1).norm(dim=1).clamp_min(_TINY)
    return delta / norms[:, None, None, None] * eps


# ---------------------------------------------------------------------------------------------- proposals
def _propose_linf(x, x_best, p, eps, bounds, draws: _Draws):
    """``x_best`` with a random window per example set to ``clip(x +- eps)``, one random sign per channel.

    Only the windows are computed (gathered, changed, scattered into a copy of ``x_best``): after the first
    iterations a window is a few pixels, and whole-image passes would cost more than the proposal itself.
    """
    n, c, h, w = x.shape
    sh, sw = _window("linf", p, h, w)
    top, left = draws.corners(n, sh, sw, h, w, x.device)
    signs = draws.signs(n, c, x)
    at = (
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        (top[:, None] + torch.arange(sh, device=x.device))[:, None, :, None],
        (left[:, None] + torch.arange(sw, device=x.device))[:, None, None, :],
    )
    x_win, best_win = x[at], x_best[at]
    new_win = (x_win + eps * signs).clamp(*bounds)
    for _ in range(MAX_RESAMPLES if c > 1 else 0):  # a proposal identical to the current point would waste a query
        same = ~(new_win != best_win).flatten(1).any(dim=1)
        if not bool(same.any()):  # a host sync, but the draws of a batch stream depend on it
            break
        signs = torch.where(same[:, None, None, None], draws.resigns(same, c, x), signs)
        new_win = (x_win + eps * signs).clamp(*bounds)
    if c == 1:
        # With one channel the only other sign is the opposite one, so redrawing uniformly until it differs
        # (the reference implementation) is the same distribution as flipping, which needs no retries and no
        # look at whether any row needs it (rows that do not keep their signs). The flipped window differs from
        # the current one (x + eps and x - eps clamp to different values for eps > 0): no second check.
        same = ~(new_win != best_win).flatten(1).any(dim=1)
        signs = torch.where(same[:, None, None, None], -signs, signs)
        new_win = (x_win + eps * signs).clamp(*bounds)
    x_new = x_best.clone()
    x_new[at] = new_win
    return x_new


def _propose_l2(x, x_best, p, eps, bounds, draws: _Draws):
    n, c, h, w = x.shape
    sh, sw = _window("l2", p, h, w)
    top, left = draws.corners(n, sh, sw, h, w, x.device)
    mask1 = _window_mask(top, left, sh, sw, h, w)
    top2, left2 = draws.corners(n, sh, sw, h, w, x.device)
    mask2 = _window_mask(top2, left2, sh, sw, h, w)
    delta = x_best - x
    sq = delta**2
    norm_w1 = (sq * mask1).sum(dim=(2, 3), keepdim=True).sqrt()
    norm_union = (sq * (mask1 | mask2)).sum(dim=(2, 3), keepdim=True).sqrt()
    norm_all = sq.reshape(n, -1).sum(dim=1).sqrt()[:, None, None, None]
    pattern = pseudo_gaussian_pattern(sh, sw).to(x.device, x.dtype)
    flip = draws.flips(n, x.device)
    placed = _place(pattern, flip, top, left, h, w)
    signs = draws.signs(n, c, x)
    # New window content: the pattern plus the window's current content (normalised), rescaled so that the
    # mass of both windows, and whatever the ball still has room for, goes into the first window.
    new = placed * signs + delta * mask1 / (norm_w1 + _TINY)
    new_norm = (new**2 * mask1).sum(dim=(2, 3), keepdim=True).sqrt()
    budget = ((eps**2 - norm_all**2).clamp_min(0.0) / c + norm_union**2).sqrt()
    new = new / (new_norm + _TINY) * budget
    delta = torch.where(mask2, torch.zeros_like(delta), delta)
    delta = torch.where(mask1, new, delta)
    norms = delta.reshape(n, -1).norm(dim=1).clamp_min(_TINY)[:, None, None, None]
    return (x + delta / norms * eps).clamp(*bounds)


# ---------------------------------------------------------------------------------------------- core
@torch.no_grad()
def _query(
    model: nn.Module, x_img: torch.Tensor, labels: torch.Tensor, targeted: bool, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per example: (loss to maximise, success). Margin loss untargeted, -CE targeted."""
    logits = model(x_img.reshape((x_img.shape[0],) + tuple(shape[1:])))
    loss = cross_entropy(logits, labels, True) if targeted else margin(logits, labels, False)
    return loss, is_success(logits, labels, targeted)


def _start(xs: torch.Tensor, threat: ThreatModel, rng: RNG) -> torch.Tensor:
    """The initial point: vertical stripes of ``+-eps`` (linf), a grid of pseudo-Gaussian blocks of norm eps (l2)."""
    eps, bounds = threat.eps, threat.box
    if threat.norm == "linf":
        stripes = _random_signs((xs.shape[0], xs.shape[1], 1, xs.shape[3]), rng, xs)
        return (xs + eps * stripes).clamp(*bounds)
    return (xs + _l2_init(xs, eps, rng)).clamp(*bounds)


def top_scores(loss: torch.Tensor, n_keep: int, ids: torch.Tensor | None) -> torch.Tensor:
    """Bool mask of the ``n_keep`` highest scores; ties go to the smaller example id when ``ids`` are given, so the
    choice depends neither on the examples' order nor on how they were cut into batches or shared out.

    Examples:
        >>> top_scores(torch.tensor([-3.0, -0.5, -2.0, -0.5]), 2, torch.tensor([9, 8, 7, 6]))
        tensor([False,  True, False,  True])
    """
    if ids is None:
        chosen = loss.topk(n_keep).indices
    else:
        order = ids.to(loss.device).argsort()
        chosen = order[(-loss[order]).argsort(stable=True)[:n_keep]]
    keep = torch.zeros_like(loss, dtype=torch.bool)
    keep[chosen] = True
    return keep


@dataclass(frozen=True)
class _Resume:
    """Where a resumed run 0 starts: its examples' best points and losses (none of them fooled yet)."""

    x_best: torch.Tensor
    best_loss: torch.Tensor


class _Run:
    """One run of the random search: per-example best point, best loss, success and queries, and the loss trace.

    The loop works on compact copies of the examples still being attacked ("active"), written back and
    re-gathered only when some of them leave (fooled, or stopped by the focus), so an iteration costs one
    proposal and one forward. A run starts from a fresh random point, or (``resume``) from the points of a run that
    paused at iteration ``first``.
    """

    def __init__(
        self,
        search: _Search,
        idx: torch.Tensor,
        *,
        first: int = 0,
        stops: tuple[int, ...] = (),
        resume: _Resume | None = None,
    ) -> None:
        xs, lab = search.xi[idx], search.labels[idx]
        self.model, self.targeted, self.threat, self.shape = search.model, search.targeted, search.threat, search.shape
        self.propose = _propose_linf if self.threat.norm == "linf" else _propose_l2
        rng = search.rng.rows(idx)
        m = xs.shape[0]
        if resume is None:
            self.x_best = _start(xs, self.threat, rng)
            self.best_loss, self.fooled = _query(self.model, self.x_best, lab, self.targeted, self.shape)
        else:
            self.x_best, self.best_loss = resume.x_best.clone(), resume.best_loss.clone()
            self.fooled = torch.zeros(m, dtype=torch.bool, device=xs.device)
        end = (*stops, search.iterations)
        self.draws = _draws(rng, self.threat.norm, xs, search.p_init, search.max_queries, first, end)
        self.queries = torch.full((m,), 0 if resume is not None else 1, dtype=torch.int64, device=xs.device)
        self.dropped = torch.zeros(m, dtype=torch.bool, device=xs.device)
        self.trace: list[torch.Tensor] = []
        active = (~self.fooled).nonzero().flatten()
        self.active = active
        self.xa, self.xb, self.la, self.bl = xs[active], self.x_best[active], lab[active], self.best_loss[active]
        if len(active) < m:
            self.draws.keep(~self.fooled)
        self.spent = 0  # iterations since the last write-back: every active example made one query in each
        # the trace is the mean best loss over all the examples of the attack, those outside the run and those
        # no longer active contributing their fixed best losses (done_sum)
        self.n_total = search.xi.shape[0]
        outside_sum = search.best_loss.sum() - search.best_loss[idx].sum()
        self.done_sum = outside_sum + self.best_loss.sum() - self.bl.sum()

    def iterate(self, first: int, stop: int, n_queries: int, p_init: float) -> None:
        """Iterations ``first .. stop - 1`` of the schedule, until no example is left."""
        for i in range(first, stop):
            if self.active.numel() == 0:
                break
            self.step(i, p_schedule(i, n_queries, p_init))

    def should_focus(self, n_keep: int) -> bool:
        """Focus unless at most ``n_keep`` examples are left or the run already fooled ``n_keep / 2`` or more."""
        return self.active.numel() > n_keep and 2 * int(self.fooled.sum()) < n_keep

    def focus(self, keep: torch.Tensor) -> None:
        """Only the active examples ``keep`` go on; the others stop at their best point."""
        gone = ~keep
        self.dropped[self.active[gone]] = True
        self.write_back_and_drop(gone)

    def step(self, i: int, p: float) -> None:
        """Propose a window change of area ``p`` per active example; keep it where the loss rises or the goal is met."""
        self.draws.begin(i)
        x_new = self.propose(self.xa, self.xb, p, self.threat.eps, self.threat.box, self.draws)
        loss, succ = _query(self.model, x_new, self.la, self.targeted, self.shape)
        self.spent += 1
        accept = (loss > self.bl) | succ
        self.xb = torch.where(accept[:, None, None, None], x_new, self.xb)
        self.bl = torch.where(accept, loss, self.bl)
        self.trace.append((self.done_sum + self.bl.sum()) / self.n_total)
        if bool(succ.any()):
            self.fooled[self.active] = succ
            self.write_back_and_drop(succ)

    def write_back_and_drop(self, gone: torch.Tensor) -> None:
        """Write every active example back, then drop those in ``gone`` from the active set."""
        self.x_best[self.active], self.best_loss[self.active] = self.xb, self.bl
        self.queries[self.active] += self.spent
        self.spent = 0
        self.done_sum = self.done_sum + self.bl[gone].sum()
        stay = ~gone
        self.active, self.xa, self.xb = self.active[stay], self.xa[stay], self.xb[stay]
        self.la, self.bl = self.la[stay], self.bl[stay]
        self.draws.keep(stay)


@dataclass(frozen=True)
class FocusPoint:
    """Square's first run paused at its focus point, per example: what :func:`square_from_focus` resumes from.

    Attributes:
        x_best: the best point so far, shaped like ``x`` (the clean input where the run did not start).
        best_loss: its loss.
        fooled: whether the example is fooled (at the clean point or in the run).
        entered: whether the example entered the first run (it was not fooled at the clean point).
        queries: the queries made for it so far, the clean one included.
        positions: each example's stream position (:meth:`~advlab.rng.ExampleRNG.positions`), ``None`` when the
            attack drew from one stream for the batch (which the caller keeps, with its position).
    """

    x_best: torch.Tensor
    best_loss: torch.Tensor
    fooled: torch.Tensor
    entered: torch.Tensor
    queries: torch.Tensor
    positions: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> FocusPoint:
        """The point of the examples ``index``."""
        return self._map(lambda v: v[index.to(v.device)])

    def to(self, device: torch.device | str) -> FocusPoint:
        """A copy on ``device``."""
        return self._map(lambda v: v.to(device))

    @staticmethod
    def cat(points: list[FocusPoint]) -> FocusPoint:
        """The points of several batches, one after the other."""
        fields = [p._fields() for p in points]
        joined = {k: torch.cat([f[k] for f in fields]) for k, v in fields[0].items() if v is not None}
        return dataclasses.replace(points[0], **joined)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> FocusPoint:
        return dataclasses.replace(self, **{k: fn(v) for k, v in self._fields().items() if v is not None})

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def focus_selection(
    point: FocusPoint, focus: float, ids: torch.Tensor | None = None, min_fooled: int = 0
) -> torch.Tensor:
    """Which examples go on after Square's focus point: the rule of :func:`square`, over every example of ``point``.

    Of the ``m`` examples that entered the first run, ``ceil(focus * m)`` with the highest loss go on, unless at most
    that many are still unfooled or the run already fooled half as many (then every unfooled example goes on); none
    goes on when the run fooled fewer than ``min_fooled``. An evaluation that cuts its examples into batches gathers
    their points and decides once, for all of them.

    Args:
        point: the paused runs of every example (:meth:`FocusPoint.cat` of the batches').
        focus: the fraction that goes on.
        ids: example ids that break ties between equal losses (the smaller goes on), so the choice does not depend
            on the examples' order; ``None`` breaks them as ``torch.topk`` does.
        min_fooled: no example goes on when the first run fooled fewer than this many by the focus point (0: the
            rule does not apply); see :func:`square`'s ``focus_min_fooled``.

    Returns:
        Bool ``(N,)``: the examples whose first run goes on (the others are finished).

    Examples:
        >>> keep = focus_selection(FocusPoint.cat(points), 0.1, ids)
    """
    active = point.entered & ~point.fooled
    if int((point.entered & point.fooled).sum()) < min_fooled:
        return torch.zeros_like(active)
    n_keep = max(math.ceil(focus * int(point.entered.sum())), 1)
    if not (int(active.sum()) > n_keep and 2 * int((point.entered & point.fooled).sum()) < n_keep):
        return active
    where = active.nonzero().flatten()
    keep = torch.zeros_like(active)
    keep[where[top_scores(point.best_loss[where], n_keep, None if ids is None else ids[where.to(ids.device)])]] = True
    return keep


class _Search:
    """One call of the attack on a batch: the clean queries, the runs, and each example's best point over them."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        threat: ThreatModel,
        rng: RNG,
        *,
        max_queries: int,
        p_init: float,
        restarts: int,
        focus: float,
        focus_after: int,
        focus_min_fooled: int = 0,
    ) -> None:
        self.model, self.labels, self.targeted, self.threat, self.rng = model, labels, targeted, threat, rng
        self.max_queries, self.p_init, self.restarts, self.focus = max_queries, p_init, restarts, focus
        self.focus_min_fooled = focus_min_fooled
        self.shape = tuple(x.shape)
        self.xi = _as_image(x)
        n = self.xi.shape[0]
        # the focus point: the first run's iteration at which only the most promising examples go on
        reached = focus < 1.0 and focus_after - 1 < max_queries - 2
        self.pause_at = focus_after - 1 if reached else None
        self.x_best = self.xi.clone()
        self.best_loss = torch.zeros(n, dtype=x.dtype, device=x.device)
        self.fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.queries = torch.ones(n, dtype=torch.int64, device=x.device)
        self.stopped = torch.zeros(n, dtype=torch.bool, device=x.device)  # left behind by the focus
        self.first_trace: list[torch.Tensor] | None = None

    @property
    def iterations(self) -> int:
        """Iterations of a run: the budget less the clean query and the initial point."""
        return max(self.max_queries - 2, 0)

    def clean(self) -> None:
        """Query the clean points: the examples already fooled stop here."""
        self.best_loss, self.fooled = _query(self.model, self.xi, self.labels, self.targeted, self.shape)

    def new_run(self, r: int) -> tuple[torch.Tensor, _Run] | None:
        """Run ``r`` from a fresh start on the examples not fooled nor stopped (``None`` when there is none)."""
        idx = (~self.fooled & ~self.stopped).nonzero().flatten()
        if self.max_queries < 2 or idx.numel() == 0:
            return None
        stops = (self.pause_at,) if r == 0 and self.pause_at is not None else ()
        return idx, _Run(self, idx, stops=stops)

    def first_run(self) -> tuple[torch.Tensor, _Run] | None:
        """Run 0 in full, its focus decided within the batch."""
        started = self.new_run(0)
        if started is None or self.pause_at is None:
            if started is not None:
                started[1].iterate(0, self.iterations, self.max_queries, self.p_init)
            return started
        idx, run = started
        run.iterate(0, self.pause_at, self.max_queries, self.p_init)
        n_keep = max(math.ceil(self.focus * idx.numel()), 1)
        if int(run.fooled.sum()) < self.focus_min_fooled:  # nothing broke by the focus point: every example stops
            run.focus(torch.zeros_like(run.bl, dtype=torch.bool))
        elif run.should_focus(n_keep):
            # Focus: the examples with the highest loss so far are the ones Square goes on to fool
            # (bench/square_focus.py); the others stop here, at their best point.
            ids = self.rng.row_ids()[idx[run.active]] if isinstance(self.rng, ExampleRNG) else None
            run.focus(top_scores(run.bl, n_keep, ids))
        run.iterate(self.pause_at, self.iterations, self.max_queries, self.p_init)
        return started

    def merge(self, idx: torch.Tensor, run: _Run, r: int) -> None:
        """Keep run ``r``'s points: the first run's replace the clean ones (as in the paper); a restart's where it
        reaches the goal or beats the best loss so far."""
        run.write_back_and_drop(torch.zeros_like(run.la, dtype=torch.bool))
        self.stopped[idx[run.dropped]] = True
        self.queries[idx] += run.queries
        better = torch.ones_like(run.fooled) if r == 0 else run.fooled | (run.best_loss > self.best_loss[idx])
        sel = idx[better]
        self.x_best[sel], self.best_loss[sel], self.fooled[sel] = (
            run.x_best[better],
            run.best_loss[better],
            run.fooled[better],
        )
        if self.first_trace is None:
            self.first_trace = run.trace

    def restart_runs(self, first: int) -> None:
        """Runs ``first .. restarts - 1`` on the examples not yet fooled (nor stopped by the focus)."""
        for r in range(first, self.restarts):
            started = self.new_run(r)
            if started is None:
                break
            started[1].iterate(0, self.iterations, self.max_queries, self.p_init)
            self.merge(*started, r)

    def paused(self) -> FocusPoint:
        """Run 0 up to the focus point, the point where it stands."""
        started = self.new_run(0)
        entered = torch.zeros_like(self.fooled)
        if started is not None:
            idx, run = started
            run.iterate(0, self.pause_at or 0, self.max_queries, self.p_init)
            self.merge(idx, run, 0)
            entered[idx] = True
        positions = self.rng.positions() if isinstance(self.rng, ExampleRNG) else None
        return FocusPoint(
            self.x_best.reshape(self.shape), self.best_loss, self.fooled, entered, self.queries.clone(), positions
        )

    def resume(self, point: FocusPoint, keep: torch.Tensor) -> None:
        """Run 0 from the focus point for the examples ``keep``, the others of ``point`` finished."""
        self.x_best = _as_image(point.x_best).clone()
        self.best_loss, self.fooled = point.best_loss.clone(), point.fooled.clone()
        self.queries = point.queries.clone()
        going = keep & point.entered & ~point.fooled
        self.stopped = point.entered & ~point.fooled & ~going
        if point.positions is not None and isinstance(self.rng, ExampleRNG):
            self.rng.seek(point.positions)
        idx = going.nonzero().flatten()
        if idx.numel() and self.pause_at is not None:
            run = _Run(self, idx, first=self.pause_at, resume=_Resume(self.x_best[idx], self.best_loss[idx]))
            run.iterate(self.pause_at, self.iterations, self.max_queries, self.p_init)
            self.merge(idx, run, 0)

    def output(self, **info: Any) -> AttackOutput:
        trace = torch.stack(self.first_trace) if self.first_trace else torch.empty(0)
        return AttackOutput(self.x_best.reshape(self.shape), queries=self.queries, loss_trace=trace, info=info)


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    generator: RNG,
    pause: bool = False,
    resume: tuple[FocusPoint, torch.Tensor] | None = None,
    **settings: Any,
) -> AttackOutput:
    search = _Search(model, x, labels, targeted, threat, generator, **settings)
    if resume is not None:
        search.resume(*resume)
    else:
        search.clean()
        if pause and search.pause_at is not None:
            return search.output(focus_point=search.paused())
        started = search.first_run()
        if started is not None:
            search.merge(*started, 0)
    search.restart_runs(1)
    return search.output()


@register_attack(
    "Square",
    norms=("linf", "l2"),
    needs_gradients=False,
    stochastic=True,
    query_based=True,
    paper="Andriushchenko et al. 2020, arXiv:1912.00049",
    renamed={"n_queries": "max_queries"},
)
def square(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    max_queries: PositiveInt = 5000,
    p_init: Annotated[float, Range(0, 1, strict_min=True)] = P_INIT,
    restarts: PositiveInt = 1,
    focus: Annotated[float, Range(0, 1, strict_min=True)] = 1.0,
    focus_after: PositiveInt = DEFAULT_FOCUS_AFTER,
    focus_min_fooled: NonNegativeInt = 0,
    generator: Randomness = None,
) -> AttackResult:
    """Square Attack: random search over square-shaped updates, using only the model's outputs.

    linf: start from vertical stripes of ``+-eps`` (one random sign per column and channel); each iteration
    picks a random window of area ``p * H * W`` per example and sets it to ``+-eps`` (one random sign per
    channel). l2: start from a grid of pseudo-Gaussian blocks scaled to norm eps; each iteration moves the
    perturbation mass of a second random window into the first one, adds a pseudo-Gaussian pattern there
    and rescales the whole perturbation to norm eps. ``p`` follows :func:`p_schedule`. A proposal is kept when
    it increases the loss (margin ``max_{j != y} z_j - z_y`` untargeted, ``-CE(logits, target)`` targeted)
    or reaches the goal; only examples not yet fooled are queried.

    ``AttackResult.queries`` counts, per example, every forward evaluation the attack made for it: the
    clean point (1 query, after which already-misclassified examples stop), the initial point, and one per
    iteration until it is fooled. It never exceeds ``max_queries`` with one run. With ``restarts > 1`` the search
    runs again, from a fresh random start and with the same schedule, on the examples still not fooled (as in
    AutoAttack's Square with ``n_restarts``); an example keeps the run that fooled it or reached the highest loss,
    and makes at most ``1 + restarts * (max_queries - 1)`` queries. Non-image inputs ``(N, D)`` are treated as a
    single row of pixels, so the windows become segments.

    ``focus < 1`` spends the budget where it pays: after the first ``focus_after`` queries of the first run,
    only the ``ceil(focus * m)`` examples (of the ``m`` the run started with) with the highest loss go on;
    the others stop at their best point, and the restarts run only on the examples that went on. The
    examples that Square fools late are the ones whose loss is already high early: on the PGD- and
    fast-FGSM-trained MNIST models of BENCHMARKS.md ("Square's focus"), every example that some full run
    fooled ranked in the top 13% by loss after 500 queries and in the top 7% after 1000. The focus is
    skipped when the run has already fooled at least half as many examples as it would keep: Square then
    succeeds broadly and every example keeps its budget. With ``focus_min_fooled``, no example goes on when the
    first run fooled fewer than that many examples by the focus point: where Square breaks nothing in its first
    ``focus_after`` queries (the CIFAR-10 model of BENCHMARKS.md), its continuation breaks nothing either.
    ``focus=1`` (the default) is the paper's attack.

    Args:
        model: a ``torch.nn.Module`` returning logits (or scores), or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds`` (torch or numpy), ``(N, C, H, W)`` images or ``(N, D)`` vectors.
        y: true labels, shape ``(N,)``.
        threat: norm ``"linf"`` or ``"l2"``, eps and bounds.
        goal: ``None`` (untargeted), ``Targeted(target)`` or ``LeastLikely()``.
        max_queries: query budget per example and run, the clean check and the initial point included (5000).
            Called ``n_queries`` before advlab 0.2.
        p_init: initial fraction of the image covered by a square (0.8).
        restarts: runs of the search on the examples not yet fooled (1).
        focus: fraction of the examples that go on after ``focus_after`` queries (1.0: all, the paper's attack).
        focus_after: queries of the first run after which the focus applies (1000).
        focus_min_fooled: with ``focus < 1``, every example stops at the focus point when the first run has fooled
            fewer than this many by then (0, the default: never).
        generator: ``torch.Generator`` or int seed (default seed 0).

    Returns:
        AttackResult with per-example ``queries`` and the mean best loss per iteration as ``loss_trace``.

    Raises:
        ValueError: on an unsupported norm, bad settings or bad input.

    References:
        Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
        attack via random search", arXiv:1912.00049.

    Examples:
        >>> result = square(model, x, y, ThreatModel("linf", 8 / 255), max_queries=1000)
        >>> result.queries.float().mean()
    """
    return run_attack(
        _core, model, x, y, threat, goal=goal, max_queries=max_queries, p_init=p_init, restarts=restarts, focus=focus,
        focus_after=focus_after, focus_min_fooled=focus_min_fooled, generator=as_rng(generator),
    )  # fmt: skip


Square = square.config


def square_to_focus(
    config: AttackConfig, model: nn.Module, x: Any, y: Any, threat: ThreatModel, *, generator: Randomness = None
) -> tuple[AttackResult, FocusPoint | None]:
    """The first part of a focused Square (``focus < 1``): every example up to the focus point, and where it stands.

    :func:`square` decides its focus among the examples of its batch. An evaluation that cuts its examples into
    batches runs this part on every batch, decides once for all of them (:func:`focus_selection` on the
    :meth:`FocusPoint.cat` of the points) and finishes each batch with :func:`square_from_focus`: each example's
    outcome is then the one a single call on all the examples would give, whatever the batches.

    Args:
        config: a :class:`Square` config.
        model: a ``torch.nn.Module`` returning logits, or an ``advlab.Classifier``.
        x: inputs inside ``threat.bounds``.
        y: true labels.
        threat: the threat model.
        generator: the randomness, as for :func:`square` (per-example streams, to resume them later).

    Returns:
        ``(result, point)``: the result of the examples that are finished (those fooled so far are; the others'
        result is provisional), and the point (``None`` when the attack never reaches its focus point: the result
        is then final for every example).

    Examples:
        >>> result, point = square_to_focus(Square(focus=0.1), model, x, y, threat, generator=rng)
    """
    settings = _square_settings(config)
    with full_precision():  # as square() itself (a gradient-free attack, see register_attack)
        result = run_attack(_core, model, x, y, threat, goal=None, generator=as_rng(generator), pause=True, **settings)
    return result, result.info.get("focus_point")


def square_from_focus(
    config: AttackConfig,
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    point: FocusPoint,
    keep: torch.Tensor,
    *,
    generator: Randomness = None,
) -> AttackResult:
    """The rest of a focused Square from ``point``: the examples ``keep`` go on, the others finish where they are.

    Args:
        config: the :class:`Square` config given to :func:`square_to_focus`.
        model: the model.
        x: the examples' clean inputs.
        y: their labels.
        threat: the threat model.
        point: the examples' point (rows of what :func:`square_to_focus` returned).
        keep: bool per example: whether its first run goes on (:func:`focus_selection`).
        generator: per-example streams for the examples (their positions are taken from ``point``).

    Returns:
        The examples' final result, as :func:`square` on all of them would give it.

    Examples:
        >>> final = square_from_focus(Square(focus=0.1), model, x, y, threat, point, keep, generator=rng)
    """
    settings = _square_settings(config)
    with full_precision():  # as square() itself (a gradient-free attack, see register_attack)
        return run_attack(
            _core, model, x, y, threat, goal=None, generator=as_rng(generator), resume=(point, keep), **settings
        )


def _square_settings(config: AttackConfig) -> dict[str, Any]:
    if not isinstance(config, Square):
        raise TypeError(f"config: expected a Square config, got {type(config).__name__}")
    return config.settings()
