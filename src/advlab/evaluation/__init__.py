"""Robustness evaluation: the attack cascade over an eps sweep, masking checks, and the typed report.

Examples:
    >>> report = advlab.evaluate(model, (x, y), [0.1, 0.2, 0.3], norm="linf", attacks="standard")
    >>> print(report.headline())
"""

from advlab.evaluation.engine import Evaluation, EvaluationSettings, evaluate
from advlab.evaluation.eot import EOT, with_eot
from advlab.evaluation.presets import ALIASES, PRESETS, Closest, resolve_attacks
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

__all__ = [
    "ALIASES",
    "EOT",
    "PRESETS",
    "CheckResult",
    "Closest",
    "EpsResult",
    "Evaluation",
    "EvaluationPasses",
    "EvaluationReport",
    "EvaluationSettings",
    "Interval",
    "NormStats",
    "StageResult",
    "evaluate",
    "resolve_attacks",
    "wilson_interval",
    "with_eot",
]
