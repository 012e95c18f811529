"""Poisoning the training set: backdoors, clean-label and availability attacks, and the defenses that find them.

Every attack takes clean data and returns a :class:`~advlab.poisoning.base.PoisonedData` (a poisoned copy with its
manifest); every detection defense scores training rows and reports a :class:`~advlab.poisoning.base.Detection`.
"""

from advlab.poisoning.base import Detection, PoisonedData, Trigger, attack_success_rate, stamp
from advlab.poisoning.biggio import biggio_svm
from advlab.poisoning.clean_label import clean_label
from advlab.poisoning.feature_collision import feature_collision
from advlab.poisoning.gradient_matching import gradient_matching

__all__ = [
    "Detection",
    "PoisonedData",
    "Trigger",
    "attack_success_rate",
    "biggio_svm",
    "clean_label",
    "feature_collision",
    "gradient_matching",
    "stamp",
]
