"""The HTML page of a text experiment (``advlab text``): test error per method, nearest words, settings.

Examples:
    >>> write_text_report(result.to_dict(), "runs/text")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab import io
from advlab.reports.html import environment

TEMPLATE = "text.html.j2"
METHOD_NAMES = {
    "baseline": "baseline (no perturbation)",
    "at": "adversarial training",
    "vat": "virtual adversarial training",
    "at-vat": "adversarial + virtual adversarial",
}


def render_text_report(record: dict[str, Any], *, title: str | None = None) -> str:
    """The self-contained HTML page of a text experiment's record (:meth:`advlab.text.TextResult.to_dict`).

    Args:
        record: the experiment's JSON record.
        title: the page title (default: names the data).

    Returns:
        The page.

    Examples:
        >>> html = render_text_report(result.to_dict())
    """
    env = environment()
    probes = list(dict.fromkeys(w for m in record["methods"] for w in m["neighbours"]))  # in the order asked
    return env.get_template(TEMPLATE).render(
        r=record,
        title=title or f"Adversarial training on word embeddings: {record['data']}",
        names=METHOD_NAMES,
        probes=probes,
    )


def write_text_report(record: dict[str, Any], out_dir: str | Path, *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (atomically).

    Args:
        record: the experiment's JSON record.
        out_dir: the folder (created if needed).
        title: the page title.

    Returns:
        The paths of the JSON and the HTML files.

    Examples:
        >>> write_text_report(result.to_dict(), "runs/text")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = io.write_json(out / "report.json", record)
    return json_path, io.write_text(out / "report.html", render_text_report(record, title=title))
