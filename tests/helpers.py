"""Shared test helpers: processes, table comparison, draining a queue."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.copy.compare import Difference, compare_tables
from bridge.deadletter.records import FailureRecord
from bridge.plugin.manager import open_transport, plugin_set


def start(module: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30, log: Path | None = None) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` s fail naming ``what`` (and the tail of ``log``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = f"\n{log.read_text()[-3000:]}" if log is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.2)


def wait_identical(src: Any, dst: Any, table: str, keys: tuple[str, ...], timeout: float) -> Difference:
    deadline = time.monotonic() + timeout
    diff = compare_tables(src, table, dst, table, keys)
    while not diff.identical and time.monotonic() < deadline:
        time.sleep(1.0)
        diff = compare_tables(src, table, dst, table, keys)
    return diff


def no_failures_anywhere(dlq_url: str) -> list[FailureRecord]:
    """Every failure record on a retry queue and on the parked queue beside it (both drained)."""
    return drain_failures(dlq_url) + drain_failures(plugin_set().sibling(dlq_url, "parked").raw)


def drain_failures(url: str, expect: int | None = None, timeout: float = 10.0) -> list[FailureRecord]:
    """Every failure record on a dead-letter destination (acked: removes them)."""
    transport = open_transport(url, "dlq")
    records: list[FailureRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = transport.receive(100, timeout=0.5)
            for d in got:
                records.append(FailureRecord.decode(d.body))
                transport.ack(d)
            if not got and (expect is None or len(records) >= expect):
                break
    finally:
        transport.close()
    return records
