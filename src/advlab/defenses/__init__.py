"""Defenses as trainers in the scikit-learn manner: settings in the constructor, ``fit`` returns self.

:data:`DEFENSES` maps the names used by ``advlab train --defense NAME`` to trainer classes; each trainer registers
itself next to its class with :func:`register_defense`, so importing this package registers them all.
"""

from advlab.defenses.base import DEFENSES, Trainer, accuracy, register_defense
from advlab.defenses.denoiser import DenoiserDefense
from advlab.defenses.detector import DetectorTraining
from advlab.defenses.distillation import DefensiveDistillation
from advlab.defenses.dropout import DropoutTraining
from advlab.defenses.ensemble import EnsembleTraining
from advlab.defenses.ensemble_adversarial import EnsembleAdversarialTraining
from advlab.defenses.fast_fgsm import FastFGSMTraining
from advlab.defenses.free import FreeTraining
from advlab.defenses.goodfellow import GoodfellowTraining
from advlab.defenses.noise import GaussianNoiseTraining
from advlab.defenses.pgd_training import PGDTraining
from advlab.defenses.rbf import RBFTraining
from advlab.defenses.regularization import RegularizedTraining
from advlab.defenses.standard import StandardTraining
from advlab.defenses.trades import TRADES
from advlab.defenses.vat import VAT

__all__ = [
    "DEFENSES",
    "TRADES",
    "VAT",
    "DefensiveDistillation",
    "DenoiserDefense",
    "DetectorTraining",
    "DropoutTraining",
    "EnsembleAdversarialTraining",
    "EnsembleTraining",
    "FastFGSMTraining",
    "FreeTraining",
    "GaussianNoiseTraining",
    "GoodfellowTraining",
    "PGDTraining",
    "RBFTraining",
    "RegularizedTraining",
    "StandardTraining",
    "Trainer",
    "accuracy",
    "register_defense",
]
