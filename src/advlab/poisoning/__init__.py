"""Poisoning the training set: backdoors, clean-label and availability attacks, and the defenses that find them.

Every attack takes clean data and returns a :class:`~advlab.poisoning.base.PoisonedData` (a poisoned copy with its
manifest); every detection defense scores training rows and reports a :class:`~advlab.poisoning.base.Detection`.
:func:`~advlab.poisoning.defend.run_defense` runs a defense of :data:`~advlab.poisoning.defend.DEFENSES` end to end
(detect, remove, retrain, measure).
"""

from advlab.poisoning.activations import activation_clustering
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
from advlab.poisoning.defend import DEFENSES, DefenseOutcome, run_defense
from advlab.poisoning.features import penultimate_features
from advlab.poisoning.knn import knn_sanitise
from advlab.poisoning.spectral import spectral_signatures
from advlab.poisoning.strip import strip, strip_entropy, strip_threshold

__all__ = [
    "DEFENSES",
    "DefenseOutcome",
    "Detection",
    "PoisonedData",
    "Trigger",
    "activation_clustering",
    "attack_success_rate",
    "knn_sanitise",
    "penultimate_features",
    "run_defense",
    "spectral_signatures",
    "stamp",
    "strip",
    "strip_entropy",
    "strip_threshold",
]
