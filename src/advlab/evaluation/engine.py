"""The robustness evaluation engine: an eps sweep of an attack cascade on still-robust points, resumable.

For each eps in ascending order, each attack of the cascade runs only on the examples no earlier stage has
broken (an adversarial example inside a smaller ball is inside every larger ball, so examples broken at a
smaller eps stay broken). Each example keeps its worst case — the first adversarial example found — and the
attack that found it. Minimum-norm attacks run once, at the largest eps, and their (re-projected, re-checked)
points serve every eps. The state is written atomically after every (eps, attack, batch) stage, so a killed run
started again continues and ends with the same numbers.

Every random draw is keyed by the example: in stage (eps index ``i``, attack label) example ``j`` draws from the
stream :class:`~advlab.rng.ExampleRNG` keys by ``(seed, ("attack", i, label), id_j)``, where ``id_j`` comes from the
example's content (:func:`example_ids`), and the masking checks likewise. An example's outcome is therefore the same
whatever the batch size, the order of the examples or how they are shared out. Square's focus, which ranks the
examples by their loss, decides over all the examples of its stage (:class:`FocusedSquareStage`). The exception
is a model whose output is itself random (dropout at test time, noise layers): its randomness is its own, drawn
from torch's global generator, which the engine seeds per batch, so its outcomes depend on the batches.

:func:`evaluate` validates its arguments once into an :class:`EvaluationSettings` and runs an
:class:`Evaluation`, whose methods are the stages in order: preparation, the clean pass, the attack stages (with
the minimum-norm stage), the gradient-masking checks and the report.

What the evaluation spends is counted in passes of the model (:mod:`advlab.passes`: examples forward, examples whose
gradient went back): a counter attached to the model for the run (or the one the caller attached) is read before
and after each batch of each stage, the clean pass (with the probes before it) and each masking check. The counts
are kept in the state beside the wall times, so a resumed run keeps them (a batch killed before it finished is
counted once, when it is done again), and add up over the ranks of a distributed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import devices, distributed, passes, validation
from advlab.attacks.registry import AttackConfig
from advlab.attacks.square import FocusPoint, Square, focus_selection, square_from_focus, square_to_focus
from advlab.checkpoint import Checkpoint, Saved, config_hash
from advlab.evaluation import checks as checks_mod
from advlab.evaluation import shards
from advlab.evaluation.eot import DEFAULT_EOT_SAMPLES, output_changes, seeded, stage_seed, with_eot
from advlab.evaluation.presets import CascadeEntry, resolve_attacks
from advlab.evaluation.report import (
    CheckResult,
    EpsResult,
    EvaluationPasses,
    EvaluationReport,
    Interval,
    NormStats,
    StageResult,
)
from advlab.evaluation.stats import wilson_interval
from advlab.losses import margin
from advlab.models import Classifier, as_classifier, predict
from advlab.oracles import Oracle, TorchOracle, as_module, find_oracle
from advlab.passes import PassCounter, Passes
from advlab.provenance import provenance
from advlab.result import AttackResult
from advlab.rng import ExampleRNG
from advlab.threat import NORMS, ThreatModel, norm_of

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
"""Name of the checkpoint file inside ``checkpoint_dir`` (tensors + the JSON state in its metadata)."""
BOOL_TENSORS = ("correct", "focus_fooled", "focus_entered")
"""The state's boolean tensors (the checkpoint stores them as uint8), with each focused stage's decision."""
FOCUS_KEEP = "focus_keep_{i}_{k}"
CLOSEST_SLICE = "closest_slice_{i}_{k}"
"""The state's decisions of a :class:`~advlab.evaluation.presets.Closest` stage: per example the share (0, 1, ...)
that took it in, ``-1`` for the examples it leaves."""
MARGIN = "margin_{i}"
"""The state's highest margin ``max_{j != y} z_j - z_y`` per example over the points tried at eps ``i``."""
GO_ON_TENSORS = ("go_on_idx_{i}_{k}", "go_on_x_{i}_{k}", "go_on_queries_{i}_{k}")
"""With several processes, the results of a focused Square stage's kept examples, all ranks' (see
:meth:`FocusedSquareStage.go_on_shared`): kept after the stage, so that a rank resumed after a kill gets them."""
GO_ON_TAG = 1_000_037  # seed-sequence tag of a random model's draws in the shared part of a focused Square stage
"""The state's tensor of the focus decided in stage (eps ``i``, attack ``k``): kept, for ranks resumed after a kill."""
RANDOMNESS_PROBE = 16
"""Examples used to test whether the model's output is random."""
_CLEAN, _CHECKS = 1_000_003, 1_000_033  # seed-sequence tags of a random model's clean pass and checks
ID_MASK = 2**63 - 1
"""Example ids are 63-bit (non-negative int64)."""


# ---------------------------------------------------------------------- the entry point
def evaluate(
    model: nn.Module | Oracle,
    data: Any,
    eps: float | list[float],
    *,
    norm: str = "linf",
    attacks: str | list[str | AttackConfig] = "standard",
    n: int | None = None,
    batch_size: int = 250,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    checks: bool = True,
    eot_samples: int | None = None,
) -> EvaluationReport:
    """Robust accuracy of ``model`` under a cascade of attacks, for one eps or a sweep, with masking checks.

    For each eps (ascending) each attack runs only on the examples still robust; an example counts as robust
    at eps only if every attack failed on it at that eps and at every smaller eps. Each example keeps its worst
    case (the adversarial example found) and the attack that found it. Minimum-norm attacks (FMN, C&W, ...)
    run once at the largest eps; their point, projected onto each smaller ball, is re-checked at every eps.

    Presets: ``"fast"`` (PGD); ``"standard"`` (AutoAttack's ensemble — APGD-CE, APGD-T, a minimum-norm attack,
    Square — with FMN in place of FAB-T, and Square's budget focused on the examples it can still fool, with
    restarts); ``"strong"`` (standard with 5 restarts, Square in full on every example, plus C&W for the norm).

    A model whose output changes between two identical calls is attacked through expectation over
    transformation (logits averaged over ``eot_samples`` draws, with a warning), and its accuracy is measured
    with the randomness on (one draw per prediction, seeded per stage).

    With several processes (a script run by ``torchrun``, or inside an initialised process group), each rank
    attacks every ``world_size``-th example with its own checkpoint (``checkpoint_dir/rank-R-of-S``), the masking
    checks run once (each rank runs a share of them), and every rank returns the whole report, the same as one
    process's (its provenance gives the world size). Every rank must be given the same model, data and settings
    (refused otherwise).

    A model without gradients (an :class:`~advlab.oracles.Oracle`, local or remote) is evaluated with the attacks
    that need none: a cascade holding a gradient attack is refused before any work, with the list of the attacks
    that work on oracles, and the masking checks that need gradients are reported as skipped.

    Args:
        model: a ``torch.nn.Module`` returning logits, an :class:`advlab.Classifier`, or an
            :class:`~advlab.oracles.Oracle` (attacked through its queries, which count against its budget).
        data: an advlab Dataset (``.x`` of shape ``(N, C, H, W)`` in the bounds, ``.y``) or a pair ``(x, y)``.
        eps: one radius or a strictly increasing list of radii, in raw input units.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        attacks: a preset name (``"fast"``, ``"standard"``, ``"strong"``) or a list of attack names
            (``"pgd"``, ``"apgd-ce"``, ``"apgd-t"``, ``"fmn"``, ``"square"``, ...) and/or AttackConfig instances.
        n: evaluate the first ``n`` examples only (default: all).
        batch_size: examples per attack call.
        seed: base seed; in stage ``(eps i, attack)`` each example draws from its own stream, keyed by ``(seed, i,
            the attack's label, the example's content)``, so its outcome does not depend on ``batch_size`` or on
            the examples' order (a random model's own randomness excepted).
        checkpoint_dir: folder for the resumable state; a run started again with the same settings continues.
        overwrite: discard a checkpoint of a different configuration instead of refusing it.
        progress: show a progress bar (default: when stderr is a terminal).
        checks: run the gradient-masking checks (default on).
        eot_samples: draws averaged per forward pass for random models (default 10).

    Returns:
        An :class:`EvaluationReport` (``report.robust_accuracy()``, ``report.to_dict()``; ``report.passes``: the
        forward and backward passes of the model it spent, per stage in ``report.at(eps).stages``).

    Raises:
        ValueError: bad eps/norm/settings, an unknown preset or attack, an attack that does not support the norm,
            a gradient attack on a model without gradients (all before any work), or a checkpoint from another
            configuration.
        TypeError: a model or data of the wrong type.

    References:
        Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
        attacks", arXiv:2003.01690; Carlini et al., "On Evaluating Adversarial Robustness", arXiv:1902.06705;
        Athalye et al., "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420.

    Examples:
        >>> report = advlab.evaluate(model, (x, y), [0.1, 0.2, 0.3], norm="linf", attacks="standard")
        >>> report.robust_accuracy(0.3), report.at(0.3).ci
        >>> print(report.headline())
    """
    settings = EvaluationSettings.from_arguments(
        eps=eps,
        norm=norm,
        attacks=attacks,
        n=n,
        batch_size=batch_size,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        overwrite=overwrite,
        progress=progress,
        checks=checks,
        eot_samples=eot_samples,
    )
    with distributed.process_group():  # a torchrun worker joins its group here, unless it already has
        return Evaluation(model, data, settings).run()


