"""The black-box package sits below reports and the CLI: it imports neither, and no advlab module inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import advlab.blackbox

PACKAGE = Path(advlab.blackbox.__file__).parent
ABOVE = (
    "advlab.reports",
    "advlab.explain",
    "advlab.demo",
    "advlab.cli",
    "advlab.evaluation",
    "advlab.physical",
    "advlab.dataset_level",
)


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node, alias.name) for alias in node.names)
    return out


def test_blackbox_imports_nothing_from_a_higher_or_sibling_layer():
    for path in PACKAGE.glob("*.py"):
        for _, module in _imports(ast.parse(path.read_text())):
            assert not module.startswith(ABOVE), f"{path.name} imports {module}"


def test_no_advlab_import_inside_a_function():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [m for _, m in _imports(fn) if m == "advlab" or m.startswith("advlab.")]
                assert not inner, f"{path.name}:{fn.name} imports {inner} inside the function"


def test_importing_blackbox_loads_neither_reports_nor_matplotlib_nor_the_server_stack():
    code = (
        "import sys, advlab.blackbox; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'starlette', 'uvicorn', 'httpx') "
        "or m.startswith('advlab.reports')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
