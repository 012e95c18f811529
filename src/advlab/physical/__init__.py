"""The physical world: print-and-photograph transformations, destruction rates, and expectation over transformation.

Examples:
    >>> from advlab.physical import parse_transform, measure_destruction, with_transformations
    >>> report = measure_destruction(clf, x, y, "print-photo", attacks=["fgsm", "bim", "illc"], eps=[0.1, 0.2],
    ...                              eot_samples=[0, 30])
"""

from advlab.physical.destruction import (
    DEFAULT_ATTACKS,
    DestructionReport,
    DestructionRow,
    destruction_rate,
    measure_destruction,
)
from advlab.physical.eot import ExpectationOverTransformation, eot_attack, with_transformations
from advlab.physical.transforms import (
    PRINT_PHOTO,
    TRANSFORMS,
    Brightness,
    Compose,
    Contrast,
    GaussianBlur,
    GaussianNoise,
    JPEGCompression,
    Perspective,
    Rotation,
    Scaling,
    Transform,
    affine,
    compose_affine,
    gaussian_blur,
    jpeg_dct,
    jpeg_round_trip,
    parse_transform,
    perspective,
    rotate,
    rotation_matrix,
    scale,
    scaling_matrix,
    translation_matrix,
    with_jpeg_method,
)

__all__ = [
    "DEFAULT_ATTACKS",
    "PRINT_PHOTO",
    "TRANSFORMS",
    "Brightness",
    "Compose",
    "Contrast",
    "DestructionReport",
    "DestructionRow",
    "ExpectationOverTransformation",
    "GaussianBlur",
    "GaussianNoise",
    "JPEGCompression",
    "Perspective",
    "Rotation",
    "Scaling",
    "Transform",
    "affine",
    "compose_affine",
    "destruction_rate",
    "eot_attack",
    "gaussian_blur",
    "jpeg_dct",
    "jpeg_round_trip",
    "measure_destruction",
    "parse_transform",
    "perspective",
    "rotate",
    "rotation_matrix",
    "scale",
    "scaling_matrix",
    "translation_matrix",
    "with_jpeg_method",
    "with_transformations",
]
