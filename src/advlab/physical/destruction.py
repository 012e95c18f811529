"""Destruction rate (Kurakin et al. 2016): how many adversarial examples stop being adversarial after a transformation.

:func:`destruction_rate` is the paper's formula on predictions; :func:`measure_destruction` crafts adversarial
examples with FGSM, BIM, ILLC (or any registered attack), optionally through expectation over
transformation, transforms them with a random print-and-photograph pipeline, and reports the rate per attack
and eps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.attacks import AttackConfig, attack_in_batches, make_attack
from advlab.goals import Goal, LeastLikely, Targeted
from advlab.models import Classifier, as_classifier, predict
from advlab.physical.eot import with_transformations
from advlab.physical.transforms import Transform, parse_transform
from advlab.threat import ThreatModel

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

    Examples:
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


def _transform_in_batches(
    transform: Transform, x: torch.Tensor, generator: torch.Generator, batch_size: int
) -> torch.Tensor:
    return torch.cat([transform(x[i : i + batch_size], generator) for i in range(0, x.shape[0], batch_size)])


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean())


CLEAN_DRAW_OFFSET = 1000
"""The clean images' transformation draws are seeded apart from the adversarial images' (``seed * 7919 + 1000 + d``)."""


@dataclass(frozen=True)
class DestructionSettings:
    """The checked settings of :func:`measure_destruction` (see there); built with :meth:`check`."""

    transform: Transform
    attacks: dict[str, AttackConfig]
    eps: list[float]
    norm: str
    eot_samples: list[int]
    draws: int
    seed: int
    batch_size: int
    eot_jpeg: str

    @classmethod
    def check(
        cls,
        clf: Classifier,
        transform: Transform | str,
        *,
        attacks: Sequence[str],
        eps: Sequence[float],
        norm: str,
        eot_samples: Sequence[int],
        draws: int,
        seed: int,
        batch_size: int,
        attack_options: dict[str, dict[str, Any]] | None,
        eot_jpeg: str,
    ) -> DestructionSettings:
        """Validate every setting (errors name the argument) and resolve the attack names."""
        tf = parse_transform(transform, bounds=clf.bounds)
        eps_list = validation.check_eps_list(list(eps))
        samples = [validation.check_int(f"eot_samples[{i}]", k, minimum=0) for i, k in enumerate(eot_samples)]
        if not samples:
            raise ValueError("eot_samples: expected at least one value (0 = plain attack), got an empty list")
        draws = validation.check_int("draws", draws, minimum=1)
        seed = validation.check_int("seed", seed, minimum=0)
        batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        options = dict(attack_options or {})
        configs = {name: make_attack(name, norm=norm, **options.get(name, {})) for name in attacks}
        return cls(tf, configs, eps_list, norm, samples, draws, seed, batch_size, eot_jpeg)


class _Destruction:
    """The steps of :func:`measure_destruction`: clean predictions once, then one row per (attack, eps, EOT)."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, settings: DestructionSettings) -> None:
        self.clf, self.x, self.y, self.s = clf, x, y, settings
        self.y_cpu = y.cpu()

    def run(self) -> DestructionReport:
        s = self.s
        self.predict_clean()
        report = DestructionReport(s.transform.spec(), s.norm, s.draws, s.seed)
        for name, cfg in s.attacks.items():
            cfg, goal = self.goal_of(cfg)
            for e in s.eps:
                threat = ThreatModel(s.norm, e, self.clf.bounds)
                report.rows.extend(self.row(name, cfg, goal, threat, k) for k in s.eot_samples)
        return report

    def predict_clean(self) -> None:
        """Clean predictions, the least-likely targets, and the accuracy on transformed clean images."""
        s = self.s
        clean_logits = predict(self.clf, self.x, batch_size=s.batch_size, logits=True)
        self.pred_clean = clean_logits.argmax(1).cpu()
        least_likely = clean_logits.argmin(1)
        # clean-misclassified images whose least-likely class is their label are not counted anyway
        y = self.y
        self.ll_target = torch.where(least_likely == y, (y + 1) % clean_logits.shape[1], least_likely)
        transformed_clean = [
            self.predict_transformed(self.x, s.seed * 7919 + CLEAN_DRAW_OFFSET + d) for d in range(s.draws)
        ]
        self.transformed_clean_accuracy = sum(_accuracy(p, self.y_cpu) for p in transformed_clean) / s.draws

    def predict_transformed(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return predict(
            self.clf, _transform_in_batches(self.s.transform, x, g, self.s.batch_size), batch_size=self.s.batch_size
        ).cpu()

    def goal_of(self, cfg: AttackConfig) -> tuple[AttackConfig, Goal | None]:
        """A least-likely goal (ILLC) becomes the plain model's least-likely class, also through EOT."""
        if isinstance(cfg.goal, LeastLikely):
            return cfg.replace(goal=None), Targeted(self.ll_target)
        return cfg, None

    def craft(self, cfg: AttackConfig, goal: Goal | None, threat: ThreatModel, samples: int) -> torch.Tensor:
        """Adversarial examples against the model itself (``samples`` 0) or its EOT average."""
        s = self.s
        target = self.clf
        if samples:
            target = with_transformations(self.clf, s.transform, samples, seed=s.seed + 17, jpeg=s.eot_jpeg)
        result = attack_in_batches(cfg, target, self.x, self.y, threat, goal=goal, batch_size=s.batch_size, seed=s.seed)
        return torch.as_tensor(result.x_adv).to(self.x.device)

    def row(self, name: str, cfg: AttackConfig, goal: Goal | None, threat: ThreatModel, samples: int) -> DestructionRow:
        """Craft, transform ``draws`` times, and measure one cell of the table."""
        s, y = self.s, self.y_cpu
        t0 = time.perf_counter()
        x_adv = self.craft(cfg, goal, threat, samples)
        pred_adv = predict(self.clf, x_adv, batch_size=s.batch_size).cpu()
        rates, accs = [], []
        for d in range(s.draws):
            pred_t = self.predict_transformed(x_adv, s.seed * 7919 + d)
            rates.append(destruction_rate(y, self.pred_clean, pred_adv, pred_t))
            accs.append(_accuracy(pred_t, y))
        counted = int(((self.pred_clean == y) & (pred_adv != y)).sum())
        row = DestructionRow(
            attack=name,
            eps=threat.eps,
            eot_samples=samples,
            n=len(y),
            clean_accuracy=_accuracy(self.pred_clean, y),
            adversarial_accuracy=_accuracy(pred_adv, y),
            transformed_clean_accuracy=self.transformed_clean_accuracy,
            transformed_adversarial_accuracy=sum(accs) / s.draws,
            counted=counted,
            destruction_rate=sum(rates) / s.draws if counted else math.nan,
            destruction_rate_per_draw=rates,
            seconds=time.perf_counter() - t0,
        )
        log.info(
            "%s eps=%g eot=%d: adversarial accuracy %.3f, destruction rate %.3f (%d counted, %.1fs)",
            name,
            threat.eps,
            samples,
            row.adversarial_accuracy,
            row.destruction_rate,
            counted,
            row.seconds,
        )
        return row


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

    Examples:
        >>> report = measure_destruction(clf, x, y, "print-photo", eps=[0.1, 0.2], eot_samples=[0, 30])
        >>> print(report.table())
    """
    clf = as_classifier(model)
    settings = DestructionSettings.check(
        clf,
        transform,
        attacks=attacks,
        eps=eps,
        norm=norm,
        eot_samples=eot_samples,
        draws=draws,
        seed=seed,
        batch_size=batch_size,
        attack_options=attack_options,
        eot_jpeg=eot_jpeg,
    )
    x = torch.as_tensor(x)
    y = torch.as_tensor(y).long()
    validation.check_input(x, clf.bounds)
    validation.check_labels(y, x.shape[0], clf.num_classes)
    was_training = clf.training
    clf.eval()
    try:
        return _Destruction(clf, x.to(clf.device), y.to(clf.device), settings).run()
    finally:
        clf.train(was_training)
