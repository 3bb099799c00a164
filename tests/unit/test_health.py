"""Health: liveness from loops that turn, readiness from links and pauses (a fake clock: time is the input)."""

from __future__ import annotations

from bridge.observe import Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_stops_turning_is_not_alive() -> None:
    clock = Clock()
    health = Health(clock)
    health.register_loop("apply", max_interval_s=30)
    clock.now += 29
    assert health.alive() == (True, "ok")
    clock.now += 2
    ok, reason = health.alive()
    assert not ok and reason == "apply loop has not turned for 31 s"
    health.beat("apply")
    assert health.ready() == (True, "ok")


def test_pause_and_link_down_make_it_not_ready_with_the_reason() -> None:
    health = Health(Clock())
    health.link_down("transport", "amqp://host:5672 unreachable")
    assert health.ready() == (False, "transport down: amqp://host:5672 unreachable")
    health.pause("apply", "target table t1 missing")
    assert health.ready() == (False, "apply paused: target table t1 missing")
    assert health.paused("apply") == "target table t1 missing"
    health.resume("apply")
    health.link_up("transport")
    assert health.ready() == (True, "ok") and health.alive() == (True, "ok")


def test_health_set_names_each_pipeline_not_ready() -> None:
    from bridge.observe.health import HealthSet

    fleet = HealthSet()
    fleet.expect(["a", "b"])
    assert fleet.ready() == (False, "a: starting; b: starting")
    a, b = Health(), Health()
    fleet.add("a", a)
    fleet.add("b", b)
    assert fleet.ready() == (True, "ok")
    b.pause("publish", "table gone")
    fleet.failed("a", "source table 'x' does not exist")
    ok, reason = fleet.ready()
    assert not ok and reason == "a: failed: source table 'x' does not exist; b: publish paused: table gone"
    assert fleet.ready_of("b") == (False, "publish paused: table gone")
    assert fleet.alive() == (True, "ok")  # a failed pipeline is retried in place: no reason to restart the rest
