"""advlab: adversarial machine learning — attacks, defenses and honest robustness benchmarks.

Examples:
    >>> import advlab
    >>> threat = advlab.ThreatModel("linf", 0.3)
    >>> result = advlab.attacks.pgd(model, x, y, threat, steps=40)
"""

from advlab import attacks
from advlab._version import __version__
from advlab.evaluation import evaluate
from advlab.goals import LeastLikely, Targeted, Untargeted
from advlab.models import Classifier
from advlab.result import AttackResult
from advlab.threat import ThreatModel

__all__ = [
    "AttackResult",
    "Classifier",
    "LeastLikely",
    "Targeted",
    "ThreatModel",
    "Untargeted",
    "__version__",
    "attacks",
    "evaluate",
]
