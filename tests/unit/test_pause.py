"""Pause: the line stops on a systemic error, says so at ERROR once per interval, withdraws
readiness, probes on a schedule and gives up after --max-paused (a fake clock: time is the input)."""

from __future__ import annotations

import logging

import pytest

from bridge.errors import PausedTooLongError, SystemicError
from bridge.observe import Health
from bridge.observe.pause import Pause


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_one_error_line_per_interval_not_per_probe(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health(clock)
    pause = Pause("apply", health, probe_interval_s=5, log_interval_s=60, clock=clock)
    gone = SystemicError("target table t1: ResourceNotFoundException: not found")
    with caplog.at_level(logging.ERROR, logger="bridge.observe.pause"):
        pause.hold(gone)
        assert pause.seconds_until_probe() == 5
        for _ in range(11):  # 55 s of probes meeting the same cause
            clock.now += 5
            assert pause.seconds_until_probe() == 0
            pause.hold(gone)
        assert len(errors(caplog)) == 1 and "apply paused: target table t1" in errors(caplog)[0]
        clock.now += 5
        pause.hold(gone)  # 60 s: the reminder
        assert errors(caplog)[1] == "apply paused for 60 s: target table t1: ResourceNotFoundException: not found"
    assert health.ready() == (False, "apply paused: target table t1: ResourceNotFoundException: not found")
    pause.release()
    assert health.ready() == (True, "ok") and not pause.held and pause.pauses == 1


def test_max_paused_ends_the_wait_with_its_own_exit_code() -> None:
    clock = Clock()
    pause = Pause("publish", Health(clock), max_paused_s=30, clock=clock)
    pause.hold(SystemicError("stream gone"))
    clock.now += 30
    pause.check_limit()  # exactly the limit: still waiting
    clock.now += 1
    with pytest.raises(PausedTooLongError, match=r"publish paused for 31 s .*--max-paused 30.*stream gone") as info:
        pause.check_limit()
    assert info.value.exit_code == 9


def test_without_max_paused_it_waits_for_ever() -> None:
    clock = Clock()
    pause = Pause("apply", Health(clock), clock=clock)
    pause.hold(SystemicError("access denied"))
    clock.now += 10 * 86400
    pause.check_limit()
    assert pause.held
