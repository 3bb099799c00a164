"""The one backoff formula: how long to wait before trying again, for every loop of ours.

Exponential from ``initial_s``, capped at ``max_s``, jittered. Two jitters, both from the AWS
architecture blog's "Exponential Backoff And Jitter":

* ``full`` (default): uniform in [0, step]. Spreads reconnect storms out best; the right choice for
  a loop that retries at once when the wait is short.
* ``equal``: uniform in [step/2, step]. Never less than half the step, for schedules (the retry
  queue) where a record must not come back almost at once.

Lives in ``bridge.transport`` because the transports' retry wrapper is its first user; ``bridge.aws``
re-exports it for the packages that reach AWS but not the transports (``bridge.source``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0
    max_attempts: int = 0  # 0: keep trying until stopped
    jitter: Literal["full", "equal"] = "full"

    def step(self, attempt: int) -> float:
        """The un-jittered wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.max_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 60))

    def delay(self, attempt: int) -> float:
        step = self.step(attempt)
        if self.jitter == "equal":
            return step / 2 + random.uniform(0, step / 2)
        return random.uniform(0, step)

    def exhausted(self, attempt: int) -> bool:
        """Has the loop had its ``max_attempts`` (never, when 0)?"""
        return bool(self.max_attempts) and attempt >= self.max_attempts
