"""Stopping the line on a systemic error, the same way on both sides.

A loop that meets a :class:`~bridge.errors.SystemicError` (it concerns every change, so retrying
or parking change by change would only drain the queue into dead letters) calls :meth:`Pause.hold`
and stops taking work. While held, :meth:`Pause.probe_due` says when to try again (the loop probes
by doing its next piece of work; if that meets the error again it holds again), the reason is
logged at ERROR when the pause starts and then at most once per ``log_interval_s``, readiness is
withdrawn through :class:`~bridge.observe.health.Health`, and after ``max_paused_s`` (if set)
:class:`~bridge.errors.PausedTooLongError` ends the process for its supervisor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bridge.errors import PausedTooLongError, SystemicError
from bridge.observe.health import Health

log = logging.getLogger(__name__)


class Pause:
    def __init__(
        self,
        scope: str,
        health: Health,
        *,
        max_paused_s: float | None = None,
        probe_interval_s: float = 5.0,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self.health = health
        self.max_paused_s = max_paused_s
        self.probe_interval_s = probe_interval_s
        self.log_interval_s = log_interval_s
        self._clock = clock
        self.reason: str | None = None
        self.since: float | None = None
        self.pauses = 0  # how many times the line stopped (not probes that met the same cause)
        self._probe_at = 0.0
        self._logged_at = 0.0

    @property
    def held(self) -> bool:
        return self.reason is not None

    def hold(self, exc: SystemicError) -> None:
        """The work just tried met ``exc``: (stay) paused, and probe again after the interval."""
        now = self._clock()
        reason = str(exc)
        if self.since is None:
            self.since = now
            self.pauses += 1
            self._logged_at = now
            log.error(
                "%s paused: %s; messages stay where they are, nothing is dead-lettered; probing every %.0f s",
                self.scope,
                reason,
                self.probe_interval_s,
            )
        elif reason != self.reason or now - self._logged_at >= self.log_interval_s:
            self._logged_at = now
            log.error("%s paused for %.0f s: %s", self.scope, now - self.since, reason)
        self.reason = reason
        self.health.pause(self.scope, reason)
        self._probe_at = now + self.probe_interval_s
        self.check_limit()

    def check_limit(self) -> None:
        if self.since is None or self.max_paused_s is None:
            return
        paused = self._clock() - self.since
        if paused > self.max_paused_s:
            raise PausedTooLongError(
                f"{self.scope} paused for {paused:.0f} s (more than --max-paused {self.max_paused_s:g}): {self.reason}"
            )

    def seconds_until_probe(self) -> float:
        return max(0.0, self._probe_at - self._clock()) if self.held else 0.0

    def release(self) -> None:
        """The work went through: the cause is gone."""
        if self.since is None:
            return
        log.warning("%s resumed after %.0f s paused (%s)", self.scope, self._clock() - self.since, self.reason)
        self.reason = None
        self.since = None
        self.health.resume(self.scope)
