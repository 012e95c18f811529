"""``explain``: run every analysis on one model (and optionally a second to compare) and write figures + HTML."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io, validation
from advlab.explain import figures
from advlab.explain._common import is_image
from advlab.explain.cross_section import CrossSection, cross_section
from advlab.explain.gradients import GradientAmplitudes, gradient_amplitudes
from advlab.explain.linearity import LogitResponse, logit_response
from advlab.explain.noise import PerturbationComparison, compare_perturbations
from advlab.explain.visualize import ClassVisualization, visualize_classes
from advlab.models import Classifier, as_classifier, predict
from advlab.provenance import provenance
from advlab.reports.html import environment
from advlab.validation import as_xy

log = logging.getLogger(__name__)

FIGURES = {
    "cross_sections": "Class regions around one test input: in the plane of the adversarial (FGSM) direction and a "
    "random orthogonal direction, beside a plane of two random directions (Warde-Farley & "
    "Goodfellow 2016). Along the adversarial direction the class changes within a short distance; "
    "random directions rarely cross a boundary.",
    "linearity": "Logits and probabilities as the input moves along sign(gradient) (Goodfellow et al. 2014, fig. 4): "
    "the nearly straight lines are why many small per-pixel changes add up to a large change in output.",
    "perturbations": "Accuracy under PGD and under random changes of the same size: adversarial examples are not noise.",
    "gradients": "Distribution of input-gradient amplitudes. Vanishing gradients (e.g. defensive distillation) stop "
    "gradient attacks on the softmax without making a model robust.",
    "visualization": "The input each model finds most typical of each class (targeted PGD in a large L2 ball around the "
    "mean image). A standard model yields adversarial noise; a robust model draws recognisable classes.",
}


@dataclass
class ExplainReport:
    """Numbers (JSON-friendly), figures (PNG bytes by name) and notes from :func:`explain`."""

    numbers: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write(self, out: str | Path, title: str = "advlab explain") -> Path:
        """Write ``explain.json``, one PNG per figure (``KIND`` or ``KIND__MODEL``) and the self-contained ``explain.html``; return the HTML path."""
        out = Path(out)
        for name, png in self.figures.items():
            io.write_bytes(out / f"{name}.png", png)
        io.write_json(out / "explain.json", {**self.numbers, "notes": self.notes, "figures": sorted(self.figures)})
        sections = []
        for name, png in self.figures.items():
            kind, _, model = name.partition("__")
            sections.append(
                {
                    "name": name,
                    "title": kind.replace("_", " ").capitalize() + (f" — {model}" if model else ""),
                    "caption": FIGURES[kind],
                    "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                }
            )
        html = (
            environment()
            .get_template("explain.html.j2")
            .render(title=title, r=self.numbers, sections=sections, notes=self.notes)
        )
        return io.write_text(out / "explain.html", html)


def explain(
    model: nn.Module,
    data: Any,
    *,
    compare: nn.Module | None = None,
    labels: tuple[str, str] = ("model", "compare"),
    n: int = 200,
    eps: float = 0.3,
    start: torch.Tensor | None = None,
    seed: int = 0,
) -> ExplainReport:
    """Run the analyses of :mod:`advlab.explain` on ``model`` (and ``compare``) with the first ``n`` examples.

    Image-only figures (class visualisations) are skipped with a note when the input is not an image;
    everything else runs for any input shape.

    The models are analysed in eval mode (with a warning for a model left in train mode) and left as they were.

    Args:
        model: the classifier to explain (an :class:`advlab.Classifier` or a plain module returning logits).
        data: a Dataset (``.x``, ``.y``, ``.classes``) or a pair ``(x, y)``.
        compare: an optional second classifier (e.g. the robust or distilled version) shown beside it.
        labels: names of the two models in figures.
        n: examples used for the statistics.
        eps: L∞ radius for the perturbation comparison and the linear-response range.
        start: starting image for the class visualisation (default: the mean of the examples).
        seed: seeds random directions, noise and attacks.

    Returns:
        ExplainReport; call ``.write(out)`` for files.

    Examples:
        >>> explain(standard, test, compare=robust, labels=("standard", "robust")).write("runs/explain")
    """
    n = validation.check_int("n", n, minimum=1)
    eps = validation.check_float("eps", eps, minimum=0.0, strict_min=True)
    x, y = as_xy(data, "data")
    classes = list(getattr(data, "classes", None) or []) or None  # a Dataset names its classes
    clf = as_classifier(model)
    models = {labels[0]: clf} if compare is None else {labels[0]: clf, labels[1]: as_classifier(compare)}
    x, y = x[:n].to(clf.device), y[:n].to(clf.device)
    with contextlib.ExitStack() as modes:
        for m in models.values():
            modes.enter_context(m.attack_mode())
        logits = {k: predict(m, x, logits=True) for k, m in models.items()}
        return _explain(models, x, y, classes, logits, eps=eps, start=start, seed=seed)


def _explain(
    models: dict[str, Classifier],
    x: torch.Tensor,
    y: torch.Tensor,
    classes: list[str] | None,
    logits: dict[str, torch.Tensor],
    *,
    eps: float,
    start: torch.Tensor | None,
    seed: int,
) -> ExplainReport:
    """:func:`explain` on models in attack mode, given their logits on ``x``."""
    model = next(iter(models.values()))
    num_classes = int(model.num_classes or next(iter(logits.values())).shape[1])
    run = _Explanation(x, y, classes or [str(i) for i in range(num_classes)], num_classes, eps=eps, seed=seed)
    t0 = time.perf_counter()
    report = ExplainReport(numbers={"n": int(x.shape[0]), "eps": eps, "seed": seed, "models": {}})
    preds = {k: v.argmax(1) for k, v in logits.items()}
    # The first example that every model classifies correctly anchors the per-example figures.
    ok = torch.stack([p == y for p in preds.values()]).all(0).nonzero().flatten()
    i0 = int(ok[0]) if ok.numel() else 0
    shape = tuple(model.input_shape) if model.input_shape else tuple(x.shape[1:])
    start_image = (x.mean(0, keepdim=True) if start is None else start.to(x.device)) if is_image(shape) else None
    for label, m in models.items():
        suffix = "" if len(models) == 1 else f"__{label}"
        accuracy = float((preds[label] == y).double().mean())
        entry = run.analyse(label, m, i0, start_image, report.figures, suffix)
        report.numbers["models"][label] = {"clean_accuracy": accuracy, **entry}
    run.comparison_figures(report, shape, single=len(models) == 1)
    report.numbers["wall_seconds"] = time.perf_counter() - t0
    report.numbers["provenance"] = provenance(seed=seed)
    return report


class _Explanation:
    """The analyses of :func:`explain` per model, and the figures that compare the models."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, classes: list[str], num_classes: int, *, eps: float, seed: int
    ) -> None:
        self.x, self.y, self.classes, self.num_classes, self.eps, self.seed = x, y, classes, num_classes, eps, seed
        self.comparisons: dict[str, PerturbationComparison] = {}
        self.amplitudes: dict[str, GradientAmplitudes] = {}
        self.vizs: dict[str, ClassVisualization] = {}

    def analyse(
        self,
        label: str,
        m: Classifier,
        i0: int,
        start: torch.Tensor | None,
        figs: dict[str, bytes],
        suffix: str,
    ) -> dict[str, Any]:
        """Cross-sections, linear response, perturbations, gradients (and the class visualisation for images)."""
        x, y = self.x, self.y
        gen = torch.Generator().manual_seed(self.seed)
        sections: list[CrossSection] = [
            cross_section(m, x[i0 : i0 + 1], int(y[i0]), kind=k, generator=gen) for k in ("adversarial", "random")
        ]
        k = min(32, len(x))
        resp: LogitResponse = logit_response(m, x[:k].roll(-i0, 0), y[:k].roll(-i0, 0), eps_max=self.eps * 2)
        self.comparisons[label] = compare_perturbations(m, x, y, eps=self.eps, seed=self.seed)
        self.amplitudes[label] = gradient_amplitudes(m, x, y)
        entry: dict[str, Any] = {
            "cross_sections": [s.to_dict() for s in sections],
            "linearity": resp.to_dict(),
            "perturbations": self.comparisons[label].to_dict(),
            "gradients": self.amplitudes[label].to_dict(),
        }
        figs[f"cross_sections{suffix}"] = figures.cross_sections_figure(sections, self.classes)
        figs[f"linearity{suffix}"] = figures.logit_response_figure(resp, self.classes)
        if start is not None:
            self.vizs[label] = visualize_classes(m, start, self.num_classes)
            entry["visualization"] = self.vizs[label].to_dict()
        return entry

    def comparison_figures(self, report: ExplainReport, shape: tuple[int, ...], *, single: bool) -> None:
        """The figures over all models, and the notes on what was skipped or could be added."""
        report.figures["perturbations"] = figures.perturbation_figure(self.comparisons)
        report.figures["gradients"] = figures.gradient_figure(self.amplitudes)
        if self.vizs:
            report.figures["visualization"] = figures.visualization_figure(self.vizs, self.classes)
        else:
            report.notes.append(f"The input (shape {shape}) is not an image: the class visualisation is skipped.")
        if single:
            report.notes.append("Give a second model (e.g. an adversarially trained or distilled one) to compare.")
