"""setup.cfg lists every package in the tree: an editable install hides a missing one, a wheel does not."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bridge").rglob("__init__.py")}
    found |= {p.parent.name for p in (ROOT / "plugins").glob("bridge_*/__init__.py")}
    assert listed == found
