"""One INFO line per interval (a minute by default) while running, and one at the end.

Read from the metrics registry, so the line and ``/metrics`` never disagree. Figures only: no key,
item content or URL, and nothing per change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bridge.observe.metrics import LAG_WINDOWS, quantile, sample_value

log = logging.getLogger("bridge.observe")

# (label in the line, sample name, extra labels)
_Figures = tuple[tuple[str, str, dict[str, str]], ...]
_PUBLISH: _Figures = (
    ("records read", "bridge_stream_records_read_total", {}),
    ("changes published", "bridge_changes_published_total", {}),
    ("envelopes", "bridge_envelopes_published_total", {}),
)
_APPLY: _Figures = (
    ("applied", "bridge_changes_applied_total", {"outcome": "applied"}),
    ("duplicate", "bridge_changes_applied_total", {"outcome": "duplicate"}),
    ("stale", "bridge_changes_applied_total", {"outcome": "stale"}),
)
_DEAD = ("retrying", "parked", "quarantined")


class MinuteLog:
    """Logs rates, lag p50/p99 and dead letters of ``side`` ("publish" or "apply") for ``table``."""

    def __init__(
        self, side: str, table: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.side = side
        self.table = table
        self.interval = interval
        self._clock = clock
        self._window = f"log-{id(self)}"
        LAG_WINDOWS.open(self._window, table)
        self._started = self._since = clock()
        self._last = self._totals()
        self._first = dict(self._last)
        self._lags_all: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MinuteLog:
        self._thread = threading.Thread(target=self._run, name="minute-log", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("%s", self.line())

    def _totals(self) -> dict[str, float]:
        figures = _PUBLISH if self.side == "publish" else _APPLY
        totals = {name: sample_value(sample, table=self.table, **labels) for name, sample, labels in figures}
        for state in _DEAD:
            totals[state] = sample_value("bridge_dead_letters_total", table=self.table, state=state)
        return totals

    def line(self) -> str:
        """The figures since the previous line."""
        now, totals = self._clock(), self._totals()
        lags = LAG_WINDOWS.take(self._window)
        self._lags_all.extend(lags)
        text = self._describe(totals, self._last, now - self._since, lags, "last")
        self._last, self._since = totals, now
        return text

    def final(self) -> str:
        """The figures since start, for the line at the end."""
        totals = self._totals()
        lags = self._lags_all + LAG_WINDOWS.take(self._window)
        return self._describe(totals, self._first, self._clock() - self._started, lags, "total")

    def _describe(
        self, totals: dict[str, float], before: dict[str, float], seconds: float, lags: list[float], what: str
    ) -> str:
        seconds = max(seconds, 1e-9)
        figures = _PUBLISH if self.side == "publish" else _APPLY
        parts = [
            f"{name} {totals[name] - before[name]:.0f} ({(totals[name] - before[name]) / seconds:.1f}/s)"
            for name, _, _ in figures
        ]
        if self.side == "apply":
            if lags:
                parts.append(f"lag p50 {quantile(lags, 0.5):.3f} s p99 {quantile(lags, 0.99):.3f} s")
            else:
                parts.append("lag: no change applied")
        parts.append("dead letters " + ", ".join(f"{s} {totals[s] - before[s]:.0f}" for s in _DEAD))
        return f"{self.side} {self.table}, {what} {seconds:.0f} s: " + "; ".join(parts)

    def close(self) -> None:
        """Stop, and log the line for the whole run."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        log.info("%s", self.final())
        LAG_WINDOWS.close(self._window)
