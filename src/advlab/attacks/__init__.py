"""Attacks: one algorithm per module, each a public function plus a registered config class.

Importing this package registers every attack in :data:`ATTACKS`.
"""

from advlab.attacks.base import ATTACKS, AttackConfig, AttackOutput, attack_in_batches, get_attack, list_attacks, run_attack
from advlab.attacks.apgd import APGD, APGDT, apgd, apgd_t
from advlab.attacks.bim import BIM, ILLC, bim, illc
from advlab.attacks.carlini_wagner import CarliniWagnerL2, CarliniWagnerLinf, carlini_wagner_l2, carlini_wagner_linf
from advlab.attacks.deepfool import DeepFool, deepfool
from advlab.attacks.fmn import FMN, fmn
from advlab.attacks.fgsm import FGSM, fgsm
from advlab.attacks.jsma import JSMA, jsma
from advlab.attacks.lbfgs import LBFGS, lbfgs
from advlab.attacks.mifgsm import MIFGSM, mifgsm
from advlab.attacks.pgd import PGD, pgd
from advlab.attacks.rfgsm import RFGSM, rfgsm
from advlab.attacks.square import Square, square
from advlab.attacks.spsa import SPSA, spsa
from advlab.attacks.nes import NES, nes
from advlab.attacks.boundary import Boundary, boundary
from advlab.attacks.hopskipjump import HopSkipJump, hopskipjump

__all__ = [
    "ATTACKS", "AttackConfig", "AttackOutput", "attack_in_batches", "get_attack", "list_attacks", "run_attack",
    "BIM", "ILLC", "bim", "illc", "FGSM", "fgsm", "MIFGSM", "mifgsm", "PGD", "pgd", "RFGSM", "rfgsm",
    "DeepFool", "deepfool",
    "CarliniWagnerL2", "CarliniWagnerLinf", "carlini_wagner_l2", "carlini_wagner_linf",
    "LBFGS", "lbfgs",
    "JSMA", "jsma",
    "APGD", "APGDT", "apgd", "apgd_t",
    "SPSA", "spsa", "NES", "nes", "Boundary", "boundary", "HopSkipJump", "hopskipjump",
    "Square", "square",
    "FMN", "fmn",
]
