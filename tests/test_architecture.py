"""The architecture of STYLE.md holds: imports run downward without cycles, no import is hidden in a function to
dodge a cycle, no private name crosses a module boundary, and library functions are short enough to read at once.

The layers themselves are import-linter contracts in pyproject.toml (``make lint`` runs them too); this test runs
them in the suite so that an upward import or a cycle fails CI wherever it is introduced.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "advlab"

MAX_FUNCTION_LINES = 60
"""Lines of code (docstrings, comments and blank lines not counted) a library function may have."""

LAZY_THIRD_PARTY_ONLY = ("cli",)
"""Packages whose functions may import advlab modules lazily: the command modules, so that ``advlab --help`` does
not import every command's dependencies. Everywhere else an advlab import inside a function dodges a cycle."""


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))]


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"


def test_layers_and_no_cycles():
    """import-linter's contracts (pyproject.toml): layers run downward and no package has an import cycle."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    out = subprocess.run(
        [sys.executable, "-c", code, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_no_advlab_import_inside_a_function():
    """An ``import advlab...`` inside a library function hides a cycle or an upward import; put it at the top."""
    found = []
    for path, tree in _modules():
        package = path.relative_to(SRC).parts[0]
        if package in LAZY_THIRD_PARTY_ONLY:
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("advlab"):
                    found.append(f"{_where(path, node)} from {node.module} import ...")
                elif isinstance(node, ast.Import) and any(a.name.startswith("advlab") for a in node.names):
                    found.append(f"{_where(path, node)} import {node.names[0].name}")
    assert not found, "advlab imports inside functions:\n" + "\n".join(sorted(set(found)))


def test_no_private_name_imported_from_another_module():
    """A helper two modules need is public in the lower one (STYLE.md), not imported by its private name."""
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("advlab"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{_where(path, node)} from {node.module} import {', '.join(private)}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    doc: set[int] = set()
    first = fn.body[0] if fn.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        doc = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    count = 0
    for i in range(fn.lineno, (fn.end_lineno or fn.lineno) + 1):
        text = lines[i - 1].strip()
        if i not in doc and text and not text.startswith("#"):
            count += 1
    return count


def test_library_functions_are_short():
    """No library function is longer than about 60 lines of code: an orchestration reads as named steps."""
    long = []
    for path, tree in _modules():
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(fn, lines)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_where(path, fn)} {fn.name}: {n} lines")
    assert not long, "functions over 60 lines of code:\n" + "\n".join(long)


def test_every_module_says_what_it_owns():
    """Each module starts with a docstring (one sentence saying what it owns)."""
    missing = [str(p.relative_to(ROOT)) for p, tree in _modules() if not ast.get_docstring(tree)]
    assert not missing, "modules without a docstring: " + ", ".join(missing)
