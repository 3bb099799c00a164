"""ruff and mypy are part of the suite, so CI keeps the tree clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "tool,args", [("ruff", ["check", "bridge", "plugins", "tests"]), ("ruff", ["format", "--check", "."]), ("mypy", [])]
)
def test_clean(tool: str, args: list[str]) -> None:
    if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
        pytest.fail(f"{tool} is not installed; it is in the [test] extra")
    exe = str(Path(sys.executable).parent / tool) if (Path(sys.executable).parent / tool).exists() else tool
    result = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
