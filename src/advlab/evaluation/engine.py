"""The robustness evaluation engine: an eps sweep of an attack cascade on still-robust points, resumable.

For each eps in ascending order, each attack of the cascade runs only on the examples no earlier stage has
broken (an adversarial example inside a smaller ball is inside every larger ball, so examples broken at a
smaller eps stay broken). Each example keeps its worst case — the first adversarial example found — and the
attack that found it. Minimum-norm attacks run once, at the largest eps, and their (re-projected, re-checked)
points serve every eps. The state is written atomically after every (eps, attack, batch) stage, and every
stage draws its randomness from a generator seeded by ``(seed, eps index, attack index, batch index)``, so a
killed run started again continues and ends with the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import io, validation
from advlab.attacks.registry import AttackConfig
from advlab.evaluation import checks as checks_mod
from advlab.evaluation.eot import DEFAULT_EOT_SAMPLES, output_changes, seeded, stage_seed, with_eot
from advlab.evaluation.presets import CascadeEntry, resolve_attacks
from advlab.evaluation.report import (
    CheckResult,
    EpsResult,
    EvaluationReport,
    Interval,
    NormStats,
    StageResult,
)
from advlab.evaluation.stats import wilson_interval
from advlab.models import Classifier, as_classifier
from advlab.provenance import provenance
from advlab.threat import NORMS, ThreatModel, norm_of

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
"""Name of the checkpoint file inside ``checkpoint_dir`` (tensors + the JSON state in its metadata)."""
STATE_FORMAT = 1
RANDOMNESS_PROBE = 16
"""Examples used to test whether the model's output is random."""
_CLEAN, _CHECKS = 1_000_003, 1_000_033  # seed-sequence tags of the clean pass and the checks


def as_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """``(x, y, classes)`` from a Dataset (``.x``, ``.y``, ``.classes``) or an ``(x, y)`` pair."""
    classes = None
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
        classes = list(getattr(data, "classes", None) or []) or None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(
            f"data: expected an advlab Dataset (with .x and .y) or a pair (x, y), got {type(data).__name__}. "
            "Example: evaluate(model, advlab.data.load_dataset('mnist', 'test'), 0.3) or evaluate(model, (x, y), 0.3)"
        )
    validation.check_tensor_like("data x", x)
    validation.check_tensor_like("data y", y)
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    y = torch.from_numpy(np.ascontiguousarray(y)) if isinstance(y, np.ndarray) else y
    if torch.is_floating_point(x) and x.dtype == torch.float64:
        x = x.float()
    return x.detach().cpu(), y.detach().cpu(), classes


