"""Self-contained HTML reports (jinja2): one evaluation, or several side by side; plus their JSON.

The pages embed every figure as a base64 PNG and every style inline: no external fonts, scripts or images,
so a report opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from advlab import io, validation
from advlab.evaluation.report import EvaluationReport
from advlab.reports import figures
from advlab.result import SUCCESS_RATE_DEFINITION
from advlab.threat import format_eps

TEMPLATES = Path(__file__).parent / "templates"
MAX_EXAMPLES = 8
"""Adversarial examples shown in a report's example grid."""
EXAMPLES_FILE = "examples.safetensors"
"""Inputs and worst-case adversarial examples saved beside report.json, so a report can be re-rendered."""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))
    env.filters["count"] = lambda v: "–" if v is None else f"{v:,}"
    env.filters["per"] = lambda v: "–" if v is None else f"{v:.1f}"
    env.filters["secs"] = lambda v: "–" if v is None else (f"{v:.2f} s" if v < 100 else f"{v / 60:.1f} min")
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str, ensure_ascii=False)
    env.filters["eps"] = lambda v, bounds=(0.0, 1.0): format_eps(v, tuple(bounds))
    env.globals["norm_symbol"] = lambda n: figures.NORM_SYMBOL.get(n, n)
    env.globals["success_rate_definition"] = SUCCESS_RATE_DEFINITION
    return env


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _curve(report: EvaluationReport, label: str | None = None) -> dict[str, Any]:
    return {
        "label": label or report.model,
        "eps": [r.eps for r in report.results],
        "accuracy": [r.robust_accuracy for r in report.results],
        "low": [r.ci.low for r in report.results],
        "high": [r.ci.high for r in report.results],
        "clean": report.clean_accuracy,
        "clean_low": report.clean_ci.low,
        "clean_high": report.clean_ci.high,
    }


def _example_png(report: EvaluationReport) -> bytes | None:
    """Grid of the first adversarial examples found (broken by an attack, not misclassified to begin with)."""
    if report.x is None or report.x_adv is None:
        return None
    ex = report.examples
    idx = [j for j, by in enumerate(ex.get("broken_by", [])) if by not in (None, "clean")][:MAX_EXAMPLES]
    if not idx:
        return None
    return figures.example_grid(
        report.x[idx],
        report.x_adv[idx],
        [ex["label"][j] for j in idx],
        [ex["pred_clean"][j] for j in idx],
        [ex["pred_adv"][j] for j in idx],
        report.classes,
        None,
        bounds=(report.bounds[0], report.bounds[1]),
    )


def _model_folder(report: EvaluationReport) -> str:
    """The name of the folder the model was loaded from (``settings["model_path"]``), or ``""`` when not recorded."""
    return Path(str(report.settings.get("model_path") or "")).name


def render_report(report: EvaluationReport, *, title: str | None = None) -> str:
    """The HTML page of one evaluation (headline, summary table, curve, per-attack numbers, examples, checks).

    Args:
        report: the evaluation.
        title: page title (default: "Robustness of MODEL", with the model's folder when the report records it:
            "Robustness of wong-cnn (mnist-pgd)").

    Returns:
        The HTML text, self-contained.
    """
    curve = figures.robustness_curve([_curve(report)], report.norm)
    bars = figures.attack_bars(report)
    grid = _example_png(report)
    checks = report.checks
    n_fail = sum(c.status == "fail" for c in checks)
    n_pass = sum(c.status == "pass" for c in checks)
    folder = _model_folder(report)
    default_title = f"Robustness of {report.model}" + (f" ({folder})" if folder and folder != report.model else "")
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=title or default_title,
            r=report,
            headline=report.headline(),
            last=report.results[-1],
            curve_uri=_data_uri(curve),
            bars_uri=_data_uri(bars),
            grid_uri=_data_uri(grid) if grid else None,
            n_fail=n_fail,
            n_pass=n_pass,
            stages_wall=sum(s.wall_time_s for res in report.results for s in res.stages),
            n_examples_shown=min(
                MAX_EXAMPLES, sum(by not in (None, "clean") for by in report.examples.get("broken_by", []))
            ),
        )
    )


