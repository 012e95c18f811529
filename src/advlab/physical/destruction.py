"""Destruction rate (Kurakin et al. 2016): how many adversarial examples stop being adversarial after a transformation.

:func:`destruction_rate` is the paper's formula on predictions; :func:`measure_destruction` crafts adversarial
examples with FGSM, BIM, ILLC (or any registered attack), optionally through expectation over
transformation, transforms them with a random print-and-photograph pipeline, and reports the rate per attack
and eps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.models import as_classifier
from advlab.physical.transforms import Transform, parse_transform

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("fgsm", "bim", "illc")
"""The three methods Kurakin et al. compare: fast (FGSM), basic iterative, iterative least-likely class."""


def _labels(name: str, v: Any) -> torch.Tensor:
    validation.check_tensor_like(name, v)
    t = torch.as_tensor(v)
    if t.dim() == 2:  # logits
        t = t.argmax(1)
    return t.reshape(-1).long().cpu()


def destruction_rate(y: Any, pred_clean: Any, pred_adv: Any, pred_transformed: Any) -> float:
    """The destruction rate of Kurakin et al. 2016, eq. (1) of section 4.

    ``d = sum_k C(X_k, y_k) (1 - C(X_adv_k, y_k)) C(T(X_adv_k), y_k) / sum_k C(X_k, y_k) (1 - C(X_adv_k, y_k))``
    where ``C(X, y)`` is 1 when ``X`` is classified as ``y`` (top-1). Only images that are correctly classified
    clean and misclassified after the attack count; a counted image is destroyed when the transformed
    adversarial image is classified correctly again.

    Args:
        y: true labels ``(N,)``.
        pred_clean: predictions (labels ``(N,)`` or logits ``(N, C)``) on the clean images.
        pred_adv: predictions on the adversarial images.
        pred_transformed: predictions on the transformed adversarial images.

    Returns:
        The rate in [0, 1], or ``nan`` when no image counts (the denominator is 0).

    References:
        Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", arXiv:1607.02533.

    Example:
        >>> destruction_rate(y, clf(x), clf(x_adv), clf(transform(x_adv, g)))
    """
    yt, pc, pa, pt = (
        _labels(n, v)
        for n, v in (
            ("y", y),
            ("pred_clean", pred_clean),
            ("pred_adv", pred_adv),
            ("pred_transformed", pred_transformed),
        )
    )
    if not (yt.shape == pc.shape == pa.shape == pt.shape):
        raise ValueError(
            f"y/pred_*: expected one prediction per label, got shapes {tuple(yt.shape)}, {tuple(pc.shape)}, "
            f"{tuple(pa.shape)}, {tuple(pt.shape)}"
        )
    counted = (pc == yt) & (pa != yt)
    destroyed = counted & (pt == yt)
    n = int(counted.sum())
    return float(destroyed.sum()) / n if n else math.nan


@dataclass
class DestructionRow:
    """One (attack, eps, EOT) cell of a destruction-rate table. Rates are fractions in [0, 1]."""

    attack: str
    eps: float
    eot_samples: int
    n: int
    clean_accuracy: float
    adversarial_accuracy: float
    transformed_clean_accuracy: float
    transformed_adversarial_accuracy: float
    counted: int
    """Images correctly classified clean and misclassified adversarially (the formula's denominator)."""
    destruction_rate: float
    destruction_rate_per_draw: list[float]
    seconds: float


@dataclass
class DestructionReport:
    """Destruction rates of several attacks and eps under one transformation distribution."""

    transform: str
    norm: str
    draws: int
    seed: int
    rows: list[DestructionRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "norm": self.norm,
            "draws": self.draws,
            "seed": self.seed,
            "definition": (
                "destruction rate (Kurakin et al. 2016, eq. 1): among images classified correctly clean and "
                "misclassified adversarially, the fraction classified correctly after the transformation; "
                "averaged over `draws` random transformations per image"
            ),
            "rows": [asdict(r) for r in self.rows],
        }

    def table(self) -> str:
        """A Markdown table of the rows."""
        lines = [
            "| attack | eps | EOT samples | adv. accuracy | transformed adv. accuracy | counted | destruction rate |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.attack} | {r.eps:g} | {r.eot_samples or '-'} | {r.adversarial_accuracy:.3f} | "
                f"{r.transformed_adversarial_accuracy:.3f} | {r.counted} | {r.destruction_rate:.3f} |"
            )
        return "\n".join(lines)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]).cpu()


def _transform_in_batches(
    transform: Transform, x: torch.Tensor, generator: torch.Generator, batch_size: int
) -> torch.Tensor:
    return torch.cat([transform(x[i : i + batch_size], generator) for i in range(0, x.shape[0], batch_size)])


