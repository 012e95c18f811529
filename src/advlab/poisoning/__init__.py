"""Poisoning the training set: backdoors, clean-label and availability attacks, and the defenses that find them.

Every attack takes clean data and returns a :class:`~advlab.poisoning.base.PoisonedData` (a poisoned copy with its
manifest); every detection defense scores training rows and reports a :class:`~advlab.poisoning.base.Detection`.
:func:`~advlab.poisoning.defend.run_defense` runs a defense of :data:`~advlab.poisoning.defend.DEFENSES` end to end
(detect, remove, retrain, measure).
"""

from advlab.poisoning.activations import activation_clustering
from advlab.poisoning.badnets import badnets
from advlab.poisoning.base import Detection, PoisonedData, Trigger, attack_success_rate, stamp
from advlab.poisoning.biggio import biggio_svm
from advlab.poisoning.blend import blend
from advlab.poisoning.clean_label import clean_label
from advlab.poisoning.defend import DEFENSES, DefenseOutcome, run_defense
from advlab.poisoning.experiment import PoisonExperiment
from advlab.poisoning.feature_collision import feature_collision
from advlab.poisoning.features import Penultimate, penultimate_features
from advlab.poisoning.gradient_matching import gradient_matching
from advlab.poisoning.knn import knn_sanitise
from advlab.poisoning.label_flip import adversarial_label_flip, label_flip
from advlab.poisoning.spectral import spectral_signatures
from advlab.poisoning.strip import strip, strip_entropy, strip_threshold
from advlab.poisoning.training import PoisonMetrics, TargetedGoal, Training, measure, retrain_last_layer, train_model

__all__ = [
    "DEFENSES",
    "DefenseOutcome",
    "Detection",
    "Penultimate",
    "PoisonExperiment",
    "PoisonMetrics",
    "PoisonedData",
    "TargetedGoal",
    "Training",
    "Trigger",
    "activation_clustering",
    "adversarial_label_flip",
    "attack_success_rate",
    "badnets",
    "biggio_svm",
    "blend",
    "clean_label",
    "feature_collision",
    "gradient_matching",
    "knn_sanitise",
    "label_flip",
    "measure",
    "penultimate_features",
    "retrain_last_layer",
    "run_defense",
    "spectral_signatures",
    "stamp",
    "strip",
    "strip_entropy",
    "strip_threshold",
    "train_model",
]
