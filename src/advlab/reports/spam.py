"""The HTML page of a spam-filter experiment (:meth:`advlab.spam.experiment.SpamExperiment.run`'s record)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advlab import io
from advlab.reports.html import environment


def render_spam_report(record: dict[str, Any], title: str = "advlab spam") -> str:
    """The self-contained HTML page of ``record``.

    Args:
        record: what :meth:`SpamExperiment.run` returned.
        title: the page title.

    Returns:
        The HTML text.

    Examples:
        >>> html = render_spam_report(record)  # doctest: +SKIP
    """
    return environment().get_template("spam.html.j2").render(title=title, r=record)


def write_spam_report(record: dict[str, Any], out: str | os.PathLike[str], title: str = "advlab spam") -> Path:
    """Write ``DIR/result.json`` and ``DIR/report.html`` for ``record``; returns the HTML path.

    Args:
        record: what :meth:`SpamExperiment.run` returned.
        out: the output folder (created).
        title: the page title.

    Returns:
        The path of the HTML page.
    """
    folder = Path(out)
    io.write_json(folder / "result.json", record)
    return io.write_text(folder / "report.html", render_spam_report(record, title))
