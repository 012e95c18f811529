"""Seeing why models are fooled: cross-sections, linear responses, noise versus adversarial perturbations,
input-gradient amplitudes, and class visualisations, each as numbers plus a figure; ``explain`` writes them all.
"""

from advlab.explain.cross_section import CrossSection, cross_section
from advlab.explain.gradients import GradientAmplitudes, gradient_amplitudes
from advlab.explain.linearity import LogitResponse, logit_response
from advlab.explain.noise import PerturbationComparison, compare_perturbations
from advlab.explain.report import ExplainReport, explain
from advlab.explain.visualize import ClassVisualization, visualize_classes

__all__ = [
    "ClassVisualization",
    "CrossSection",
    "ExplainReport",
    "GradientAmplitudes",
    "LogitResponse",
    "PerturbationComparison",
    "compare_perturbations",
    "cross_section",
    "explain",
    "gradient_amplitudes",
    "logit_response",
    "visualize_classes",
]