@dataclass(frozen=True)
class EvaluationSettings:
    """The validated settings of one :func:`evaluate` call, built once by :meth:`from_arguments`.

    Attributes:
        norm: the threat model's norm.
        eps: the radii, strictly increasing.
        preset: the preset name, or ``None`` for a custom list of attacks.
        entries: the cascade, in order.
        n: evaluate the first ``n`` examples only (``None``: all).
        batch_size: examples per attack call (and per prediction batch).
        seed: the base seed of every stage's per-example streams.
        checkpoint_dir: the folder of the resumable state, as given (``None``: no checkpoint).
        overwrite: discard a checkpoint of another configuration instead of refusing it.
        progress: show a progress bar.
        checks: run the gradient-masking checks.
        eot_samples: draws averaged per forward pass for random models (``None``: the default).
    """

    norm: str
    eps: tuple[float, ...]
    preset: str | None
    entries: tuple[CascadeEntry, ...]
    n: int | None
    batch_size: int
    seed: int
    checkpoint_dir: str | Path | None
    overwrite: bool
    progress: bool
    checks: bool
    eot_samples: int | None

    @classmethod
    def from_arguments(
        cls,
        *,
        eps: float | list[float],
        norm: str,
        attacks: str | list[str | AttackConfig],
        n: int | None,
        batch_size: int,
        seed: int,
        checkpoint_dir: str | Path | None,
        overwrite: bool,
        progress: bool | None,
        checks: bool,
        eot_samples: int | None,
    ) -> EvaluationSettings:
        """Validate :func:`evaluate`'s arguments (before any work) and resolve the cascade.

        The defaults are :func:`evaluate`'s, written once in its signature.

        Raises:
            ValueError: a bad norm, eps list, batch size, seed, ``n`` or ``eot_samples``; an unknown preset or
                attack, or an attack that does not support the norm.
            TypeError: a setting of the wrong type.
        """
        validation.check_choice("norm", norm, NORMS)
        eps_list = validation.check_eps_list([eps] if not isinstance(eps, (list, tuple)) else list(eps))
        batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        seed = validation.check_int("seed", seed, minimum=0)
        if n is not None:
            n = validation.check_int("n", n, minimum=1)
        if eot_samples is not None:
            eot_samples = validation.check_int("eot_samples", eot_samples, minimum=1)
        preset, entries = resolve_attacks(attacks, norm)
        return cls(
            norm=norm,
            eps=tuple(eps_list),
            preset=preset,
            entries=tuple(entries),
            n=n,
            batch_size=batch_size,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            overwrite=bool(overwrite),
            progress=sys.stderr.isatty() if progress is None else bool(progress),
            checks=bool(checks),
            eot_samples=eot_samples,
        )


# ---------------------------------------------------------------------- inputs and fingerprints
def dataset_classes(data: Any) -> list[str] | None:
    """The class names of an advlab Dataset (its ``.classes``), or ``None`` for a pair or a dataset without."""
    if not (hasattr(data, "x") and hasattr(data, "y")):
        return None
    return list(getattr(data, "classes", None) or []) or None


