"""Procedures over a whole data set: universal adversarial perturbations, fooling images and the rubbish-class rate."""

from advlab.dataset_level.fooling import FoolingImages, RubbishRate, fooling_images, rubbish_class_rate
from advlab.dataset_level.universal import (
    UniversalPerturbation,
    UniversalSettings,
    fooling_rate,
    universal_perturbation,
)

__all__ = [
    "FoolingImages",
    "RubbishRate",
    "UniversalPerturbation",
    "UniversalSettings",
    "fooling_images",
    "fooling_rate",
    "rubbish_class_rate",
    "universal_perturbation",
]
