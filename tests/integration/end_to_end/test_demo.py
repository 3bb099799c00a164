"""`bridge demo` as a user runs it: a real process, exit 0 and "identical" at the end."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [["--changes", "120", "--rate", "0"], ["--bidirectional", "--changes", "60"]],
    ids=["one-way", "bidirectional"],
)
def test_demo_ends_identical(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "demo", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "identical" in output and "DIFFERENT" not in output