def write_report(report: EvaluationReport, out_dir: str | Path, *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.json``, ``report.html`` and the examples (``examples.safetensors``) into ``out_dir``, atomically.

    The one call that saves an evaluation from Python, as ``advlab evaluate --out DIR`` does: the folder can be
    re-rendered and compared with ``advlab report DIR ...``.

    Args:
        report: the evaluation (what :func:`advlab.evaluate` returns).
        out_dir: the folder (created when missing).
        title: page title (default: "Robustness of MODEL").

    Returns:
        The paths of the JSON and the HTML file.

    Examples:
        >>> report = advlab.evaluate(model, (x, y), [2 / 255, 4 / 255], attacks="fast")
        >>> json_path, html_path = write_report(report, "runs/my-eval")
    """
    out = Path(out_dir)
    json_path = io.write_json(out / "report.json", report.to_dict())
    if report.x is not None and report.x_adv is not None:
        io.save_safetensors(out / EXAMPLES_FILE, {"x": report.x, "x_adv": report.x_adv})
    html_path = io.write_text(out / "report.html", render_report(report, title=title))
    return json_path, html_path


def load_report(path: str | Path) -> EvaluationReport:
    """Read an evaluation's ``report.json`` (or the folder holding it) back into an :class:`EvaluationReport`."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no report.json here; run `advlab evaluate ... --out DIR` first")
    d = io.read_json(p)
    if not isinstance(d, dict) or "results" not in d:
        raise ValueError(f"{p}: not an advlab evaluation report (no 'results')")
    report = EvaluationReport.from_dict(d)
    tensors = p.parent / EXAMPLES_FILE
    if tensors.exists():
        from safetensors.torch import load_file

        t = load_file(str(tensors))
        if t["x"].shape[0] == report.n:
            report.x, report.x_adv = t["x"], t["x_adv"]
    return report


def _unique_labels(reports: Sequence[EvaluationReport], labels: Sequence[str] | None) -> list[str]:
    """One legend label per report: ``labels`` when given, else the model's name (its architecture).

    Evaluations that share a name are told apart by the folder the model was loaded from
    (``settings["model_path"]``, which ``advlab evaluate`` records), then by the preset, then by a counter:
    ``wong-cnn (mnist-pgd)`` and ``wong-cnn (mnist-std)``; ``wong-cnn (mnist-pgd, fast)`` and
    ``wong-cnn (mnist-pgd, standard)``.
    """
    if labels is not None:
        if len(labels) != len(reports):
            raise ValueError(f"labels: expected {len(reports)} labels (one per report), got {len(labels)}")
        return list(labels)
    keys = [(r.model, _model_folder(r), str(r.settings.get("preset") or "custom")) for r in reports]
    out: list[str] = []
    for name, folder, preset in keys:
        details = []
        if folder and sum(k[0] == name for k in keys) > 1:
            details.append(folder)
        if sum(k[:2] == (name, folder) for k in keys) > 1 and sum(k == (name, folder, preset) for k in keys) == 1:
            details.append(preset)
        lab = f"{name} ({', '.join(details)})" if details else name
        base, i = lab, 2
        while lab in out:
            lab = f"{base} ({i})"
            i += 1
        out.append(lab)
    return out


def comparison(reports: Sequence[EvaluationReport], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON of a side-by-side comparison: per model, clean and robust accuracy with CI at every eps."""
    if not reports:
        raise ValueError("reports: expected at least one evaluation to compare")
    norms = {r.norm for r in reports}
    if len(norms) > 1:
        raise ValueError(
            f"reports: cannot put different norms on one axis, got {sorted(norms)}; compare one norm at a time"
        )
    names = _unique_labels(reports, labels)
    eps = sorted({e for r in reports for e in r.eps})
    warnings = _different_data(reports, names)
    for w in warnings:
        validation.warn(w)
    rows = []
    for name, r in zip(names, reports):
        by_eps = {res.eps: res for res in r.results}
        rows.append(
            {
                "label": name,
                "model": r.model,
                "n": r.n,
                "preset": r.settings.get("preset"),
                "attacks": [a["label"] for a in r.attacks],
                "clean_accuracy": r.clean_accuracy,
                "clean_ci": [r.clean_ci.low, r.clean_ci.high],
                "robust": {
                    f"{e:g}": (
                        {"accuracy": by_eps[e].robust_accuracy, "ci": [by_eps[e].ci.low, by_eps[e].ci.high]}
                        if e in by_eps
                        else None
                    )
                    for e in eps
                },
                "checks_failed": [c.name for c in r.checks if c.status == "fail"],
                "wall_time_s": r.wall_time_s,
                "passes": r.passes.total.to_dict() if r.passes is not None else None,
                "git_commit": r.provenance.get("git_commit"),
            }
        )
    return {
        "format": "advlab.comparison/1",
        "norm": reports[0].norm,
        "eps": eps,
        "models": rows,
        "ci": "95% Wilson score interval",
        "warnings": warnings,
    }


def _data_name(report: EvaluationReport) -> str:
    """What an evaluation ran on: the data's name when recorded (``advlab evaluate``), else its size and digest."""
    named = report.settings.get("data")
    digest = str(report.settings.get("data_sha256") or "")[:12]
    return str(named) if named else f"{report.n} examples" + (f" (sha256 {digest}...)" if digest else "")


def _different_data(reports: Sequence[EvaluationReport], names: Sequence[str]) -> list[str]:
    """A sentence when the evaluations ran on different data (their digests, or their sizes, differ); else none."""
    digests = {r.settings.get("data_sha256") or None for r in reports}
    if len(digests) == 1 and None not in digests:
        return []
    if None in digests and len({r.n for r in reports}) == 1 and len({_data_name(r) for r in reports}) == 1:
        return []  # reports without a digest (older files) on data of the same size and name: nothing to say
    which = "; ".join(f"{name}: {_data_name(r)}" for name, r in zip(names, reports))
    return [
        f"the evaluations ran on different data ({which}); their robust accuracies are not measured on the same "
        "examples. Evaluate every model on the same data (same --data and --n) to compare them."
    ]


def render_comparison(reports: Sequence[EvaluationReport], labels: Sequence[str] | None = None) -> str:
    """The HTML page comparing several evaluations: one robust-accuracy-versus-eps plot and one table.

    Evaluations that ran on different data are compared with a warning (here and on the page).
    """
    return _render_comparison(reports, comparison(reports, labels))


def _render_comparison(reports: Sequence[EvaluationReport], data: dict[str, Any]) -> str:
    names = [m["label"] for m in data["models"]]
    curve = figures.robustness_curve([_curve(r, n) for r, n in zip(reports, names)], data["norm"])
    return (
        environment()
        .get_template("compare.html.j2")
        .render(
            title="Robustness comparison",
            data=data,
            reports=list(zip(names, reports)),
            curve_uri=_data_uri(curve),
            bounds=reports[0].bounds,
        )
    )


def write_comparison(
    reports: Sequence[EvaluationReport], out_dir: str | Path, labels: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.html`` into ``out_dir``; returns both paths.

    Evaluations that ran on different data are compared with a warning (``warnings`` in the JSON, a note on the
    page, and a ``UserWarning``).
    """
    out = Path(out_dir)
    data = comparison(reports, labels)
    json_path = io.write_json(out / "comparison.json", data)
    html_path = io.write_text(out / "comparison.html", _render_comparison(reports, data))
    return json_path, html_path
