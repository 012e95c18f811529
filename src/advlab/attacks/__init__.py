"""Attacks: one algorithm per module, each a public function registered with its derived config class.

Importing this package registers every attack in :data:`ATTACKS` (and the aliases in :data:`ALIASES`).
"""

from advlab.attacks.apgd import APGD, APGDT, apgd, apgd_t
from advlab.attacks.base import AttackOutput, attack_in_batches, run_attack
from advlab.attacks.bim import BIM, ILLC, bim, illc
from advlab.attacks.binary_pgd import BinaryPGD, binary_pgd
from advlab.attacks.boundary import Boundary, boundary
from advlab.attacks.carlini_wagner import CarliniWagnerL2, CarliniWagnerLinf, carlini_wagner_l2, carlini_wagner_linf
from advlab.attacks.deepfool import DeepFool, deepfool
from advlab.attacks.difgsm import DIFGSM, difgsm
from advlab.attacks.fgsm import FGSM, fgsm
from advlab.attacks.fmn import FMN, fmn
from advlab.attacks.grosse import Grosse, grosse
from advlab.attacks.hopskipjump import HopSkipJump, hopskipjump
from advlab.attacks.jsma import JSMA, jsma
from advlab.attacks.lbfgs import LBFGS, lbfgs
from advlab.attacks.mifgsm import MIFGSM, mifgsm
from advlab.attacks.nes import NES, nes
from advlab.attacks.nifgsm import NIFGSM, SINIFGSM, nifgsm, sinifgsm
from advlab.attacks.pgd import PGD, pgd
from advlab.attacks.registry import (
    ALIASES,
    ATTACKS,
    Alias,
    AttackConfig,
    AttackSpec,
    attack_names,
    get_attack,
    list_attacks,
    make_attack,
    register_attack,
)
from advlab.attacks.rfgsm import RFGSM, rfgsm
from advlab.attacks.sgm import SGM, sgm
from advlab.attacks.spsa import SPSA, spsa
from advlab.attacks.square import Square, square
from advlab.attacks.tifgsm import TIFGSM, tifgsm
from advlab.attacks.vmifgsm import VMIFGSM, VNIFGSM, vmifgsm, vnifgsm

__all__ = [
    "ALIASES",
    "APGD",
    "APGDT",
    "ATTACKS",
    "BIM",
    "DIFGSM",
    "FGSM",
    "FMN",
    "ILLC",
    "JSMA",
    "LBFGS",
    "MIFGSM",
    "NES",
    "NIFGSM",
    "PGD",
    "RFGSM",
    "SGM",
    "SINIFGSM",
    "SPSA",
    "TIFGSM",
    "VMIFGSM",
    "VNIFGSM",
    "Alias",
    "AttackConfig",
    "AttackOutput",
    "AttackSpec",
    "BinaryPGD",
    "Boundary",
    "CarliniWagnerL2",
    "CarliniWagnerLinf",
    "DeepFool",
    "Grosse",
    "HopSkipJump",
    "Square",
    "apgd",
    "apgd_t",
    "attack_in_batches",
    "attack_names",
    "bim",
    "binary_pgd",
    "boundary",
    "carlini_wagner_l2",
    "carlini_wagner_linf",
    "deepfool",
    "difgsm",
    "fgsm",
    "fmn",
    "get_attack",
    "grosse",
    "hopskipjump",
    "illc",
    "jsma",
    "lbfgs",
    "list_attacks",
    "make_attack",
    "mifgsm",
    "nes",
    "nifgsm",
    "pgd",
    "register_attack",
    "rfgsm",
    "run_attack",
    "sgm",
    "sinifgsm",
    "spsa",
    "square",
    "tifgsm",
    "vmifgsm",
    "vnifgsm",
]
