"""deploy/systemd, deploy/README.md and the README's exit-code table agree with bridge/errors.py."""

from __future__ import annotations

import configparser
import inspect
import re
from pathlib import Path

import pytest

from bridge import errors

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def error_classes() -> list[type[errors.BridgeError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.BridgeError)]


def codes(needs_operator: bool) -> set[int]:
    return {c.exit_code for c in error_classes() if c.needs_operator is needs_operator}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_an_exit_code_means_one_thing_for_a_supervisor() -> None:
    assert codes(True) and codes(False)
    assert codes(True).isdisjoint(codes(False)), "a code both needs an operator and does not"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_stop_restarting_exactly_on_the_codes_that_need_an_operator(path: Path) -> None:
    service = unit(path)["Service"]
    prevent = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevent == codes(True)
    assert service["Restart"] in ("always", "on-failure")
    assert service["KillSignal"] == "SIGTERM"  # the daemons finish in-flight work on SIGTERM


def test_deploy_readme_names_the_same_codes() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    (listed,) = re.findall(r"RestartPreventExitStatus=([\d ]+)", text)
    assert {int(c) for c in listed.split()} == codes(True)


def test_readme_exit_code_table_matches_the_error_tree() -> None:
    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| [^|]+ \| (yes|no|-)[^|]* \|$", text, flags=re.M))
    for cls in error_classes():
        code = str(cls.exit_code)
        assert code in rows, f"README's exit-code table lacks {code} ({cls.__name__})"
        expected = "-" if not getattr(cls, "daemon", True) else "no" if cls.needs_operator else "yes"
        assert rows[code] == expected, f"exit {code}: restart column is wrong"
