"""Defenses as trainers in the scikit-learn manner: settings in the constructor, ``fit`` returns self.

:data:`DEFENSES` maps the names used by ``advlab train --defense NAME`` to trainer classes.
"""

from advlab.defenses.base import Trainer, accuracy
from advlab.defenses.standard import StandardTraining
from advlab.registry import Registry

DEFENSES: Registry[type[Trainer]] = Registry("defense")
DEFENSES.register("standard")(StandardTraining)

__all__ = ["DEFENSES", "StandardTraining", "Trainer", "accuracy"]
