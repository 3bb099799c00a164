"""The README's two set-up commands are what CI runs (and what a new user types)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", body, re.S)


def test_ci_runs_the_readme_test_command() -> None:
    (test_command,) = commands("Run the tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci.splitlines()


def test_demo_command_installs_the_demo_extra_and_runs_the_demo() -> None:
    (demo,) = commands("Try it")
    assert "pip install -e '.[demo]'" in demo and demo.strip().endswith("bridge demo")
