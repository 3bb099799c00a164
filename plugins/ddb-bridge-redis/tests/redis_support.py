"""What this plugin's tests share: where the real Redis is, and how to say it is missing.

Self-contained on purpose: the tests run from this directory (``python -m pytest``) as well as
from ddb-bridge's suite, where this directory is in the testpaths.
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("BRIDGE_REDIS_URL") or "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI") == "true"


def missing(what: str) -> None:
    """Skip for a missing service; under CI=true a missing service fails the run."""
    if IN_CI:
        pytest.fail(f"{what} is missing (CI=true: services are required)", pytrace=False)
    pytest.skip(f"{what} is missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True
