"""A self-contained HTML page of tables and figures, plus its JSON: the report of a study that is not an evaluation."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab import io
from advlab.reports.html import environment


@dataclass(frozen=True)
class Table:
    """A table of a study page: a caption, the column names and the rows (already formatted as text)."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Figure:
    """A figure of a study page: a title, the PNG bytes and a caption."""

    title: str
    png: bytes
    caption: str


@dataclass
class Study:
    """A study's page: title, one-line subtitle, tables, figures, notes and the JSON record it renders.

    Args:
        command: the ``advlab`` command that made it (shown in the footer).
        title: the page's title.
        subtitle: one line under the title.
        record: the JSON-friendly result (written as ``NAME.json`` and shown at the end of the page).
        seconds: the study's wall time.
        tables: the tables.
        figures: the figures (each also written as a PNG).
        notes: short paragraphs under the tables.

    Examples:
        >>> Study("rl", "CartPole-v1 under attack", "10 episodes", record, 12.0).write("runs/rl", "rl")
    """

    command: str
    title: str
    subtitle: str
    record: dict[str, Any]
    seconds: float
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, out: str | Path, name: str) -> tuple[Path, Path]:
        """Write ``NAME.json``, ``NAME.png`` (the first figure; later ones ``NAME-2.png``...) and ``NAME.html``.

        Args:
            out: the output folder (created if absent).
            name: the files' stem.

        Returns:
            The paths of the JSON and the HTML file.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        json_path = io.write_json(out / f"{name}.json", self.record)
        for i, fig in enumerate(self.figures):
            io.write_bytes(out / (f"{name}.png" if i == 0 else f"{name}-{i + 1}.png"), fig.png)
        figures = [
            {"title": f.title, "caption": f.caption, "uri": "data:image/png;base64," + base64.b64encode(f.png).decode()}
            for f in self.figures
        ]
        html = (
            environment()
            .get_template("study.html.j2")
            .render(
                title=self.title,
                subtitle=self.subtitle,
                tables=self.tables,
                figures=figures,
                notes=self.notes,
                record=self.record,
                command=self.command,
                seconds=self.seconds,
            )
        )
        return json_path, io.write_text(out / f"{name}.html", html)
