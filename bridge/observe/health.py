"""Liveness and readiness of one process, reported by its loops and read by probes.

Alive: every registered loop turned within its allowed interval. Ready: alive, no link down and the
line not paused. A reason is one line an operator can act on ("target table t1 missing: paused").
Thread-safe: loops report from their own threads, the HTTP server reads from another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Loop:
    max_interval_s: float
    last: float


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._loops: dict[str, _Loop] = {}
        self._down: dict[str, str] = {}  # link name -> reason
        self._paused: dict[str, str] = {}  # scope (e.g. pipeline or "apply") -> reason
        self.paused_since: dict[str, float] = {}

    def register_loop(self, name: str, max_interval_s: float) -> None:
        with self._lock:
            self._loops[name] = _Loop(max_interval_s, self._clock())

    def beat(self, name: str) -> None:
        """The loop ``name`` turned (call once per iteration, cheap)."""
        with self._lock:
            loop = self._loops.get(name)
            if loop is not None:
                loop.last = self._clock()

    def link_down(self, name: str, reason: str) -> None:
        with self._lock:
            self._down[name] = reason

    def link_up(self, name: str) -> None:
        with self._lock:
            self._down.pop(name, None)

    def pause(self, scope: str, reason: str) -> None:
        with self._lock:
            self._paused[scope] = reason
            self.paused_since.setdefault(scope, self._clock())

    def resume(self, scope: str) -> None:
        with self._lock:
            self._paused.pop(scope, None)
            self.paused_since.pop(scope, None)

    def paused(self, scope: str) -> str | None:
        with self._lock:
            return self._paused.get(scope)

    def alive(self) -> tuple[bool, str]:
        now = self._clock()
        with self._lock:
            for name, loop in self._loops.items():
                if now - loop.last > loop.max_interval_s:
                    return False, f"{name} loop has not turned for {now - loop.last:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        ok, reason = self.alive()
        if not ok:
            return ok, reason
        with self._lock:
            for scope, why in sorted(self._paused.items()):
                return False, f"{scope} paused: {why}"
            for name, why in sorted(self._down.items()):
                return False, f"{name} down: {why}"
        return True, "ok"