def _inputs(data: Any, n: int | None, clf: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of ``data`` as CPU tensors, checked against the classifier."""
    x, y = validation.as_xy(data, "data")
    x, y = x.detach().cpu(), y.detach().cpu()
    if n is not None:
        x, y = x[:n], y[:n]
    validation.check_input(x, clf.bounds, name="data x")
    validation.check_input_shape(x, clf.input_shape, name="data x")
    validation.check_labels(y, x.shape[0], clf.num_classes, name="data y")
    return x, y.long()


def example_ids(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A 63-bit id per example from its content: the key of its random streams in :func:`evaluate`.

    The id is a BLAKE2b hash of the example's input bytes (as stored, dtype included) and label, so it does not
    depend on the example's position, the batch it falls into or the process that attacks it. The ``k``-th copy of
    an example that occurs several times gets the hash of (its content, ``k``): ids are unique, and equal examples
    are interchangeable.

    Args:
        x: inputs ``(N, ...)``.
        y: labels ``(N,)``.

    Returns:
        int64 ``(N,)``, non-negative.

    Examples:
        >>> ids = example_ids(x, y)
        >>> rng = ExampleRNG(seed, ("attack", 0, "pgd"), ids[batch])
    """
    rows = x.detach().cpu().contiguous().reshape(x.shape[0], -1).numpy().view(np.uint8)
    labels = y.detach().cpu().to(torch.int64).numpy()
    seen: dict[bytes, int] = {}
    ids = []
    for row, label in zip(rows, labels, strict=True):
        digest = hashlib.blake2b(row.tobytes() + label.tobytes(), digest_size=8).digest()
        copies = seen.get(digest, 0)
        seen[digest] = copies + 1
        if copies:
            digest = hashlib.blake2b(digest + copies.to_bytes(8, "little"), digest_size=8).digest()
        ids.append(int.from_bytes(digest, "little") & ID_MASK)
    return torch.tensor(ids, dtype=torch.int64)


def _sha256_tensors(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(str((tuple(a.shape), str(a.dtype))).encode())
        # 1-D before the byte view: a 0-dim tensor (BatchNorm's num_batches_tracked) has no byte view
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def _model_fingerprint(clf: Classifier) -> str:
    state = clf.module.state_dict()
    h = hashlib.sha256(type(clf.module).__name__.encode())
    mean, std = torch.as_tensor(clf.mean), torch.as_tensor(clf.std)
    h.update(_sha256_tensors(*[state[k] for k in sorted(state)], mean, std).encode())
    module = find_oracle(clf)
    if module is not None:  # an oracle has no weights: its description (and a local model's weights) name it
        h.update(_oracle_identity(module.oracle).encode())
    return h.hexdigest()


def _oracle_identity(oracle: Oracle) -> str:
    text = json.dumps(oracle.describe(), sort_keys=True, default=str)
    if isinstance(oracle, TorchOracle):
        text += _model_fingerprint(oracle.model)
    return text


def _model_name(clf: Classifier) -> str:
    card = clf.card or {}
    for key in ("name", "arch", "architecture"):
        if isinstance(card.get(key), str) and card[key]:
            return card[key]
    module = find_oracle(clf)
    if module is not None:
        return str(module.oracle.describe().get("model") or type(module.oracle).__name__)
    return type(clf.module).__name__


# ---------------------------------------------------------------------- the resumable state
def is_bool_tensor(name: str) -> bool:
    """Whether the state's tensor ``name`` holds booleans (stored as uint8)."""
    return name in BOOL_TENSORS or name.startswith("focus_keep_")


def _new_stage() -> dict[str, Any]:
    return {
        "done": False,
        "batches_done": 0,
        "n_attacked": 0,
        "n_broken": 0,
        "wall_s": 0.0,
        "queries_broken": [],
        "queries_sum": 0.0,
        "queries_count": 0,
        "forward": 0,
        "backward": 0,
    }


class _State:
    """Per-example cascade state (tensors) and per-stage bookkeeping (a JSON-friendly dict), resumable.

    Tensors: ``correct``, ``pred_clean``, ``pred_adv``, ``broken_eps`` / ``broken_attack`` (indices of the
    stage that first broke each example, -1 for none), ``x_adv`` (each example's worst case), and per
    minimum-norm attack ``k`` its points ``minnorm_x_k`` and distances ``minnorm_dist_k``.
    """

    def __init__(self, x: torch.Tensor, entries: tuple[CascadeEntry, ...], saved: Saved | None) -> None:
        n = x.shape[0]
        self.meta: dict[str, Any] = {
            "stages": {},
            "clean_done": False,
            "done": False,
            "checks": None,
            "clean_wall_s": 0.0,
            "checks_wall_s": 0.0,
            "randomized": None,
            "max_change": None,
            "clean_passes": Passes().to_dict(),
            "checks_passes": None,
        }
        self.t: dict[str, torch.Tensor] = {
            "correct": torch.zeros(n, dtype=torch.bool),
            "pred_clean": torch.zeros(n, dtype=torch.int64),
            "pred_adv": torch.zeros(n, dtype=torch.int64),
            "broken_eps": torch.full((n,), -1, dtype=torch.int64),
            "broken_attack": torch.full((n,), -1, dtype=torch.int64),
            "x_adv": x.clone(),
        }
        for k, e in enumerate(entries):
            if type(e.config).minimum_norm:
                self.t[f"minnorm_x_{k}"] = x.clone()
                self.t[f"minnorm_dist_{k}"] = torch.full((n,), float("inf"))
        if saved is not None:  # the checkpoint stores booleans as uint8
            self.t.update({k: (v.bool() if is_bool_tensor(k) else v) for k, v in saved.tensors.items()})
            self.meta = {**self.meta, **saved.state}  # a state saved before passes were counted has none
            for st in self.meta["stages"].values():
                for key, value in _new_stage().items():
                    st.setdefault(key, value)

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> _State:
        """A state made of ``tensors`` and ``meta`` (the ranks' states merged), never saved."""
        state = cls.__new__(cls)
        state.t, state.meta = tensors, meta
        return state

    def save(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(self.t, self.meta)

    def stage(self, i: int, k: int) -> dict[str, Any]:
        """The bookkeeping of stage (eps ``i``, attack ``k``), created on first use."""
        return self.meta["stages"].setdefault(f"{i}:{k}", _new_stage())

    def broken_before(self, i: int, k: int) -> torch.Tensor:
        """Examples broken by a stage before (eps ``i``, attack ``k``) in cascade order."""
        be, ba = self.t["broken_eps"], self.t["broken_attack"]
        return (be >= 0) & ((be < i) | ((be == i) & (ba < k)))

    def margins(self, i: int) -> torch.Tensor:
        """The highest margin of each example over the points tried at eps ``i`` (``-inf`` before any)."""
        name = MARGIN.format(i=i)
        if name not in self.t:
            self.t[name] = torch.full((self.t["correct"].shape[0],), float("-inf"))
        return self.t[name]

    def raise_margins(self, i: int, idx: torch.Tensor, values: torch.Tensor) -> None:
        """Keep the larger of the stored and the new margins ``values`` of examples ``idx`` at eps ``i``."""
        m = self.margins(i)
        m[idx] = torch.maximum(m[idx], values.detach().float().cpu())

    def record(
        self, idx: torch.Tensor, x_cand: torch.Tensor, pred: torch.Tensor, broken: torch.Tensor, i: int, k: int
    ) -> None:
        """Keep the candidates that break examples ``idx[broken]`` as their worst case, found by stage (i, k)."""
        sel = idx[broken]
        self.t["broken_eps"][sel] = i
        self.t["broken_attack"][sel] = k
        self.t["x_adv"][sel] = x_cand[broken].to(self.t["x_adv"].dtype)
        self.t["pred_adv"][sel] = pred[broken]

    def store_minimum_norm(self, k: int, idx: torch.Tensor, res: AttackResult) -> None:
        """Keep minimum-norm attack ``k``'s points and distances (``inf`` where it failed) for examples ``idx``."""
        success, distance = torch.as_tensor(res.success), torch.as_tensor(res.distance)
        dist = res.info.get("min_distance")
        if dist is None:
            dist = torch.where(success, distance, torch.full_like(distance, float("inf")))
        dist = torch.as_tensor(dist, dtype=torch.float32).detach().cpu()
        points = self.t[f"minnorm_x_{k}"]
        points[idx] = torch.as_tensor(res.x_adv).detach().cpu().to(points.dtype)
        self.t[f"minnorm_dist_{k}"][idx] = torch.where(
            success.detach().cpu(), dist, torch.full_like(dist, float("inf"))
        )


def add_passes(stage: dict[str, Any], spent: Passes) -> None:
    """Add the passes ``spent`` (a batch's) to a stage's bookkeeping."""
    stage["forward"] += spent.forward
    stage["backward"] += spent.backward


def _count(stage: dict[str, Any], idx: torch.Tensor, broken: torch.Tensor, queries: Any) -> None:
    """Add one batch's examples, breaks and query counts to a stage's bookkeeping."""
    stage["n_attacked"] += int(idx.numel())
    stage["n_broken"] += int(broken.sum())
    if queries is not None:
        q = torch.as_tensor(queries).detach().cpu().double()
        stage["queries_broken"].extend(q[broken].tolist())
        stage["queries_sum"] += float(q.sum())
        stage["queries_count"] += int(q.numel())


# ---------------------------------------------------------------------- Square's focus over a stage
def focus_over_stage(config: AttackConfig) -> bool:
    """Whether ``config`` is a Square whose focus point is reached (``focus < 1``): its focus spans the stage."""
    if not isinstance(config, Square):
        return False
    s = config.settings()
    return bool(s["focus"] < 1 and s["focus_after"] - 1 < s["max_queries"] - 2)


FOCUS_TENSORS = ("focus_x", "focus_loss", "focus_fooled", "focus_entered", "focus_queries", "focus_positions")
"""The checkpoint's tensors of a focused Square stage in progress (see :class:`FocusedSquareStage`)."""


class FocusedSquareStage:
    """A Square stage whose focus is decided over all its examples: two parts, resumable after every batch.

    Square's focus ranks the examples by their loss after ``focus_after`` queries; decided within each batch, it
    would make an example's outcome depend on its batch. Here every batch runs to the focus point
    (:func:`~advlab.attacks.square.square_to_focus`): the examples fooled by then are recorded, the points of the
    others kept, in the checkpoint too (:data:`FOCUS_TENSORS`: best point, loss, fooled, entered, queries and each
    example's stream position). The focus is then decided once, over the stage
    (:func:`~advlab.attacks.square.focus_selection`, ties going to the smaller example id), and the unfinished
    examples, batch by batch, go on or stop (:func:`~advlab.attacks.square.square_from_focus`), their streams
    resuming where they paused. A killed run resumes after the last batch it finished, in either part, and a batch
    that runs out of memory is halved, in either part. With several processes, :meth:`decide` is where the points
    of every process meet.

    Args:
        evaluation: the evaluation the stage belongs to.
        i: the eps index.
        k: the attack index.
        entry: the Square entry of the cascade.
    """

    def __init__(self, evaluation: Evaluation, i: int, k: int, entry: CascadeEntry) -> None:
        self.ev, self.i, self.k, self.entry = evaluation, i, k, entry
        self.st = evaluation.state.stage(i, k)
        self.examples = evaluation.stage_examples(i, k)
        self.t = evaluation.state.t

    def run(self) -> None:
        """The first part, the decision, the second part (each part skips the batches a resumed run finished).

        With several processes the examples that go on after the focus point (the costly part: several runs each)
        are shared out evenly between the ranks (:meth:`go_on_shared`); the ones that stop stay where they are.
        """
        self.first_part()
        keep = self.decide()
        if self.ev.world.distributed:
            self.second_part(keep, only=~keep)
            self.go_on_shared(keep)
        else:
            self.second_part(keep)
        for name in FOCUS_TENSORS:
            self.t.pop(name, None)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ExampleRNG]:
        """The inputs and labels of examples ``idx`` on the model's device, and their streams."""
        ev = self.ev
        return ev.x[idx].to(ev.device), ev.y[idx].to(ev.device), ev.stage_rng(self.i, self.entry, idx)

    def first_part(self) -> None:
        """Every batch up to the focus point (a batch out of memory is halved), after those a resumed run did."""
        ev, st = self.ev, self.st
        st["n_batches"] = math.ceil(self.examples.numel() / ev.settings.batch_size)
        todo = self.examples[st.get("focus_examples_done", 0) :]
        ev.batches.run(lambda a, b: self.first_batch(todo[a:b]), todo.numel())

    def first_batch(self, idx: torch.Tensor) -> None:
        """Examples ``idx`` to the focus point: record the ones finished, keep the others' points, save."""
        ev, st, i, k = self.ev, self.st, self.i, self.k
        t0, b, p0 = time.perf_counter(), st.get("focus_batches_done", 0), ev.counter.passes()
        g = stage_seed(ev.settings.seed, i, k, b)
        x_b, y_b, rng = self.batch(idx)
        with seeded(g, ev.device, ev.randomized):
            res, point = square_to_focus(self.entry.config, ev.attack_model, x_b, y_b, ev.threats[i], generator=rng)
        finished = torch.ones(idx.numel(), dtype=torch.bool) if point is None else point.fooled.cpu()
        if point is not None:
            self.store(idx, point)
        else:
            self.store_finished(idx)
        x_adv, queries = torch.as_tensor(res.x_adv).detach().cpu(), res.queries
        if bool(finished.any()):
            q = None if queries is None else torch.as_tensor(queries).cpu()[finished]
            ev.record_batch(i, k, idx[finished], x_adv[finished], finished[finished], q, g + 1)
        st["wall_s"] += time.perf_counter() - t0
        add_passes(st, ev.counter.passes() - p0)
        st["focus_batches_done"] = b + 1
        st["focus_examples_done"] = st.get("focus_examples_done", 0) + idx.numel()
        ev.state.save(ev.checkpoint)

    def allocate(self, point: FocusPoint | None) -> None:
        """The checkpoint's tensors of the stage's points, for every example (in the attack's dtypes)."""
        n, t = self.ev.n, self.t
        x_dtype = point.x_best.dtype if point is not None else self.ev.x.dtype
        loss_dtype = point.best_loss.dtype if point is not None else torch.float32
        t["focus_x"] = torch.zeros((n, *self.ev.x.shape[1:]), dtype=x_dtype)
        t["focus_loss"] = torch.zeros(n, dtype=loss_dtype)
        t["focus_fooled"] = torch.zeros(n, dtype=torch.bool)
        t["focus_entered"] = torch.zeros(n, dtype=torch.bool)
        t["focus_queries"] = torch.zeros(n, dtype=torch.int64)
        t["focus_positions"] = torch.zeros(n, dtype=torch.int64)

    def store(self, idx: torch.Tensor, point: FocusPoint) -> None:
        """Keep the points of examples ``idx``."""
        if "focus_x" not in self.t:
            self.allocate(point)
        t = self.t
        t["focus_x"][idx] = point.x_best.detach().cpu().to(t["focus_x"].dtype)
        t["focus_loss"][idx] = point.best_loss.detach().cpu().to(t["focus_loss"].dtype)
        t["focus_fooled"][idx] = point.fooled.cpu()
        t["focus_entered"][idx] = point.entered.cpu()
        t["focus_queries"][idx] = point.queries.cpu()
        if point.positions is not None:
            t["focus_positions"][idx] = point.positions.cpu()

    def store_finished(self, idx: torch.Tensor) -> None:
        """Examples ``idx`` are finished (the attack had nothing to do at this eps)."""
        if "focus_x" not in self.t:
            self.allocate(None)
        self.t["focus_fooled"][idx] = True

    def point(self, idx: torch.Tensor) -> FocusPoint:
        """The stored points of examples ``idx`` (on the model's device)."""
        t, device = self.t, self.ev.device
        return FocusPoint(
            x_best=t["focus_x"][idx].to(device),
            best_loss=t["focus_loss"][idx].to(device),
            fooled=t["focus_fooled"][idx].bool().to(device),
            entered=t["focus_entered"][idx].bool().to(device),
            queries=t["focus_queries"][idx].to(device),
            positions=t["focus_positions"][idx].to(device),
        )

    def decide(self) -> torch.Tensor:
        """The focus over every example of the stage: bool over all examples, True where the first run goes on.

        With several processes, every rank's examples meet here (:func:`~advlab.evaluation.shards.decide_focus`);
        the decision is kept in the state, so that a rank resumed after a kill joins with it.
        """
        name = FOCUS_KEEP.format(i=self.i, k=self.k)
        known = self.t.get(name)
        ev, settings = self.ev, self.entry.config.settings()
        focus, min_fooled = settings["focus"], settings["focus_min_fooled"]
        point = self.point(self.examples).to("cpu") if "focus_x" in self.t and self.examples.numel() else None
        if ev.world.distributed:
            keep = shards.decide_focus(known, self.examples, point, focus, ev.ids, ev.n, min_fooled)
        elif known is not None:
            keep = known
        else:
            keep = torch.zeros(ev.n, dtype=torch.bool)
            if point is not None:
                keep[self.examples] = focus_selection(point, focus, ev.ids[self.examples], min_fooled)
        if known is None:
            self.t[name] = keep
            ev.state.save(ev.checkpoint)
        return keep

    def unfinished(self) -> torch.Tensor:
        """This process's examples of the stage that the first part left unfooled."""
        if "focus_x" not in self.t:
            return self.examples[:0]
        return self.examples[~self.t["focus_fooled"][self.examples].bool()]

    def second_part(self, keep: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """The examples unfinished at the focus point (those in ``only``), batch by batch: those kept go on, the
        others stop."""
        unfinished = self.unfinished()
        if only is not None:
            unfinished = unfinished[only[unfinished]]
        todo = unfinished[self.st.get("examples_done", 0) :]
        self.ev.batches.run(lambda a, b: self.second_batch(todo[a:b], keep), todo.numel())

    def second_batch(self, idx: torch.Tensor, keep: torch.Tensor) -> None:
        """Examples ``idx`` from their focus point: the kept ones go on, the others stop; record them, save."""
        ev, st, i, k = self.ev, self.st, self.i, self.k
        t0, b, p0 = time.perf_counter(), st["batches_done"], ev.counter.passes()
        g = stage_seed(ev.settings.seed, i, k, st["n_batches"] + b)
        x_b, y_b, rng = self.batch(idx)
        with seeded(g, ev.device, ev.randomized):
            res = square_from_focus(
                self.entry.config, ev.attack_model, x_b, y_b, ev.threats[i], self.point(idx),
                keep[idx].to(ev.device), generator=rng,
            )  # fmt: skip
        x_adv = torch.as_tensor(res.x_adv).detach().cpu()
        ev.record_batch(i, k, idx, x_adv, torch.ones(idx.numel(), dtype=torch.bool), res.queries, g + 1)
        st["wall_s"] += time.perf_counter() - t0
        add_passes(st, ev.counter.passes() - p0)
        st["batches_done"] = b + 1
        st["examples_done"] = st.get("examples_done", 0) + idx.numel()
        ev.state.save(ev.checkpoint)

    def go_on_shared(self, keep: torch.Tensor) -> None:
        """Several processes: the examples kept at the focus point, of every rank, shared out evenly and run on.

        Every rank sends the points of its kept examples, or the results of all of them when it stored them before
        a kill (:func:`~advlab.evaluation.shards.share_go_on`); each runs every ``size``-th kept example by index
        (any rank can: an example's stream is keyed by its id and resumes at its stored position); the results meet,
        are stored, and each rank records its own examples. A rank that finished the stage joins with its results.
        """
        ev, st = self.ev, self.st
        names = [name.format(i=self.i, k=self.k) for name in GO_ON_TENSORS]
        known = (self.t[names[0]], self.t[names[1]], self.t[names[2]]) if names[0] in self.t else None
        mine = self.unfinished()
        mine = mine[keep[mine]]
        point = None if known is not None or mine.numel() == 0 else self.point(mine).to("cpu")
        t0, p0 = time.perf_counter(), ev.counter.passes()
        shared = shards.share_go_on(known, mine, point, self.go_on, ev.world)
        if shared is None:  # no rank kept an example: nothing to run or record
            return
        idx, x_adv, queries = shared
        if known is None:
            self.t.update(dict(zip(names, shared, strict=True)))
            ev.state.save(ev.checkpoint)
        if not st.get("go_on_recorded", False):
            rows = torch.isin(idx, mine).nonzero().flatten()
            g = stage_seed(ev.settings.seed, self.i, self.k, GO_ON_TAG)
            ev.record_batch(self.i, self.k, idx[rows], x_adv[rows], torch.ones(rows.numel(), dtype=torch.bool),
                            queries[rows], g + 1)  # fmt: skip
            st["go_on_recorded"] = True
            st["wall_s"] += time.perf_counter() - t0
            add_passes(st, ev.counter.passes() - p0)  # this rank's share of every rank's kept examples
            ev.state.save(ev.checkpoint)

    def go_on(self, idx: torch.Tensor, point: FocusPoint) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples ``idx`` run on from their focus ``point`` (on the CPU), in batches: their points and queries."""
        ev = self.ev

        def one(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            x_b, y_b, rng = self.batch(idx[a:b])
            g = stage_seed(ev.settings.seed, self.i, self.k, GO_ON_TAG, a)
            with seeded(g, ev.device, ev.randomized):
                res = square_from_focus(
                    self.entry.config, ev.attack_model, x_b, y_b, ev.threats[self.i],
                    point.rows(torch.arange(a, b)).to(ev.device), torch.ones(b - a, dtype=torch.bool, device=ev.device),
                    generator=rng,
                )  # fmt: skip
            return torch.as_tensor(res.x_adv).detach().cpu(), torch.as_tensor(res.queries).detach().cpu()

        parts = ev.batches.run(one, idx.numel())
        if not parts:
            return ev.x[:0].clone(), torch.zeros(0, dtype=torch.int64)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ---------------------------------------------------------------------- the evaluation, stage by stage
class Evaluation:
    """One evaluation: its stages are the methods below, called in this order by :meth:`run`.

    1. preparation (the constructor): the model, the inputs checked against it, the configuration that keys
       the checkpoint, and the state (resumed from the checkpoint when it holds this configuration);
    2. :meth:`detect_randomness`: a model whose output is random is attacked through EOT;
    3. :meth:`clean_pass`: the clean predictions;
    4. :meth:`attack_stages`: for each eps, each attack on the examples still robust (:meth:`run_stage`,
       :meth:`attack_batch`, :meth:`attack_points`), each example keeping its first adversarial example; the
       minimum-norm stage: a minimum-norm attack runs once and serves every eps (:meth:`minimum_norm_points`);
    5. :meth:`masking_checks`: the gradient-masking checks;
    6. :meth:`report`: the typed report.

    Every stage that is done is recorded in the checkpoint and skipped when the run is started again.

    Args:
        model: a ``torch.nn.Module`` returning logits, an :class:`advlab.Classifier`, or an
            :class:`~advlab.oracles.Oracle`.
        data: an advlab Dataset or a pair ``(x, y)``.
        settings: the validated settings.
    """

    def __init__(self, model: nn.Module | Oracle, data: Any, settings: EvaluationSettings) -> None:
        self.settings = settings
        self.clf = as_classifier(as_module(model) if isinstance(model, Oracle) else model)
        self.x, self.y = _inputs(data, settings.n, self.clf)
        self.counter = passes.counter_of(self.clf) or PassCounter()
        """Counts the model's passes (the one attached to it, when it has one: the evaluation takes differences)."""
        self.started = self.counter.passes()
        with passes.counting(self.clf, self.counter):
            self.gradients = checks_mod.has_input_gradients(self.clf, self.x)
        if not self.gradients:
            checks_mod.refuse_gradient_attacks(settings.entries, settings.norm)
        oracle = find_oracle(self.clf)
        self.labels_only = oracle is not None and oracle.oracle.mode == "labels"
        if self.labels_only:
            checks_mod.refuse_score_attacks(settings.entries, settings.norm)
        self.classes = dataset_classes(data)
        self.n = self.x.shape[0]
        self.ids = example_ids(self.x, self.y)
        self.device = self.clf.device
        self.config = self._configuration()
        self.world = distributed.world()
        distributed.check_same(self.config, what="evaluation settings (data and model fingerprints included)")
        self.shard = shards.shard_of(self.n, self.world)
        self.checkpoint = Checkpoint(
            self._checkpoint_dir(), self._rank_configuration(), file=STATE_FILE, overwrite=settings.overwrite
        )
        self.state = _State(self.x, settings.entries, self.checkpoint.load())
        self.whole = self.state  # every example's state: this rank's, merged with the others' after the cascade
        self.threats = [ThreatModel(settings.norm, e, self.clf.bounds) for e in settings.eps]
        for e in settings.eps:
            validation.check_eps_in_box(e, settings.norm, self.clf.bounds)
        self.randomized = False
        self.eot: int | None = None
        self.attack_model = self.clf
        self.bar: Any = None
        self.batches = devices.Batches(settings.batch_size)  # halved after an out-of-memory error, for good
        if getattr(self.clf, "precision", "fp32") != "fp32":
            validation.warn(
                f"model: the gradient attacks run in {self.clf.precision} (autocast), which rounds their gradients and "
                "losses: they break fewer examples than in fp32, and the gradient-free attacks (run in fp32, like "
                "every prediction the report counts) find the rest, so the black-box check may fail for that reason. "
                "On PGD-trained MNIST models bf16 'standard' gave fp32's robust accuracy within 0.2 points "
                "(BENCHMARKS.md); publish an fp32 figure."
            )

    def _configuration(self) -> dict[str, Any]:
        """Everything a resumed run must share with the checkpoint: settings, data and model fingerprints."""
        s = self.settings
        return {
            "norm": s.norm,
            "eps": list(s.eps),
            "bounds": list(self.clf.bounds),
            "n": self.n,
            "batch_size": s.batch_size,
            "seed": s.seed,
            "attacks": [e.describe() for e in s.entries],
            "checks": s.checks,
            "eot_samples": s.eot_samples,
            "data_sha256": _sha256_tensors(self.x, self.y),
            "model_sha256": _model_fingerprint(self.clf),
        }

    def _checkpoint_dir(self) -> Path | None:
        """The checkpoint folder of this process: ``checkpoint_dir``, or its ``rank-R-of-S`` subfolder for a rank."""
        folder = self.settings.checkpoint_dir
        if folder is None or not self.world.distributed:
            return None if folder is None else Path(folder)
        return Path(folder) / f"rank-{self.world.rank}-of-{self.world.size}"

    def _rank_configuration(self) -> dict[str, Any]:
        """The configuration a rank's checkpoint must share: the evaluation's, and the rank's place (when several)."""
        if not self.world.distributed:
            return self.config
        return {**self.config, "rank": self.world.rank, "world_size": self.world.size}

    def run(self) -> EvaluationReport:
        """Run every stage not yet done (in attack mode) and return the report."""
        t_start = time.perf_counter()
        with self.clf.attack_mode(), self.progress_bar(), passes.counting(self.clf, self.counter):
            self.detect_randomness()
            self.clean_pass()
            self.attack_stages()
            self.gather_shards()
            self.masking_checks()
            if not self.state.meta["done"]:
                self.state.meta["done"] = True
                self.state.save(self.checkpoint)
        log.debug("evaluation finished in %.1f s", time.perf_counter() - t_start)
        return self.report()

    @contextlib.contextmanager
    def progress_bar(self) -> Iterator[None]:
        """One bar over every attack stage and every gradient-masking check, when progress is on."""
        s = self.settings
        if s.progress and self.world.is_main:
            from tqdm.auto import tqdm

            total = len(s.eps) * len(s.entries) + (checks_mod.CHECK_UNITS if s.checks else 0)
            self.bar = tqdm(total=total, desc="evaluate", unit="stage", leave=False)
        try:
            yield
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def advance(self, **postfix: str) -> None:
        """One stage or check done: move the bar (when there is one) and show where the evaluation is."""
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)

    # ------------------------------------------------------------------ randomness, predictions, clean pass
    def detect_randomness(self) -> None:
        """Probe whether two identical calls differ; a random model is attacked through EOT (with a warning).

        An oracle is asked twice (``2 * RANDOMNESS_PROBE`` queries at most); a random one is not wrapped in EOT,
        whose repeated forward passes on one batch its module answers from its cache.
        """
        meta = self.state.meta
        if meta["randomized"] is None:
            probe = self.x[: min(self.n, RANDOMNESS_PROBE)].to(self.device)
            meta["max_change"] = self._output_changes(probe)
            meta["randomized"] = meta["max_change"] > checks_mod.RANDOM_TOLERANCE
        self.randomized = bool(meta["randomized"])
        if not self.randomized:
            return
        if find_oracle(self.clf) is not None:
            validation.warn(
                f"model: its answers change between two identical queries (up to {meta['max_change']:.3g} in the "
                "log-probabilities): it is random. The query attacks see its noisy answers; accuracies are measured "
                "with the randomness on.",
            )
            return
        self.eot = self.settings.eot_samples or DEFAULT_EOT_SAMPLES
        self.attack_model = with_eot(self.clf, self.eot)
        passes.count_passes(self.attack_model, self.counter)  # every draw counts
        validation.warn(
            f"model: its output changes between two identical calls (up to {meta['max_change']:.3g} in "
            f"the logits): it is random (dropout at test time, noise layers...). Attacking it through "
            f"expectation over transformation with {self.eot} samples per forward pass; accuracies are measured "
            "with the randomness on.",
        )

    def _output_changes(self, probe: torch.Tensor) -> float:
        """Largest difference between the outputs of two identical calls (two fresh queries for an oracle)."""
        module = find_oracle(self.clf)
        if module is None:
            return output_changes(self.clf, probe, stage_seed(self.settings.seed, _CLEAN, 1))
        with torch.no_grad():
            return float((module.answer(probe) - module.answer(probe)).abs().max())

    def judge(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Predicted labels as reported: one draw of the model, seeded by ``seed`` when it is random."""
        return self.judge_logits(x, seed).argmax(1)

    def judge_logits(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The logits behind :meth:`judge`'s labels (one draw of a random model, seeded by ``seed``), on the CPU."""
        with seeded(seed, self.device, self.randomized):
            return predict(self.clf, x, batch_size=self.batches.size, logits=True).cpu()

    def clean_pass(self) -> None:
        """Predict the clean inputs; the correctly classified ones enter the cascade.

        Raises:
            ValueError: the model's output is not finite, or a label is not one of its classes (checked here for
                a model that does not declare its number of classes).
        """
        meta, t = self.state.meta, self.state.t
        if meta["clean_done"]:
            return
        t0 = time.perf_counter()
        x, y, m = self.x[self.shard], self.y[self.shard], self.shard.numel()
        with seeded(stage_seed(self.settings.seed, _CLEAN), self.device, self.randomized):
            logits = predict(self.clf, x, batch_size=self.batches.size, logits=True) if m else None
        if logits is not None:
            validation.check_model_output(logits, m, where="on the data")
            validation.check_labels(y, m, logits.shape[1], name="data y")
            pred = logits.argmax(1).cpu()
            t["pred_clean"][self.shard] = pred
            t["pred_adv"][self.shard] = pred
            t["correct"][self.shard] = pred == y.cpu()
            for i in range(len(self.settings.eps)):
                self.state.raise_margins(i, self.shard, margin(logits.cpu(), y.cpu(), False))
        meta["clean_done"] = True
        meta["clean_wall_s"] = time.perf_counter() - t0
        meta["clean_passes"] = (self.counter.passes() - self.started).to_dict()  # with the probes before it
        self.state.save(self.checkpoint)

    # ------------------------------------------------------------------ the cascade
    def attack_stages(self) -> None:
        """For each eps (ascending), each attack of the cascade in order: one stage each."""
        s = self.settings
        for i in range(len(s.eps)):
            for k, entry in enumerate(s.entries):
                self.run_stage(i, k, entry)

    def run_stage(self, i: int, k: int, entry: CascadeEntry) -> None:
        """Attack ``k`` at eps ``i`` on the examples still robust, batch by batch (resuming after the last done).

        With several processes, a rank resumed after a kill joins the decisions of the stage it had finished (the
        shares of a :class:`~advlab.evaluation.presets.Closest` stage, the focus of a focused Square stage), so that
        the ranks still meet in every stage.
        """
        st = self.state.stage(i, k)
        closest = entry.closest is not None and not self.labels_only
        focused = focus_over_stage(entry.config)
        if st["done"] and self.world.distributed:
            if closest:
                self.closest_shares(i, k, entry, None)
            if focused:
                stage = FocusedSquareStage(self, i, k, entry)
                stage.go_on_shared(stage.decide())
        if not st["done"]:

            def run() -> None:  # built after the shares are decided: a focused Square stage takes its examples then
                if focused:
                    FocusedSquareStage(self, i, k, entry).run()
                else:
                    self.run_batches(i, k, entry, st)

            if closest:
                self.closest_shares(i, k, entry, run)
            else:
                run()
            st["done"] = True
            self.state.save(self.checkpoint)
        self.advance()

    def closest_shares(self, i: int, k: int, entry: CascadeEntry, run: Callable[[], None] | None) -> None:
        """A :class:`~advlab.evaluation.presets.Closest` stage: the closest share, then (with ``extend``) the next
        share of the examples not yet attacked for as long as the last share's success rate reaches ``extend``.

        ``run`` attacks the examples of the shares decided so far that are not done yet. Every decision is made over
        every rank's examples and kept in the state; ``run=None`` (a rank that had finished the stage before a kill)
        only joins the decisions, from its stored results.
        """
        j = 0
        while True:
            taken = self.decide_share(i, k, entry, j)
            if run is not None:
                run()
            if not taken or entry.extend is None or not self.share_pays(i, k, j, entry.extend):
                return
            j += 1

    def shares(self, i: int, k: int) -> torch.Tensor:
        """Per example, the share of Closest stage (i, k) that took it in (``-1``: none yet)."""
        name = CLOSEST_SLICE.format(i=i, k=k)
        if name not in self.state.t:
            self.state.t[name] = torch.full((self.n,), -1, dtype=torch.int64)
        return self.state.t[name]

    def decide_share(self, i: int, k: int, entry: CascadeEntry, j: int) -> bool:
        """Share ``j`` of Closest stage (i, k): the fraction closest to breaking of the still-robust examples not yet
        attacked, over every rank's (:func:`~advlab.evaluation.shards.decide_closest`); whether it took any."""
        shares = self.shares(i, k)
        robust = self.state.t["correct"] & ~self.state.broken_before(i, k)
        known = shares == j if bool((shares == j).any()) else None
        idx = (robust & (shares < 0)).nonzero().flatten()
        assert entry.closest is not None
        keep = shards.decide_closest(known, idx, self.state.margins(i)[idx], entry.closest, self.ids, self.n)
        if known is None and bool(keep.any()):
            shares[keep & (shares < 0)] = j
            self.state.save(self.checkpoint)
        return bool(keep.any())

    def share_pays(self, i: int, k: int, j: int, extend: float) -> bool:
        """Whether share ``j`` of stage (i, k) broke at least the fraction ``extend`` of its examples (every rank's)."""
        mine = (self.shares(i, k) == j) & self.state.t["correct"]  # this rank's examples (the shares span every rank's)
        broken = mine & (self.state.t["broken_eps"] == i) & (self.state.t["broken_attack"] == k)
        counts = shards.sum_over_ranks((int(broken.sum()), int(mine.sum())))
        return counts[1] > 0 and counts[0] >= extend * counts[1]

    def stage_examples(self, i: int, k: int) -> torch.Tensor:
        """Indices of the examples stage (i, k) attacks: those still robust, or the shares of them closest to breaking
        that the stage took in so far (share by share, each in index order; see :meth:`closest_shares`)."""
        robust = self.state.t["correct"] & ~self.state.broken_before(i, k)
        if self.settings.entries[k].closest is None or self.labels_only:
            return robust.nonzero().flatten()
        shares = self.shares(i, k)
        taken = ((shares >= 0) & robust).nonzero().flatten()  # this rank's (the shares span every rank's examples)
        return taken[(shares[taken] * (self.n + 1) + taken).argsort()]

    def run_batches(self, i: int, k: int, entry: CascadeEntry, st: dict[str, Any]) -> None:
        """The examples still robust before stage (i, k) in batches, after the ones a resumed run finished.

        A batch that runs out of CUDA memory is halved and tried again, and so are the batches after it
        (:class:`~advlab.devices.Batches`, kept for the rest of the evaluation); an example's outcome does not
        depend on its batch. Re-checked minimum-norm points (no attack) go in one batch.
        """
        start = self.stage_examples(i, k)
        st["n_batches"] = math.ceil(start.numel() / self.settings.batch_size)
        todo = start[st.get("examples_done", 0) :]
        if type(entry.config).minimum_norm and i > 0:
            if todo.numel():
                self.attack_batch(i, k, entry, todo)  # no attack: re-check the stored points
            return
        self.batches.run(lambda a, b: self.attack_batch(i, k, entry, todo[a:b]), todo.numel())

    def stage_rng(self, i: int, entry: CascadeEntry, idx: torch.Tensor) -> ExampleRNG:
        """The per-example streams of examples ``idx`` in stage (eps ``i``, ``entry``): keyed by the stage's label."""
        return ExampleRNG(self.settings.seed, ("attack", i, entry.label), self.ids[idx], device=self.device)

    def attack_batch(self, i: int, k: int, entry: CascadeEntry, idx: torch.Tensor) -> None:
        """The next batch of stage (i, k): attack (each example from its own stream), verify, keep the breaks, save."""
        st = self.state.stage(i, k)
        t0, p0 = time.perf_counter(), self.counter.passes()
        b = st["batches_done"]
        g = stage_seed(self.settings.seed, i, k, b)  # a random model's own draws (torch's global generator)
        x_b, y_b = self.x[idx].to(self.device), self.y[idx].to(self.device)
        rng = self.stage_rng(i, entry, idx)
        if type(entry.config).minimum_norm:
            x_cand, found, queries = self.minimum_norm_points(i, k, entry, idx, x_b, y_b, rng, g)
        else:
            x_cand, found, queries = self.attack_points(i, entry, x_b, y_b, rng, g)
        self.record_batch(i, k, idx, x_cand, found, queries, g + 1)
        st["wall_s"] += time.perf_counter() - t0
        add_passes(st, self.counter.passes() - p0)
        st["batches_done"] = b + 1
        st["examples_done"] = st.get("examples_done", 0) + idx.numel()
        self.state.save(self.checkpoint)

    def record_batch(
        self, i: int, k: int, idx: torch.Tensor, x_cand: torch.Tensor, found: torch.Tensor, queries: Any, seed: int
    ) -> None:
        """Judge the candidates of examples ``idx`` (a random model seeded by ``seed``), keep the breaks, count them."""
        logits = self.judge_logits(x_cand, seed)
        pred = logits.argmax(1)
        self.state.raise_margins(i, idx[found], margin(logits[found], self.y[idx][found], False))
        broken = found & (pred != self.y[idx])
        self.state.record(idx, x_cand, pred, broken, i, k)
        _count(self.state.stage(i, k), idx, broken, queries)
        if self.bar is not None:
            robust = int(self.state.t["correct"].sum() - (self.state.t["broken_eps"] >= 0).sum())
            self.bar.set_postfix(
                eps=f"{self.settings.eps[i]:g}",
                attack=self.settings.entries[k].label,
                robust=f"{100 * robust / self.n:.1f}%",
            )

    def attack_points(
        self, i: int, entry: CascadeEntry, x_b: torch.Tensor, y_b: torch.Tensor, rng: ExampleRNG, g: int
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(candidates, found, queries)`` of attack ``entry`` at eps ``i``: every returned point is a candidate."""
        with seeded(g, self.device, self.randomized):
            res = entry.config(self.attack_model, x_b, y_b, self.threats[i], generator=rng)
        return torch.as_tensor(res.x_adv).detach().cpu(), torch.ones(x_b.shape[0], dtype=torch.bool), res.queries

    def minimum_norm_points(
        self,
        i: int,
        k: int,
        entry: CascadeEntry,
        idx: torch.Tensor,
        x_b: torch.Tensor,
        y_b: torch.Tensor,
        rng: ExampleRNG,
        g: int,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The minimum-norm stage: ``(candidates, found, queries)`` of minimum-norm attack ``k`` at eps ``i``.

        The attack runs once, at the first eps, with the largest eps as its threat model; its points are stored,
        and at every eps they are projected onto that eps-ball and re-checked (a point found within a smaller
        distance stays adversarial after the projection).
        """
        queries = None
        if i == 0:
            with seeded(g, self.device, self.randomized):
                res = entry.config(self.attack_model, x_b, y_b, self.threats[-1], generator=rng)
            self.state.store_minimum_norm(k, idx, res)
            queries = res.queries
        found = torch.isfinite(self.state.t[f"minnorm_dist_{k}"][idx])
        x_cand = self.threats[i].project(self.state.t[f"minnorm_x_{k}"][idx].to(self.device), x_b).cpu()
        return x_cand, found, queries

    # ------------------------------------------------------------------ several processes
    def gather_shards(self) -> None:
        """With several processes: every rank's results merged into :attr:`whole`, on every rank (no-op in one)."""
        if not self.world.distributed:
            return
        mine = shards.pack(self.state.t, self.state.meta, self.x, self.shard)
        packs = distributed.all_gather_objects(mine, what="gathering the ranks' results")
        tensors = {name: v.clone() for name, v in self.state.t.items()}
        self.whole = _State.of(tensors, shards.merge(packs, tensors, self.state.meta))

    # ------------------------------------------------------------------ gradient-masking checks
    def masking_checks(self) -> None:
        """Run the checks once (stored in the checkpoint); each failed check warns, fresh or resumed."""
        if not self.settings.checks:
            return
        meta = self.state.meta
        stored = meta["checks"], meta["checks_passes"]
        if self.world.distributed:  # rank 0's, when it has them (a rank resumed after a kill may not)
            stored = distributed.broadcast_object(stored, what="the stored gradient-masking checks of rank 0")
        if stored[0] is None:
            t0 = time.perf_counter()
            results, meta["checks_passes"] = self._run_checks()
            meta["checks"] = [dataclasses.asdict(c) for c in results]
            meta["checks_wall_s"] = time.perf_counter() - t0
            self.state.save(self.checkpoint)
        else:  # resumed: the checks were done
            if meta["checks"] is None:
                (meta["checks"], meta["checks_passes"]), meta["checks_wall_s"] = stored, 0.0
                self.state.save(self.checkpoint)
            for _ in range(checks_mod.CHECK_UNITS):
                self.advance()
        for key in ("checks", "checks_wall_s", "checks_passes"):
            self.whole.meta[key] = meta[key]
        if not self.world.is_main:
            return
        for c in meta["checks"]:  # the warning points at the caller; randomness warned when it was detected
            if c["status"] == "fail" and c["name"] != "randomness":
                validation.warn(f"gradient-masking check failed: {c['title']}: {c['detail']}. {c['meaning']}")

    def _run_checks(self) -> tuple[list[CheckResult], dict[str, dict[str, int]]]:
        """Every check, on the first clean-correct examples (skipped when there is none, or without gradients), and
        the passes each check spent (over every rank): ``(results, {check: passes})``.

        With several processes, each rank runs its share of the checks (:func:`~advlab.evaluation.shards.
        check_units`) on the same examples, and every rank gets them all.
        """
        idx = checks_mod.check_examples(self.whole.t["correct"], self.ids)
        randomness = checks_mod.check_randomness(float(self.whole.meta["max_change"]), self.eot)
        if not self.gradients or idx.numel() == 0:
            for _ in range(checks_mod.CHECK_UNITS):
                self.advance()
            why = (
                checks_mod.NO_GRADIENTS if not self.gradients else "no correctly classified example to run the check on"
            )
            return [randomness, *checks_mod.skipped_checks(why)], {}
        context = self._check_context(idx)
        units = shards.check_units(self.world)
        with seeded(context.seed, self.device, self.randomized):  # a random model draws from the seeded RNG
            mine = self._counted_checks(context, units)
        parts = distributed.all_gather_objects(mine, what="gathering the gradient-masking checks")
        every = {unit: done for part in parts for unit, done in part.items()}
        for _ in range(checks_mod.CHECK_UNITS - len(units)):  # the other ranks' checks
            self.advance()
        results = [randomness, *(c for unit in checks_mod.CHECK_ORDER for c in every[unit][0])]
        return results, {unit: every[unit][1] for unit in checks_mod.CHECK_ORDER}

    def _counted_checks(
        self, context: checks_mod.CheckContext, units: tuple[str, ...]
    ) -> dict[str, tuple[list[CheckResult], dict[str, int]]]:
        """The checks ``units``, in report order, each with the passes it spent: ``{check: (results, passes)}``."""
        out = {}
        for unit in checks_mod.CHECK_ORDER:
            if unit in units:
                p0 = self.counter.passes()
                done = checks_mod.run_check_units(context, (unit,), progress=lambda name: self.advance(check=name))
                out[unit] = (done[unit], (self.counter.passes() - p0).to_dict())
        return out

    def _check_context(self, idx: torch.Tensor) -> checks_mod.CheckContext:
        """What the checks need: the check examples, the judge, and the cascade's outcome on them."""
        last = len(self.settings.eps) - 1
        be = self.whole.t["broken_eps"][idx]
        return checks_mod.CheckContext(
            model=self.attack_model,
            judge=lambda x, s: self.judge(x, s).to(self.device),
            x=self.x[idx].to(self.device),
            y=self.y[idx].to(self.device),
            norm=self.settings.norm,
            eps_max=self.settings.eps[last],
            bounds=self.clf.bounds,
            seed=stage_seed(self.settings.seed, _CHECKS),
            rng_seed=self.settings.seed,
            ids=self.ids[idx].to(self.device),
            n_correct=int(self.whole.t["correct"].sum()),
            blackbox_breaks=self._blackbox_breaks(),
            robust_at_max=((be < 0) | (be > last)).to(self.device),
        )

    def _blackbox_breaks(self) -> list[tuple[float, str, int]]:
        """``(eps, attack, examples broken)`` of each gradient-free stage that follows a gradient attack."""
        out = []
        for i, e in enumerate(self.settings.eps):
            seen_whitebox = False
            for k, entry in enumerate(self.settings.entries):
                if type(entry.config).needs_gradients:
                    seen_whitebox = True
                elif seen_whitebox:
                    out.append((e, entry.label, int(self.whole.stage(i, k)["n_broken"])))
        return out

    # ------------------------------------------------------------------ the report
    def report(self) -> EvaluationReport:
        """The typed report of the (finished) evaluation."""
        s, meta = self.settings, self.whole.meta
        n_correct = int(self.whole.t["correct"].sum())
        lo, hi = wilson_interval(n_correct, self.n)
        delta = self.whole.t["x_adv"] - self.x
        norms = {p: norm_of(delta, p) for p in ("linf", "l2")}
        wall = meta["clean_wall_s"] + meta["checks_wall_s"] + sum(st["wall_s"] for st in meta["stages"].values())
        return EvaluationReport(
            model=_model_name(self.clf),
            norm=s.norm,
            eps=list(s.eps),
            bounds=self.clf.bounds,
            n=self.n,
            clean_accuracy=n_correct / self.n,
            clean_ci=Interval(lo, hi),
            results=[self._eps_result(i, norms) for i in range(len(s.eps))],
            checks=[CheckResult(**c) for c in (meta["checks"] or [])],
            attacks=[e.describe() for e in s.entries],
            settings=self._report_settings(),
            seed=s.seed,
            randomized=self.randomized,
            eot_samples=self.eot,
            wall_time_s=float(wall),
            passes=self._passes(),
            clean_wall_time_s=float(meta["clean_wall_s"]),
            checks_wall_time_s=float(meta["checks_wall_s"]),
            provenance=provenance(device=str(self.clf.device), world_size=self.world.size),
            model_card=dict(self.clf.card) or None,
            examples=self._examples(),
            classes=self.classes,
            x=self.x,
            x_adv=self.whole.t["x_adv"].clone(),
        )

    def _passes(self) -> EvaluationPasses:
        """What the evaluation spent: the clean pass (with its probes), the stages, the checks; over every rank."""
        meta = self.whole.meta
        by_check = {name: Passes.of(p) for name, p in (meta["checks_passes"] or {}).items()}
        return EvaluationPasses.of(
            clean=Passes.of(meta["clean_passes"]),
            attacks=sum((Passes.of(st) for st in meta["stages"].values()), Passes()),
            checks_by_name=by_check,
            n=self.n,
        )

    def _eps_result(self, i: int, norms: dict[str, torch.Tensor]) -> EpsResult:
        """Robust accuracy, its interval, the stages, who broke what and the perturbation norms at eps ``i``."""
        correct, be, ba = self.whole.t["correct"], self.whole.t["broken_eps"], self.whole.t["broken_attack"]
        n_correct = int(correct.sum())
        broken = (be >= 0) & (be <= i)
        n_robust = int((correct & ~broken).sum())
        lo, hi = wilson_interval(n_robust, self.n)
        by = {"clean": self.n - n_correct}
        for k, entry in enumerate(self.settings.entries):
            by[entry.label] = int((broken & (ba == k)).sum())
        return EpsResult(
            eps=self.settings.eps[i],
            n=self.n,
            clean_accuracy=n_correct / self.n,
            robust_accuracy=n_robust / self.n,
            n_robust=n_robust,
            ci=Interval(lo, hi),
            stages=[self._stage_result(i, k) for k in range(len(self.settings.entries))],
            broken_by=by,
            perturbation={p: _norm_stats(v[broken]) for p, v in norms.items()},
        )

    def _stage_result(self, i: int, k: int) -> StageResult:
        st = self.whole.stage(i, k)
        after = self.whole.t["correct"] & ~self.whole.broken_before(i, k + 1)
        qb = st["queries_broken"]
        return StageResult(
            attack=self.settings.entries[k].label,
            eps=self.settings.eps[i],
            n_attacked=int(st["n_attacked"]),
            n_broken=int(st["n_broken"]),
            success_rate=(st["n_broken"] / st["n_attacked"]) if st["n_attacked"] else None,
            accuracy_after=int(after.sum()) / self.n,
            wall_time_s=float(st["wall_s"]),
            queries_median=float(np.median(qb)) if qb else None,
            queries_mean=(st["queries_sum"] / st["queries_count"]) if st["queries_count"] else None,
            forward_passes=int(st["forward"]),
            backward_passes=int(st["backward"]),
            forward_per_example=(st["forward"] / st["n_attacked"]) if st["n_attacked"] else None,
            backward_per_example=(st["backward"] / st["n_attacked"]) if st["n_attacked"] else None,
        )

    def _examples(self) -> dict[str, list[Any]]:
        """Per-example outcomes: robust per eps, who broke it and at which eps, labels and predictions."""
        t, eps, labels = self.whole.t, self.settings.eps, [e.label for e in self.settings.entries]
        correct, be, ba = t["correct"].tolist(), t["broken_eps"].tolist(), t["broken_attack"].tolist()
        return {
            "robust": [[correct[j] and not (0 <= be[j] <= i) for i in range(len(eps))] for j in range(self.n)],
            "broken_by": [
                "clean" if not correct[j] else (labels[ba[j]] if be[j] >= 0 else None) for j in range(self.n)
            ],
            "broken_eps": [0.0 if not correct[j] else (eps[be[j]] if be[j] >= 0 else None) for j in range(self.n)],
            "label": self.y.tolist(),
            "pred_clean": t["pred_clean"].tolist(),
            "pred_adv": t["pred_adv"].tolist(),
        }

    def _report_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            "preset": s.preset,
            "n": self.n,
            "batch_size": s.batch_size,
            "checks": s.checks,
            "eot_samples": self.eot,
            "checkpoint_dir": str(s.checkpoint_dir) if s.checkpoint_dir is not None else None,
            "ci": "95% Wilson score interval",
            "config_hash": config_hash(self.config),
            "data_sha256": self.config["data_sha256"],
            "model_sha256": self.config["model_sha256"],
        }


def _norm_stats(values: torch.Tensor) -> NormStats:
    if values.numel() == 0:
        return NormStats(mean=None, median=None, max=None, count=0)
    v = values.double().sort().values  # sorted: the mean does not depend on the examples' order
    return NormStats(mean=float(v.mean()), median=float(v.median()), max=float(v.max()), count=int(v.numel()))
