"""Defenses as trainers in the scikit-learn manner: settings in the constructor, ``fit`` returns self.

:data:`DEFENSES` maps the names used by ``advlab train --defense NAME`` to trainer classes.
"""

from advlab.defenses.base import Trainer, accuracy
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
from advlab.registry import Registry

DEFENSES: Registry[type[Trainer]] = Registry("defense")
DEFENSES.register("standard")(StandardTraining)
DEFENSES.register("pgd")(PGDTraining)
DEFENSES.register("goodfellow")(GoodfellowTraining)
DEFENSES.register("fast-fgsm")(FastFGSMTraining)
DEFENSES.register("free")(FreeTraining)
DEFENSES.register("trades")(TRADES)
DEFENSES.register("ensemble-adversarial")(EnsembleAdversarialTraining)
DEFENSES.register("vat")(VAT)
DEFENSES.register("distillation")(DefensiveDistillation)
DEFENSES.register("noise")(GaussianNoiseTraining)
DEFENSES.register("denoiser")(DenoiserDefense)
DEFENSES.register("ensemble")(EnsembleTraining)
DEFENSES.register("regularization")(RegularizedTraining)
DEFENSES.register("dropout")(DropoutTraining)
DEFENSES.register("rbf")(RBFTraining)
DEFENSES.register("detector")(DetectorTraining)

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
]