def _sha256_tensors(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(str((tuple(a.shape), str(a.dtype))).encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def _model_fingerprint(clf: Classifier) -> str:
    state = clf.module.state_dict()
    h = hashlib.sha256(type(clf.module).__name__.encode())
    h.update(_sha256_tensors(*[state[k] for k in sorted(state)], clf.mean, clf.std).encode())
    return h.hexdigest()


def _model_name(clf: Classifier) -> str:
    card = clf.card or {}
    for key in ("name", "arch", "architecture"):
        if isinstance(card.get(key), str) and card[key]:
            return card[key]
    return type(clf.module).__name__


# ---------------------------------------------------------------------- checkpoint
class _State:
    """Per-example cascade state plus per-stage bookkeeping; saved as one atomic safetensors file."""

    def __init__(self, n: int, x: torch.Tensor, config_hash: str, config: dict[str, Any], entries: list[CascadeEntry]):
        self.meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "config_hash": config_hash,
            "config": config,
            "stages": {},
            "clean_done": False,
            "done": False,
            "checks": None,
            "clean_wall_s": 0.0,
            "checks_wall_s": 0.0,
            "randomized": None,
            "max_change": None,
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

    def save(self, directory: Path | None) -> None:
        if directory is None:
            return
        tensors = {k: (v.to(torch.uint8) if v.dtype == torch.bool else v) for k, v in self.t.items()}
        io.save_safetensors(directory / STATE_FILE, tensors, metadata={"state": json.dumps(self.meta)})

    def load(self, directory: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = directory / STATE_FILE
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("state", "{}"))
        tensors = load_file(str(path))
        for k, v in tensors.items():
            self.t[k] = v.bool() if k == "correct" else v
        self.meta = meta

    def stage(self, i: int, k: int) -> dict[str, Any]:
        return self.meta["stages"].setdefault(
            f"{i}:{k}",
            {
                "done": False,
                "batches_done": 0,
                "n_attacked": 0,
                "n_broken": 0,
                "wall_s": 0.0,
                "queries_broken": [],
                "queries_sum": 0.0,
                "queries_count": 0,
            },
        )


def _peek_config_hash(directory: Path) -> tuple[str | None, dict[str, Any] | None]:
    from safetensors import safe_open

    path = directory / STATE_FILE
    if not path.exists():
        return None, None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("state", "{}"))
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(
            f"checkpoint_dir: {path} is not a readable advlab checkpoint ({exc}); delete it or pass overwrite=True"
        ) from exc
    return meta.get("config_hash"), meta.get("config")


# ---------------------------------------------------------------------- the engine
def evaluate(
    model: nn.Module,
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

    Args:
        model: a ``torch.nn.Module`` returning logits, or an :class:`advlab.Classifier`.
        data: an advlab Dataset (``.x`` of shape ``(N, C, H, W)`` in the bounds, ``.y``) or a pair ``(x, y)``.
        eps: one radius or a strictly increasing list of radii, in raw input units.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        attacks: a preset name (``"fast"``, ``"standard"``, ``"strong"``) or a list of attack names
            (``"pgd"``, ``"apgd-ce"``, ``"apgd-t"``, ``"fmn"``, ``"square"``, ...) and/or AttackConfig instances.
        n: evaluate the first ``n`` examples only (default: all).
        batch_size: examples per attack call.
        seed: base seed; stage ``(eps i, attack k, batch b)`` uses a generator seeded from ``(seed, i, k, b)``.
        checkpoint_dir: folder for the resumable state; a run started again with the same settings continues.
        overwrite: discard a checkpoint of a different configuration instead of refusing it.
        progress: show a progress bar (default: when stderr is a terminal).
        checks: run the gradient-masking checks (default on).
        eot_samples: draws averaged per forward pass for random models (default 10).

    Returns:
        An :class:`EvaluationReport` (``report.robust_accuracy()``, ``report.to_dict()``).

    Raises:
        ValueError: bad eps/norm/settings, an unknown preset or attack, an attack that does not support the norm
            (all before any work), or a checkpoint from another configuration.
        TypeError: a model or data of the wrong type.

    References:
        Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
        attacks", arXiv:2003.01690; Carlini et al., "On Evaluating Adversarial Robustness", arXiv:1902.06705;
        Athalye et al., "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420.

    Example:
        >>> report = advlab.evaluate(model, (x, y), [0.1, 0.2, 0.3], norm="linf", attacks="standard")
        >>> report.robust_accuracy(0.3), report.at(0.3).ci
        >>> print(report.headline())
    """
    t_start = time.perf_counter()
    # ------------------------------------------------------------------ validation, before any work
    validation.check_choice("norm", norm, NORMS)
    eps_list = validation.check_eps_list([eps] if not isinstance(eps, (list, tuple)) else list(eps))
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    seed = validation.check_int("seed", seed, minimum=0)
    if n is not None:
        n = validation.check_int("n", n, minimum=1)
    if eot_samples is not None:
        eot_samples = validation.check_int("eot_samples", eot_samples, minimum=1)
    preset, entries = resolve_attacks(attacks, norm)
    clf = as_classifier(model)
    x_all, y_all, classes = as_xy(data)
    if n is not None:
        x_all, y_all = x_all[:n], y_all[:n]
    validation.check_input(x_all, clf.bounds, name="data x")
    validation.check_input_shape(x_all, clf.input_shape, name="data x")
    validation.check_labels(y_all, x_all.shape[0], clf.num_classes, name="data y")
    y_all = y_all.long()
    N = x_all.shape[0]
    device = clf.device
    show = sys.stderr.isatty() if progress is None else bool(progress)

    config = {
        "norm": norm,
        "eps": eps_list,
        "bounds": list(clf.bounds),
        "n": N,
        "batch_size": batch_size,
        "seed": seed,
        "attacks": [e.describe() for e in entries],
        "checks": bool(checks),
        "eot_samples": eot_samples,
        "data_sha256": _sha256_tensors(x_all, y_all),
        "model_sha256": _model_fingerprint(clf),
    }
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    state = _State(N, x_all, config_hash, config, entries)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        old_hash, old_config = _peek_config_hash(ckpt)
        if old_hash is not None and old_hash != config_hash:
            if not overwrite:
                diff = sorted(
                    k for k in set(config) | set(old_config or {}) if (old_config or {}).get(k) != config.get(k)
                )
                raise ValueError(
                    f"checkpoint_dir: {ckpt} holds a checkpoint of a different configuration (differs in: "
                    f"{', '.join(diff) or 'format'}); resume with the same settings, choose another folder, or "
                    "pass overwrite=True (--overwrite) to start over"
                )
            log.info("discarding the checkpoint in %s (different configuration, overwrite=True)", ckpt)
        elif old_hash is not None:
            state.load(ckpt)
            log.info("resuming the evaluation from %s", ckpt)

    threat_of = {i: ThreatModel(norm, e, clf.bounds) for i, e in enumerate(eps_list)}
    E, K = len(eps_list), len(entries)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=E * K, desc="evaluate", unit="stage", disable=not show, leave=False)

    with clf.attack_mode():
        # ------------------------------------------------------------------ randomness and EOT
        if state.meta["randomized"] is None:
            probe = x_all[: min(N, RANDOMNESS_PROBE)].to(device)
            state.meta["max_change"] = output_changes(clf, probe, stage_seed(seed, _CLEAN, 1))
            state.meta["randomized"] = state.meta["max_change"] > checks_mod.RANDOM_TOLERANCE
        randomized = bool(state.meta["randomized"])
        eot = (eot_samples or DEFAULT_EOT_SAMPLES) if randomized else None
        if randomized:
            validation.warn(
                f"model: its output changes between two identical calls (up to {state.meta['max_change']:.3g} in "
                f"the logits): it is random (dropout at test time, noise layers...). Attacking it through "
                f"expectation over transformation with {eot} samples per forward pass; accuracies are measured "
                "with the randomness on.",
            )
        attack_model = with_eot(clf, eot) if randomized else clf

        @torch.no_grad()
        def judge(x: torch.Tensor, s: int) -> torch.Tensor:
            """Predicted labels as reported: one draw of the model, seeded by ``s`` when it is random."""
            with seeded(s, device, randomized):
                preds = [
                    clf(x[j : j + batch_size].to(device)).argmax(1).cpu() for j in range(0, x.shape[0], batch_size)
                ]
            return torch.cat(preds)

        # ------------------------------------------------------------------ clean pass
        if not state.meta["clean_done"]:
            t0 = time.perf_counter()
            pred = judge(x_all, stage_seed(seed, _CLEAN))
            state.t["pred_clean"] = pred
            state.t["pred_adv"] = pred.clone()
            state.t["correct"] = pred == y_all
            state.meta["clean_done"] = True
            state.meta["clean_wall_s"] = time.perf_counter() - t0
            state.save(ckpt)
        correct = state.t["correct"]

        def robust_before(i: int, k: int) -> torch.Tensor:
            be, ba = state.t["broken_eps"], state.t["broken_attack"]
            broken = (be >= 0) & ((be < i) | ((be == i) & (ba < k)))
            return (correct & ~broken).nonzero().flatten()

        def record(
            idx: torch.Tensor, x_cand: torch.Tensor, pred: torch.Tensor, ok: torch.Tensor, i: int, k: int
        ) -> int:
            broken = ok & (pred != y_all[idx])
            sel = idx[broken]
            state.t["broken_eps"][sel] = i
            state.t["broken_attack"][sel] = k
            state.t["x_adv"][sel] = x_cand[broken].to(state.t["x_adv"].dtype)
            state.t["pred_adv"][sel] = pred[broken]
            return int(broken.sum())

        # ------------------------------------------------------------------ the cascade
        for i in range(E):
            for k, entry in enumerate(entries):
                st = state.stage(i, k)
                if st["done"]:
                    if bar is not None:
                        bar.update(1)
                    continue
                start = robust_before(i, k)
                minimum_norm = bool(type(entry.config).minimum_norm)
                batches = list(torch.split(start, batch_size)) if start.numel() else []
                st["n_batches"] = len(batches)
                if minimum_norm and i > 0:
                    batches = [start] if start.numel() else []  # no attack: re-check the stored points
                for b in range(st["batches_done"], len(batches)):
                    idx = batches[b]
                    t0 = time.perf_counter()
                    g = stage_seed(seed, i, k, b)
                    x_b, y_b = x_all[idx].to(device), y_all[idx].to(device)
                    queries = None
                    if minimum_norm:
                        if i == 0:
                            with seeded(g, device, randomized):
                                res = entry.config(attack_model, x_b, y_b, threat_of[E - 1], generator=g)
                            dist = res.info.get("min_distance")
                            if dist is None:
                                dist = torch.where(
                                    res.success, res.distance, torch.full_like(res.distance, float("inf"))
                                )
                            dist = torch.as_tensor(dist, dtype=torch.float32).detach().cpu()
                            state.t[f"minnorm_x_{k}"][idx] = res.x_adv.detach().cpu().to(x_all.dtype)
                            state.t[f"minnorm_dist_{k}"][idx] = torch.where(
                                res.success.detach().cpu(), dist, torch.full_like(dist, float("inf"))
                            )
                            queries = res.queries
                        found = torch.isfinite(state.t[f"minnorm_dist_{k}"][idx])
                        x_cand = threat_of[i].project(state.t[f"minnorm_x_{k}"][idx].to(device), x_b).cpu()
                    else:
                        with seeded(g, device, randomized):
                            res = entry.config(attack_model, x_b, y_b, threat_of[i], generator=g)
                        x_cand = res.x_adv.detach().cpu()
                        found = torch.ones(idx.numel(), dtype=torch.bool)
                        queries = res.queries
                    pred = judge(x_cand, g + 1)
                    nb = record(idx, x_cand, pred, found, i, k)
                    st["n_attacked"] += int(idx.numel())
                    st["n_broken"] += nb
                    if queries is not None:
                        q = torch.as_tensor(queries).detach().cpu().double()
                        broken_now = (pred != y_all[idx]) & found
                        st["queries_broken"].extend(q[broken_now].tolist())
                        st["queries_sum"] += float(q.sum())
                        st["queries_count"] += int(q.numel())
                    st["wall_s"] += time.perf_counter() - t0
                    st["batches_done"] = b + 1
                    state.save(ckpt)
                    if bar is not None:
                        robust = int(correct.sum() - (state.t["broken_eps"] >= 0).sum())
                        bar.set_postfix(eps=f"{eps_list[i]:g}", attack=entry.label, robust=f"{100 * robust / N:.1f}%")
                st["done"] = True
                state.save(ckpt)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()

        # ------------------------------------------------------------------ masking checks
        if checks and state.meta["checks"] is None:
            t0 = time.perf_counter()
            state.meta["checks"] = [
                _plain_check(c)
                for c in _run_checks(
                    attack_model,
                    judge,
                    x_all,
                    y_all,
                    state,
                    entries,
                    eps_list,
                    norm,
                    clf.bounds,
                    seed,
                    eot,
                    device,
                    correct,
                )
            ]
            state.meta["checks_wall_s"] = time.perf_counter() - t0
            state.save(ckpt)
        if checks:  # fresh or resumed, each failed check warns from here: the warning points at the caller
            for c in state.meta["checks"]:
                if c["status"] == "fail" and c["name"] != "randomness":  # randomness warned when it was detected
                    validation.warn(f"gradient-masking check failed: {c['title']}: {c['detail']}. {c['meaning']}")
        if not state.meta["done"]:
            state.meta["done"] = True
            state.save(ckpt)

    log.debug("evaluation finished in %.1f s", time.perf_counter() - t_start)
    return _build_report(
        clf,
        state,
        entries,
        eps_list,
        norm,
        N,
        preset,
        batch_size,
        seed,
        eot,
        classes,
        x_all,
        y_all,
        checks,
        checkpoint_dir,
    )


def _plain_check(c: CheckResult) -> dict[str, Any]:
    return {
        "name": c.name,
        "title": c.title,
        "status": c.status,
        "value": c.value,
        "threshold": c.threshold,
        "detail": c.detail,
        "meaning": c.meaning,
    }


def _run_checks(attack_model, judge, x_all, y_all, state, entries, eps_list, norm, bounds, seed, eot, device, correct):
    """Build the check context from the cascade's state and run every check."""
    idx = correct.nonzero().flatten()[: checks_mod.CHECK_EXAMPLES]
    randomness = checks_mod.check_randomness(float(state.meta["max_change"]), eot)
    if idx.numel() == 0:
        skipped = [
            CheckResult(
                name=nm,
                title=nm,
                status="skipped",
                value=None,
                threshold=None,
                detail="no correctly classified example to run the check on",
                meaning="",
            )
            for nm in ("gradients", "large_eps", "more_steps", "loss_increases", "blackbox")
        ]
        return [randomness, *skipped]
    blackbox = []
    for i, e in enumerate(eps_list):
        seen_whitebox = False
        for k, entry in enumerate(entries):
            cls = type(entry.config)
            if cls.needs_gradients:
                seen_whitebox = True
            elif seen_whitebox:
                blackbox.append((e, entry.label, int(state.stage(i, k)["n_broken"])))
    last = len(eps_list) - 1
    be = state.t["broken_eps"][idx]
    ctx = checks_mod.CheckContext(
        model=attack_model,
        judge=lambda x, s: judge(x, s).to(device),
        x=x_all[idx].to(device),
        y=y_all[idx].to(device),
        norm=norm,
        eps_max=eps_list[last],
        bounds=bounds,
        seed=checks_mod_seed(seed),
        n_correct=int(correct.sum()),
        blackbox_breaks=blackbox,
        robust_at_max=((be < 0) | (be > last)).to(device),
    )
    return checks_mod.run_checks(ctx, randomness)


def checks_mod_seed(seed: int) -> int:
    return stage_seed(seed, _CHECKS)


def _norm_stats(values: torch.Tensor) -> NormStats:
    if values.numel() == 0:
        return NormStats(mean=None, median=None, max=None, count=0)
    v = values.double()
    return NormStats(mean=float(v.mean()), median=float(v.median()), max=float(v.max()), count=int(v.numel()))


def _build_report(
    clf, state, entries, eps_list, norm, N, preset, batch_size, seed, eot, classes, x_all, y_all, checks, checkpoint_dir
) -> EvaluationReport:
    correct = state.t["correct"]
    be, ba = state.t["broken_eps"], state.t["broken_attack"]
    n_correct = int(correct.sum())
    clean_acc = n_correct / N
    delta = state.t["x_adv"] - x_all
    linf, l2 = norm_of(delta, "linf"), norm_of(delta, "l2")
    labels = [e.label for e in entries]
    results = []
    for i, e in enumerate(eps_list):
        stages = []
        for k, entry in enumerate(entries):
            st = state.stage(i, k)
            broken_upto = (be >= 0) & ((be < i) | ((be == i) & (ba <= k)))
            acc_after = int((correct & ~broken_upto).sum()) / N
            qb = st["queries_broken"]
            stages.append(
                StageResult(
                    attack=entry.label,
                    eps=e,
                    n_attacked=int(st["n_attacked"]),
                    n_broken=int(st["n_broken"]),
                    success_rate=(st["n_broken"] / st["n_attacked"]) if st["n_attacked"] else None,
                    accuracy_after=acc_after,
                    wall_time_s=float(st["wall_s"]),
                    queries_median=float(np.median(qb)) if qb else None,
                    queries_mean=(st["queries_sum"] / st["queries_count"]) if st["queries_count"] else None,
                )
            )
        broken = (be >= 0) & (be <= i)
        n_robust = int((correct & ~broken).sum())
        lo, hi = wilson_interval(n_robust, N)
        by = {"clean": N - n_correct}
        for k, lab in enumerate(labels):
            by[lab] = int((broken & (ba == k)).sum())
        results.append(
            EpsResult(
                eps=e,
                n=N,
                clean_accuracy=clean_acc,
                robust_accuracy=n_robust / N,
                n_robust=n_robust,
                ci=Interval(lo, hi),
                stages=stages,
                broken_by=by,
                perturbation={"linf": _norm_stats(linf[broken]), "l2": _norm_stats(l2[broken])},
            )
        )
    robust = [[bool(correct[j]) and not (0 <= int(be[j]) <= i) for i in range(len(eps_list))] for j in range(N)]
    broken_by = [
        "clean" if not bool(correct[j]) else (labels[int(ba[j])] if int(be[j]) >= 0 else None) for j in range(N)
    ]
    broken_eps = [
        0.0 if not bool(correct[j]) else (eps_list[int(be[j])] if int(be[j]) >= 0 else None) for j in range(N)
    ]
    examples = {
        "robust": robust,
        "broken_by": broken_by,
        "broken_eps": broken_eps,
        "label": y_all.tolist(),
        "pred_clean": state.t["pred_clean"].tolist(),
        "pred_adv": state.t["pred_adv"].tolist(),
    }
    lo, hi = wilson_interval(n_correct, N)
    wall = (
        state.meta["clean_wall_s"]
        + state.meta["checks_wall_s"]
        + sum(s["wall_s"] for s in state.meta["stages"].values())
    )
    settings = {
        "preset": preset,
        "n": N,
        "batch_size": batch_size,
        "checks": bool(checks),
        "eot_samples": eot,
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
        "ci": "95% Wilson score interval",
        "config_hash": state.meta["config_hash"],
        "data_sha256": state.meta["config"]["data_sha256"],
        "model_sha256": state.meta["config"]["model_sha256"],
    }
    return EvaluationReport(
        model=_model_name(clf),
        norm=norm,
        eps=list(eps_list),
        bounds=tuple(clf.bounds),
        n=N,
        clean_accuracy=clean_acc,
        clean_ci=Interval(lo, hi),
        results=results,
        checks=[CheckResult(**c) for c in (state.meta["checks"] or [])],
        attacks=[e.describe() for e in entries],
        settings=settings,
        seed=seed,
        randomized=bool(state.meta["randomized"]),
        eot_samples=eot,
        wall_time_s=float(wall),
        provenance=provenance(device=str(clf.device)),
        model_card=dict(clf.card) or None,
        examples=examples,
        classes=classes,
        x=x_all,
        x_adv=state.t["x_adv"].clone(),
    )
