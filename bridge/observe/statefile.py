"""The applier's last applied change, kept in a small local file for ``bridge status``.

Why a file rather than reading the target: the newest ``_bridge_v`` on a table can only be found
by a scan, which costs a read of the whole table per status call. The applier already knows it;
writing it every few seconds (atomically, never per change) costs nothing, and ``bridge status``
reads it without a running daemon or an HTTP port. A stale file says so (its ``updated_at``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from bridge.observe.metrics import LAST_APPLIED

log = logging.getLogger(__name__)


def read_status_file(path: Path) -> dict[str, Any] | None:
    """What an applier last wrote, or ``None`` when no applier has written there yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("status file %s unreadable: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


class StatusFile:
    """Writes ``{"table", "updated_at", "last_applied": {...}}`` to ``path`` every ``interval`` s."""

    def __init__(self, path: Path, table: str, interval: float = 5.0) -> None:
        self.path = path
        self.table = table
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-file", daemon=True)

    def start(self) -> StatusFile:
        self._thread.start()
        return self

    def document(self) -> dict[str, Any]:
        previous = (read_status_file(self.path) or {}).get("last_applied")
        last = LAST_APPLIED.get(self.table)
        if last is not None:
            applied_at, ts_us, origin = last
            previous = {
                "applied_at": applied_at,
                "change_time": ts_us / 1e6,
                "origin": origin,
                "lag_s": round(max(0.0, applied_at - ts_us / 1e6), 3),
            }
        return {"table": self.table, "updated_at": time.time(), "pid": os.getpid(), "last_applied": previous}

    def write(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.document()))
            os.replace(tmp, self.path)  # a reader never sees half a file
        except OSError as exc:
            log.warning("cannot write status file %s: %s", self.path, exc)

    def _run(self) -> None:
        self.write()
        while not self._stop.wait(self.interval):
            self.write()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.write()
