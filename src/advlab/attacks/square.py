"""Square Attack (Andriushchenko et al. 2020): score-based random search with square updates, linf and l2.

The attack only calls the model's forward pass (no gradients). It starts from a structured point on the
boundary of the eps-ball (vertical stripes for linf, a grid of pseudo-Gaussian blocks for l2) and at each
iteration proposes a change restricted to a random square window whose side shrinks on a fixed schedule;
a proposal is kept when it increases the loss. Every example stops as soon as it is fooled, and its queries
are counted.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from advlab.attacks.base import AttackOutput, make_generator, run_attack
from advlab.attacks.registry import register_attack
from advlab.goals import Goal, is_success
from advlab.losses import cross_entropy, margin
from advlab.result import AttackResult
from advlab.settings import PositiveInt, Range
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


def _random_corners(
    n: int, sh: int, sw: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-left corner ``(top (N,), left (N,))`` of a random ``sh x sw`` window per example."""
    top = torch.randint(0, height - sh + 1, (n,), generator=generator, device=generator.device).to(device)
    left = torch.randint(0, width - sw + 1, (n,), generator=generator, device=generator.device).to(device)
    return top, left


def _random_windows(
    n: int, sh: int, sw: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window per example: ``(mask (N, 1, H, W), top (N,), left (N,))``."""
    top, left = _random_corners(n, sh, sw, height, width, generator, device)
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + sh)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + sw)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return mask, top, left


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    s = torch.randint(0, 2, shape, generator=generator, device=generator.device).to(like.device, like.dtype)
    return 2 * s - 1


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


def _l2_init(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """The paper's l2 start: a grid of pseudo-Gaussian blocks with random signs per channel, scaled to norm eps."""
    n, c, h, w = x.shape
    bh = max(h // L2_INIT_GRID, 1) if h > 1 else 1
    bw = max(w // L2_INIT_GRID, 1) if w > 1 else 1
    if h > 1 and w > 1:
        bh = bw = min(bh, bw)
    off_h, off_w = (h - bh * L2_INIT_GRID) // 2 if h > 1 else 0, (w - bw * L2_INIT_GRID) // 2 if w > 1 else 0
    off_h, off_w = max(off_h, 0), max(off_w, 0)
    delta = torch.zeros_like(x)
    for top in range(off_h, h - bh + 1, bh):
        for left in range(off_w, w - bw + 1, bw):
            pattern = pseudo_gaussian_pattern(bh, bw).to(x.device, x.dtype)
            if bh == bw and bool(torch.randint(0, 2, (1,), generator=generator, device=generator.device)):
                pattern = pattern.T
            signs = _random_signs((n, c, 1, 1), generator, x)
            delta[:, :, top : top + bh, left : left + bw] += pattern[None, None] * signs
    norms = delta.reshape(n, -1).norm(dim=1).clamp_min(_TINY)
    return delta / norms[:, None, None, None] * eps


# ---------------------------------------------------------------------------------------------- proposals
def _propose_linf(x, x_best, p, eps, bounds, generator):
    """``x_best`` with a random window per example set to ``clip(x +- eps)``, one random sign per channel.

    Only the windows are computed (gathered, changed, scattered into a copy of ``x_best``): after the first
    iterations a window is a few pixels, and whole-image passes would cost more than the proposal itself.
    """
    n, c, h, w = x.shape
    sh, sw = window_size(p, h, w)
    top, left = _random_corners(n, sh, sw, h, w, generator, x.device)
    signs = _random_signs((n, c, 1, 1), generator, x)
    at = (
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        (top[:, None] + torch.arange(sh, device=x.device))[:, None, :, None],
        (left[:, None] + torch.arange(sw, device=x.device))[:, None, None, :],
    )
    x_win, best_win = x[at], x_best[at]
    new_win = (x_win + eps * signs).clamp(*bounds)
    for attempt in range(MAX_RESAMPLES):  # a proposal identical to the current point would waste a query
        same = ~(new_win != best_win).flatten(1).any(dim=1)
        if not bool(same.any()):
            break
        # With one channel the only other sign is the opposite one, so redrawing uniformly until it differs
        # (the reference implementation) is the same distribution as flipping, which needs no retries.
        # The flipped window then differs from the current one (x + eps and x - eps clamp to different values
        # for eps > 0), so no second check is needed.
        redraw = -signs if (c == 1 and attempt == 0) else _random_signs((n, c, 1, 1), generator, x)
        signs = torch.where(same[:, None, None, None], redraw, signs)
        new_win = (x_win + eps * signs).clamp(*bounds)
        if c == 1:
            break
    x_new = x_best.clone()
    x_new[at] = new_win
    return x_new


def _propose_l2(x, x_best, p, eps, bounds, generator):
    n, c, h, w = x.shape
    sh, sw = window_size(p, h, w, minimum=L2_MIN_SIDE, odd=True)
    mask1, top, left = _random_windows(n, sh, sw, h, w, generator, x.device)
    mask2, _, _ = _random_windows(n, sh, sw, h, w, generator, x.device)
    delta = x_best - x
    sq = delta**2
    norm_w1 = (sq * mask1).sum(dim=(2, 3), keepdim=True).sqrt()
    norm_union = (sq * (mask1 | mask2)).sum(dim=(2, 3), keepdim=True).sqrt()
    norm_all = sq.reshape(n, -1).sum(dim=1).sqrt()[:, None, None, None]
    pattern = pseudo_gaussian_pattern(sh, sw).to(x.device, x.dtype)
    flip = torch.randint(0, 2, (n,), generator=generator, device=generator.device).bool().to(x.device)
    placed = _place(pattern, flip, top, left, h, w)
    signs = _random_signs((n, c, 1, 1), generator, x)
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


def _start(xs: torch.Tensor, threat: ThreatModel, generator: torch.Generator) -> torch.Tensor:
    """The initial point: vertical stripes of ``+-eps`` (linf), a grid of pseudo-Gaussian blocks of norm eps (l2)."""
    eps, bounds = threat.eps, threat.box
    if threat.norm == "linf":
        stripes = _random_signs((xs.shape[0], xs.shape[1], 1, xs.shape[3]), generator, xs)
        return (xs + eps * stripes).clamp(*bounds)
    return (xs + _l2_init(xs, eps, generator)).clamp(*bounds)


class _Run:
    """One run of the random search: per-example best point, best loss, success and queries, and the loss trace.

    The loop works on compact copies of the examples still being attacked ("active"), written back and
    re-gathered only when some of them leave (fooled, or stopped by the focus), so an iteration costs one
    proposal and one forward.
    """

    def __init__(
        self,
        model: nn.Module,
        xs: torch.Tensor,
        lab: torch.Tensor,
        targeted: bool,
        threat: ThreatModel,
        shape: tuple[int, ...],
        generator: torch.Generator,
        *,
        outside_sum: torch.Tensor,
        n_total: int,
    ) -> None:
        self.model, self.targeted, self.threat, self.shape, self.generator = model, targeted, threat, shape, generator
        self.propose = _propose_linf if threat.norm == "linf" else _propose_l2
        m = xs.shape[0]
        self.x_best = _start(xs, threat, generator)
        self.best_loss, self.fooled = _query(model, self.x_best, lab, targeted, shape)
        self.queries = torch.ones(m, dtype=torch.int64, device=xs.device)
        self.dropped = torch.zeros(m, dtype=torch.bool, device=xs.device)
        self.trace: list[torch.Tensor] = []
        active = (~self.fooled).nonzero().flatten()
        self.active = active
        self.xa, self.xb, self.la, self.bl = xs[active], self.x_best[active], lab[active], self.best_loss[active]
        self.spent = 0  # iterations since the last write-back: every active example made one query in each
        # the trace is the mean best loss over all n_total examples of the attack, those outside the run and those
        # no longer active contributing their fixed best losses (done_sum)
        self.n_total = n_total
        self.done_sum = outside_sum + self.best_loss.sum() - self.bl.sum()

    def should_focus(self, n_keep: int) -> bool:
        """Focus unless at most ``n_keep`` examples are left or the run already fooled ``n_keep / 2`` or more."""
        return self.active.numel() > n_keep and 2 * int(self.fooled.sum()) < n_keep

    def focus(self, n_keep: int) -> None:
        """Only the ``n_keep`` active examples with the highest loss go on; the others stop at their best point."""
        gone = torch.ones_like(self.la, dtype=torch.bool)
        gone[self.bl.topk(n_keep).indices] = False
        self.dropped[self.active[gone]] = True
        self.write_back_and_drop(gone)

    def step(self, p: float) -> None:
        """Propose a window change of area ``p`` per active example; keep it where the loss rises or the goal is met."""
        x_new = self.propose(self.xa, self.xb, p, self.threat.eps, self.threat.box, self.generator)
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


def _search(
    model: nn.Module,
    xs: torch.Tensor,
    lab: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    shape: tuple[int, ...],
    *,
    n_queries: int,
    p_init: float,
    generator: torch.Generator,
    outside_sum: torch.Tensor,
    n_total: int,
    n_keep: int | None = None,
    focus_after: int = DEFAULT_FOCUS_AFTER,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One run of the random search on the examples ``xs`` (images, none fooled yet), from a fresh start.

    Costs at most ``n_queries - 1`` queries per example (the initial point, then ``n_queries - 2`` iterations:
    the clean point of the schedule's budget is counted by the caller). With ``n_keep``, after the run's first
    ``focus_after`` queries only the ``n_keep`` examples with the highest loss go on, unless the run has already
    fooled ``n_keep / 2`` or more. Returns ``(x_best, best_loss, fooled, queries, dropped, trace)``: ``dropped``
    marks the examples the focus stopped; the trace is the mean best loss over all ``n_total`` examples of the
    attack, the ones outside this run contributing ``outside_sum``.
    """
    run = _Run(model, xs, lab, targeted, threat, shape, generator, outside_sum=outside_sum, n_total=n_total)
    for i in range(max(n_queries - 2, 0)):
        if run.active.numel() == 0:
            break
        if n_keep is not None and i == focus_after - 1 and run.should_focus(n_keep):
            # Focus: the examples with the highest loss so far are the ones Square goes on to fool
            # (bench/square_focus.py); the others stop here, at their best point.
            run.focus(n_keep)
        run.step(p_schedule(i, n_queries, p_init))
    run.write_back_and_drop(torch.zeros_like(run.la, dtype=torch.bool))
    return run.x_best, run.best_loss, run.fooled, run.queries, run.dropped, run.trace


def _core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    max_queries: int,
    p_init: float,
    restarts: int,
    focus: float,
    focus_after: int,
    generator: torch.Generator,
) -> AttackOutput:
    shape = tuple(x.shape)
    xi = _as_image(x)
    n = xi.shape[0]
    best_loss, fooled = _query(model, xi, labels, targeted, shape)  # the clean point: fooled ones stop here
    queries = torch.ones(n, dtype=torch.int64, device=x.device)
    x_best = xi.clone()
    first_trace: list[torch.Tensor] | None = None
    stopped = torch.zeros(n, dtype=torch.bool, device=x.device)  # left behind by the focus of an earlier run
    for r in range(restarts):
        idx = (~fooled & ~stopped).nonzero().flatten()
        if max_queries < 2 or idx.numel() == 0:
            break
        # the focus acts in the first run only; the restarts run on the examples that went on in full
        n_keep = max(math.ceil(focus * idx.numel()), 1) if r == 0 and focus < 1.0 else None
        outside = best_loss.sum() - best_loss[idx].sum()
        xr, lr, fr, qr, dr, trace = _search(
            model,
            xi[idx],
            labels[idx],
            targeted,
            threat,
            shape,
            n_queries=max_queries,
            p_init=p_init,
            generator=generator,
            outside_sum=outside,
            n_total=n,
            n_keep=n_keep,
            focus_after=focus_after,
        )
        stopped[idx[dr]] = True
        queries[idx] += qr
        # The first run's point replaces the clean one (as in the paper); a restart's point is kept where it
        # reaches the goal or beats the best loss so far.
        better = torch.ones_like(fr) if r == 0 else fr | (lr > best_loss[idx])
        sel = idx[better]
        x_best[sel], best_loss[sel], fooled[sel] = xr[better], lr[better], fr[better]
        if first_trace is None:
            first_trace = trace
    loss_trace = torch.stack(first_trace) if first_trace else torch.empty(0)
    return AttackOutput(x_best.reshape(shape), queries=queries, loss_trace=loss_trace)


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
    generator: torch.Generator | int | None = None,
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
    succeeds broadly and every example keeps its budget. ``focus=1`` (the default) is the paper's attack.

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
        focus_after=focus_after, generator=make_generator(generator),
    )  # fmt: skip


Square = square.config
