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


class HealthSet:
    """The health of many pipelines in one process, each by name, for one metrics port.

    Alive: every running pipeline's loops turned in time (a pipeline that failed is not a reason to
    restart the others: it is retried in place). Ready: every pipeline ready; the reason names each
    pipeline that is not (``orders: publish paused: ...``), so one probe shows them all, and
    :meth:`ready_of` answers for one (``/readyz?pipeline=NAME``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, Health] = {}
        self._failed: dict[str, str] = {}
        self._starting: set[str] = set()

    def expect(self, names: list[str]) -> None:
        """Pipelines about to start: not ready until each reports in (a probe before then must not pass)."""
        with self._lock:
            self._starting.update(names)

    def add(self, name: str, health: Health) -> None:
        with self._lock:
            self._members[name] = health
            self._failed.pop(name, None)
            self._starting.discard(name)

    def failed(self, name: str, reason: str) -> None:
        """The pipeline could not start or stopped on an error (it is retried): not ready, with why."""
        with self._lock:
            self._failed[name] = reason
            self._members.pop(name, None)
            self._starting.discard(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._members.keys() | self._failed.keys() | self._starting)

    def alive(self) -> tuple[bool, str]:
        with self._lock:
            members = sorted(self._members.items())
        for name, health in members:
            ok, reason = health.alive()
            if not ok:
                return False, f"{name}: {reason}"
        return True, "ok"

    def ready_of(self, name: str) -> tuple[bool, str]:
        with self._lock:
            failed, health = self._failed.get(name), self._members.get(name)
        if failed is not None:
            return False, f"failed: {failed}"
        if health is None:
            return False, "starting"
        return health.ready()

    def ready(self) -> tuple[bool, str]:
        problems = []
        for name in self.names():
            ok, reason = self.ready_of(name)
            if not ok:
                problems.append(f"{name}: {reason}")
        if problems:
            return False, "; ".join(problems)
        return True, "ok"