def measure_destruction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: Transform | str,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    eps: Sequence[float] = (0.1, 0.2),
    norm: str = "linf",
    eot_samples: Sequence[int] = (0,),
    draws: int = 1,
    seed: int = 0,
    batch_size: int = 250,
    attack_options: dict[str, dict[str, Any]] | None = None,
    eot_jpeg: str = "dct",
) -> DestructionReport:
    """Craft adversarial examples, transform them, and report the destruction rate per attack, eps and EOT setting.

    For each attack and eps the examples are crafted against ``model`` itself (``eot_samples`` 0) or against
    its EOT average under the same transformation distribution (``eot_samples`` k > 0, see
    :func:`~advlab.physical.eot.with_transformations`). Every adversarial image then gets ``draws`` independent
    random transformations (seeded, the same draws for every attack), and the destruction rate of
    :func:`destruction_rate` is averaged over the draws. ``"illc"`` targets the class the plain model finds
    least likely on the clean image, with BIM's schedule, for both the plain and the EOT attack.

    Args:
        model: the classifier.
        x: clean images ``(N, C, H, W)`` in the model's bounds.
        y: true labels ``(N,)``.
        transform: the transformation distribution (a :class:`Transform` or a spec string).
        attacks: registered attack names (``"fgsm"``, ``"bim"``, ``"illc"``, ``"pgd"``...).
        eps: perturbation sizes.
        norm: threat-model norm.
        eot_samples: EOT sample counts to compare; 0 means the plain attack.
        draws: random transformations per adversarial image.
        seed: seeds the attacks, the EOT wrappers and the transformations.
        batch_size: examples per attack batch.
        attack_options: optional settings per attack name, e.g. ``{"pgd": {"steps": 100}}``.
        eot_jpeg: JPEG inside the EOT wrapper: ``"dct"`` (differentiable approximation) or ``"pillow"``
            (real, straight-through). The evaluation always uses the real Pillow JPEG.

    Returns:
        A :class:`DestructionReport`.

    Raises:
        ValueError: unknown attacks, eps < 0, bad sample counts or draws.

    References:
        Kurakin et al. 2016, arXiv:1607.02533 (section 4); Athalye et al. 2018, arXiv:1707.07397 (EOT).

    Example:
        >>> report = measure_destruction(clf, x, y, "print-photo", eps=[0.1, 0.2], eot_samples=[0, 30])
        >>> print(report.table())
    """
    from advlab.attacks import attack_in_batches, make_attack
    from advlab.goals import LeastLikely, Targeted
    from advlab.physical.eot import with_transformations
    from advlab.threat import ThreatModel

    clf = as_classifier(model)
    tf = parse_transform(transform, bounds=clf.bounds)
    eps_list = validation.check_eps_list(list(eps))
    samples_list = [validation.check_int(f"eot_samples[{i}]", k, minimum=0) for i, k in enumerate(eot_samples)]
    if not samples_list:
        raise ValueError("eot_samples: expected at least one value (0 = plain attack), got an empty list")
    draws = validation.check_int("draws", draws, minimum=1)
    seed = validation.check_int("seed", seed, minimum=0)
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    options = dict(attack_options or {})
    configs = {name: make_attack(name, norm=norm, **options.get(name, {})) for name in attacks}
    x = torch.as_tensor(x)
    y = torch.as_tensor(y).long()
    validation.check_input(x, clf.bounds)
    validation.check_labels(y, x.shape[0], clf.num_classes)
    x, y = x.to(clf.device), y.to(clf.device)
    was_training = clf.training
    clf.eval()
    try:
        with torch.no_grad():
            clean_logits = torch.cat([clf(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        pred_clean = clean_logits.argmax(1).cpu()
        least_likely = clean_logits.argmin(1)
        # clean-misclassified images whose least-likely class is their label are not counted anyway
        ll_target = torch.where(least_likely == y, (y + 1) % clean_logits.shape[1], least_likely)
        transformed_clean = [
            _predict(
                clf,
                _transform_in_batches(tf, x, torch.Generator().manual_seed(seed * 7919 + 1000 + d), batch_size),
                batch_size,
            )
            for d in range(draws)
        ]
        report = DestructionReport(tf.spec(), norm, draws, seed)
        y_cpu = y.cpu()
        for name, cfg in configs.items():
            goal = None
            if isinstance(cfg.goal, LeastLikely):  # ILLC: the plain model's least-likely class, also through EOT
                cfg, goal = dataclasses.replace(cfg, goal=None), Targeted(ll_target)
            for e in eps_list:
                threat = ThreatModel(norm, e, clf.bounds)
                for k in samples_list:
                    t0 = time.perf_counter()
                    target_model = clf if k == 0 else with_transformations(clf, tf, k, seed=seed + 17, jpeg=eot_jpeg)
                    result = attack_in_batches(
                        cfg, target_model, x, y, threat, goal=goal, batch_size=batch_size, seed=seed
                    )
                    x_adv = torch.as_tensor(result.x_adv).to(x.device)
                    pred_adv = _predict(clf, x_adv, batch_size)
                    rates, accs = [], []
                    for d in range(draws):
                        g = torch.Generator().manual_seed(seed * 7919 + d)
                        pred_t = _predict(clf, _transform_in_batches(tf, x_adv, g, batch_size), batch_size)
                        rates.append(destruction_rate(y_cpu, pred_clean, pred_adv, pred_t))
                        accs.append(float((pred_t == y_cpu).float().mean()))
                    counted = int(((pred_clean == y_cpu) & (pred_adv != y_cpu)).sum())
                    row = DestructionRow(
                        attack=name,
                        eps=e,
                        eot_samples=k,
                        n=len(y_cpu),
                        clean_accuracy=float((pred_clean == y_cpu).float().mean()),
                        adversarial_accuracy=float((pred_adv == y_cpu).float().mean()),
                        transformed_clean_accuracy=sum(float((p == y_cpu).float().mean()) for p in transformed_clean)
                        / draws,
                        transformed_adversarial_accuracy=sum(accs) / draws,
                        counted=counted,
                        destruction_rate=sum(rates) / draws if counted else math.nan,
                        destruction_rate_per_draw=rates,
                        seconds=time.perf_counter() - t0,
                    )
                    report.rows.append(row)
                    log.info(
                        "%s eps=%g eot=%d: adversarial accuracy %.3f, destruction rate %.3f (%d counted, %.1fs)",
                        name,
                        e,
                        k,
                        row.adversarial_accuracy,
                        row.destruction_rate,
                        counted,
                        row.seconds,
                    )
    finally:
        clf.train(was_training)
    return report
