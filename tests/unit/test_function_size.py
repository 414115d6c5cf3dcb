"""No function or method in stateservice/ is longer than about a screen (60 lines): split it into named helpers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stateservice"
MAX_LINES = 60


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function or method in `source` longer than `limit` lines."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                start = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                lines = (child.end_lineno or child.lineno) - start + 1
                if lines > limit:
                    found.append((name, child.lineno, lines))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_measure_finds_long_functions_and_methods() -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(60))
    source = f"def short():\n    pass\n\nclass A:\n    @staticmethod\n    def long():\n{body}"
    assert long_functions(source) == [("A.long", 6, 62)]


MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


def test_every_module_is_measured() -> None:
    assert "web/openapi.py" in MODULES and "core/parse.py" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_no_function_is_longer_than_a_screen(module: str) -> None:
    offenders = long_functions((PACKAGE / module).read_text(encoding="utf-8"))
    assert not offenders, "; ".join(
        f"stateservice/{module}:{line}: {name} is {lines} lines (at most {MAX_LINES})"
        for name, line, lines in offenders
    )
