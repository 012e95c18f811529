"""``explain``: run every analysis on one model (and optionally a second to compare) and write figures + HTML."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab import io, validation
from advlab.evaluation.engine import as_xy
from advlab.explain import figures
from advlab.explain._common import is_image
from advlab.explain.cross_section import cross_section
from advlab.explain.gradients import gradient_amplitudes
from advlab.explain.linearity import logit_response
from advlab.explain.noise import compare_perturbations
from advlab.explain.visualize import visualize_classes
from advlab.models import Classifier
from advlab.provenance import provenance

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
        import base64

        from advlab.reports.html import environment

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
    model: Classifier,
    data: Any,
    *,
    compare: Classifier | None = None,
    labels: tuple[str, str] = ("model", "compare"),
    n: int = 200,
    eps: float = 0.3,
    start: torch.Tensor | None = None,
    seed: int = 0,
) -> ExplainReport:
    """Run the analyses of :mod:`advlab.explain` on ``model`` (and ``compare``) with the first ``n`` examples.

    Image-only figures (class visualisations) are skipped with a note when the input is not an image;
    everything else runs for any input shape.

    Args:
        model: the classifier to explain.
        data: a Dataset (``.x``, ``.y``, ``.classes``) or a pair ``(x, y)``.
        compare: an optional second classifier (e.g. the robust or distilled version) shown beside it.
        labels: names of the two models in figures.
        n: examples used for the statistics.
        eps: L∞ radius for the perturbation comparison and the linear-response range.
        start: starting image for the class visualisation (default: the mean of the examples).
        seed: seeds random directions, noise and attacks.

    Returns:
        ExplainReport; call ``.write(out)`` for files.

    Example:
        >>> explain(standard, test, compare=robust, labels=("standard", "robust")).write("runs/explain")
    """
    n = validation.check_int("n", n, minimum=1)
    eps = validation.check_float("eps", eps, minimum=0.0, strict_min=True)
    x, y, classes = as_xy(data)
    x, y = x[:n], y[:n]
    models = {labels[0]: model} if compare is None else {labels[0]: model, labels[1]: compare}
    device = model.device
    x, y = x.to(device), y.to(device)
    num_classes = int(model.num_classes or int(y.max()) + 1)
    classes = classes or [str(i) for i in range(num_classes)]
    t0 = time.perf_counter()
    report = ExplainReport(numbers={"n": int(x.shape[0]), "eps": eps, "seed": seed, "models": {}})
    with torch.no_grad():
        preds = {k: m.predict(x) for k, m in models.items()}
    # The first example that every model classifies correctly anchors the per-example figures.
    ok = torch.stack([p == y for p in preds.values()]).all(0).nonzero().flatten()
    i0 = int(ok[0]) if ok.numel() else 0
    shape = tuple(model.input_shape) if model.input_shape else tuple(x.shape[1:])
    comparisons, amplitudes, vizs = {}, {}, {}
    for label, m in models.items():
        gen = torch.Generator().manual_seed(seed)
        sections = [
            cross_section(m, x[i0 : i0 + 1], int(y[i0]), kind=k, generator=gen) for k in ("adversarial", "random")
        ]
        resp = logit_response(m, x[: min(32, len(x))].roll(-i0, 0), y[: min(32, len(y))].roll(-i0, 0), eps_max=eps * 2)
        comparisons[label] = compare_perturbations(m, x, y, eps=eps, seed=seed)
        amplitudes[label] = gradient_amplitudes(m, x, y)
        entry: dict[str, Any] = {
            "clean_accuracy": float((preds[label] == y).double().mean()),
            "cross_sections": [s.to_dict() for s in sections],
            "linearity": resp.to_dict(),
            "perturbations": comparisons[label].to_dict(),
            "gradients": amplitudes[label].to_dict(),
        }
        suffix = "" if len(models) == 1 else f"__{label}"
        report.figures[f"cross_sections{suffix}"] = figures.cross_sections_figure(sections, classes)
        report.figures[f"linearity{suffix}"] = figures.logit_response_figure(resp, classes)
        if is_image(shape):
            s = x.mean(0, keepdim=True) if start is None else start.to(device)
            vizs[label] = visualize_classes(m, s, num_classes)
            entry["visualization"] = vizs[label].to_dict()
        report.numbers["models"][label] = entry
    report.figures["perturbations"] = figures.perturbation_figure(comparisons)
    report.figures["gradients"] = figures.gradient_figure(amplitudes)
    if vizs:
        report.figures["visualization"] = figures.visualization_figure(vizs, classes)
    else:
        report.notes.append(f"The input (shape {shape}) is not an image: the class visualisation is skipped.")
    if len(models) == 1:
        report.notes.append("Give a second model (e.g. an adversarially trained or distilled one) to compare.")
    report.numbers["wall_seconds"] = time.perf_counter() - t0
    report.numbers["provenance"] = provenance(seed=seed)
    return report
