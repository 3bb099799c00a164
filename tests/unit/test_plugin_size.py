"""A transport plugin is only transport work: the NATS plugin and the template stay under 100 lines.

Lines of code are counted by :func:`code_lines`: a line counts if it holds a Python token other
than a comment, and is not part of a docstring; blank lines, comments and docstrings do not count.
Tests and packaging files (pyproject.toml, README) are not counted, only the plugin's package.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(source: str) -> int:
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def package_lines(package: Path) -> int:
    return sum(code_lines(path.read_text()) for path in sorted(package.glob("*.py")))


def test_the_counter_skips_comments_docstrings_and_blank_lines() -> None:
    source = (
        '"""Module doc\nover two lines."""\n\n# a comment\nx = 1  # counted\n\n\n'
        'def f():\n    """Doc."""\n    return (\n        2\n    )\n'
    )
    assert code_lines(source) == 5  # x = 1, def f():, return (, 2, )


@pytest.mark.parametrize("package", ["plugins/ddb-bridge-nats/bridge_nats", "plugins/template/bridge_myq"])
def test_plugin_is_under_100_lines_of_code(package: str) -> None:
    count = package_lines(ROOT / package)
    print(f"{package}: {count} lines of code")
    assert count < 100, f"{package} has {count} lines of code; the goal is under 100 (see docs/plugins.md)"
