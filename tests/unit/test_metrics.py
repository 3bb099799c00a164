"""The metrics registry, its documentation, the probes over real HTTP, and the minute log line."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.cli.common import JsonFormatter
from bridge.errors import SourceError
from bridge.observe import Health, metrics
from bridge.observe.report import MinuteLog
from bridge.observe.server import MetricsServer
from bridge.publish.loop import raw_size

ROOT = Path(__file__).resolve().parents[2]
# Prometheus' data model: [a-zA-Z_:][a-zA-Z0-9_:]*; ours: lower snake case under bridge_.
NAME = re.compile(r"^bridge_[a-z][a-z0-9_]*[a-z0-9]$")


def exported_names() -> dict[str, str]:
    """Name as scraped (counters with ``_total``) -> type."""
    names = {}
    for metric in metrics.REGISTRY.collect():
        names[metric.name + ("_total" if metric.type == "counter" else "")] = metric.type
    return names


def documented() -> dict[str, str]:
    """Name -> type from the rows of docs/metrics.md's metric tables."""
    rows = re.findall(r"^\| `(bridge_[a-z0-9_]+)` \| (\w+) \|", (ROOT / "docs" / "metrics.md").read_text(), re.M)
    return dict(rows)


def test_every_registered_metric_is_documented_and_every_documented_one_exists() -> None:
    exported, docs = exported_names(), documented()
    assert len(exported) >= 15
    assert sorted(set(exported) - set(docs)) == [], "registered but missing from docs/metrics.md"
    assert sorted(set(docs) - set(exported)) == [], "documented in docs/metrics.md but not registered"
    assert {name: docs[name] for name in exported} == exported, "documented type differs"


def test_names_and_labels_follow_the_rules() -> None:
    for metric in metrics.REGISTRY.collect():
        assert NAME.match(metric.name), metric.name
        assert not metric.name.endswith("_total"), "prometheus-client adds _total to counters itself"
    for collector in (metrics.CHANGES_APPLIED, metrics.DEAD_LETTERS, metrics.ITERATOR_AGE, metrics.REPLICATION_LAG):
        labels = set(collector._labelnames)
        # never item data or positions
        assert not labels & {"key", "keys", "sequence", "sequence_number", "seq", "message_id", "item"}


def test_iterator_age_and_checkpoint_age_per_shard() -> None:
    arn = "arn:aws:dynamodb:cn-north-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
    old = datetime.now(timezone.utc) - timedelta(seconds=42)
    metrics.stream_read(arn, "shardId-1", [{"dynamodb": {"ApproximateCreationDateTime": old}}])
    assert 41 <= metrics.sample_value("bridge_stream_iterator_age_seconds", table="orders", shard="shardId-1") < 60
    metrics.stream_read(arn, "shardId-1", [])  # an empty read: caught up
    assert metrics.sample_value("bridge_stream_iterator_age_seconds", table="orders", shard="shardId-1") == 0
    metrics.checkpoint_saved(arn, "shardId-1")
    assert 0 <= metrics.sample_value("bridge_checkpoint_age_seconds", table="orders", shard="shardId-1") < 5
    metrics.checkpoint_saved(arn, "shardId-1", finished=True)  # a finished shard leaves no series behind
    scraped = {tuple(s.labels.items()) for m in metrics.REGISTRY.collect() for s in m.samples}
    assert (("table", "orders"), ("shard", "shardId-1")) not in scraped


def test_stats_mirror_adds_only_the_increase() -> None:
    mirror = metrics.apply_mirror("mirror-t")
    before = metrics.sample_value("bridge_changes_applied_total", table="mirror-t", outcome="applied")
    mirror.sync({"applied": 5, "parked": 1})
    mirror.sync({"applied": 5, "parked": 1})
    mirror.sync({"applied": 8, "parked": 1})
    assert metrics.sample_value("bridge_changes_applied_total", table="mirror-t", outcome="applied") == before + 8
    assert metrics.sample_value("bridge_dead_letters_total", table="mirror-t", state="parked") == 1


def test_aws_errors_counted_by_code_of_the_cause() -> None:
    class ClientError(Exception):
        response = {"Error": {"Code": "ResourceNotFoundException"}}

    try:
        try:
            raise ClientError("gone")
        except ClientError as inner:
            raise SourceError("stream failed") from inner
    except SourceError as exc:
        metrics.aws_error("source", exc)
    from botocore.exceptions import ReadTimeoutError

    before = metrics.sample_value("bridge_aws_errors_total", side="target")
    metrics.aws_error("target", ReadTimeoutError(endpoint_url="http://x"))
    metrics.aws_error("target", ValueError("not base64"))  # the applier's own failure: not an AWS error
    assert metrics.sample_value("bridge_aws_errors_total", side="source", error="ResourceNotFoundException") >= 1
    assert metrics.sample_value("bridge_aws_errors_total", side="target", error="ReadTimeoutError") >= 1
    assert metrics.sample_value("bridge_aws_errors_total", side="target") == before + 1


def test_lag_is_observed_for_applied_changes_only() -> None:
    count = metrics.sample_value("bridge_replication_lag_seconds_count", table="lag-t")
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    metrics.change_applied("lag-t", "cn-north-1", now_us - 2_000_000, "applied")
    metrics.change_applied("lag-t", "cn-north-1", now_us, "duplicate")
    metrics.change_applied("lag-t", "cn-north-1", now_us, "stale")
    assert metrics.sample_value("bridge_replication_lag_seconds_count", table="lag-t") == count + 1
    assert 2 <= metrics.sample_value("bridge_replication_lag_seconds_sum", table="lag-t") < 10


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_server_serves_metrics_and_probes_over_http() -> None:
    ticks = [0.0]
    health = Health(clock=lambda: ticks[0])
    health.register_loop("apply", max_interval_s=10)
    server = MetricsServer(health, "127.0.0.1", 0)
    metrics.READY.add(health.ready)
    try:
        metrics.change_applied("http-t", "r1", 0, "applied")
        status, body = get(server.url + "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert "bridge_replication_lag_seconds" in families
        assert get(server.url + "/healthz") == (200, "ok\n")
        assert get(server.url + "/readyz") == (200, "ok\n")
        health.link_down("amqp://mq//?queue=q", "ConnectionRefusedError")
        assert get(server.url + "/readyz") == (503, "amqp://mq//?queue=q down: ConnectionRefusedError\n")
        assert get(server.url + "/healthz")[0] == 200  # alive although not ready
        _, body = get(server.url + "/metrics")
        assert "bridge_ready 0.0" in body
        health.link_up("amqp://mq//?queue=q")
        health.pause("apply", "target table t1 missing")
        assert get(server.url + "/readyz") == (503, "apply paused: target table t1 missing\n")
        health.resume("apply")
        ticks[0] = 11.0  # the loop has not turned for 11 s
        status, reason = get(server.url + "/healthz")
        assert (status, reason) == (503, "apply loop has not turned for 11 s\n")
        assert get(server.url + "/nope")[0] == 404
    finally:
        server.close()
        metrics.READY.remove(health.ready)


def test_minute_line_has_rates_lag_and_dead_letters(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    line = MinuteLog("apply", "minute-t", clock=lambda: clock[0])
    mirror = metrics.apply_mirror("minute-t")
    mirror.sync({"applied": 120, "parked": 2})
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    for lag_s in (1, 1, 1, 5):
        metrics.change_applied("minute-t", "r1", now_us - lag_s * 1_000_000, "applied")
    clock[0] = 160.0
    text = line.line()
    assert text.startswith("apply minute-t, last 60 s: applied 120 (2.0/s)")
    assert "lag p50 1.0" in text and "p99 5.0" in text
    assert "parked 2" in text
    assert "lag: no change applied" in line.line()  # nothing since: the next line says so
    with caplog.at_level(logging.INFO, logger="bridge.observe"):
        line.close()
    assert "apply minute-t, total 60 s: applied 120" in caplog.text


def test_json_log_time_is_iso_8601_with_zone() -> None:
    record = logging.LogRecord("bridge", logging.INFO, __file__, 1, "hello", None, None)
    doc = json.loads(JsonFormatter().format(record))
    parsed = datetime.fromisoformat(doc["time"])
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    assert abs(parsed.timestamp() - record.created) < 0.001


def test_raw_stream_bytes_are_counted_without_measuring() -> None:
    record = {"dynamodb": {"SizeBytes": 321, "NewImage": {"k": {"S": "v"}}}}
    assert raw_size(record, measure=False) == 321
    assert raw_size(record, measure=True) > 30


def test_an_idle_applier_says_nothing_was_received_and_reports_its_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bridge.apply.loop import Applier
    from bridge.apply.target import TargetTable
    from bridge.deadletter.records import Parker
    from bridge.envelope import TrustStore
    from bridge.plugin.manager import open_transport
    from bridge.transport.reliable import ReliableTransport

    target = TargetTable(None, "idle-t", ("k",), {"k": "S"}, "idle-t-bridge-tombstones")
    health = Health()
    source = ReliableTransport(open_transport("memory://idle-applier", "consume"))
    applier = Applier(source, target, TrustStore(), Parker(None, tmp_path), health=health)
    assert applier.health is health
    with caplog.at_level(logging.INFO, logger="bridge.apply.loop"):
        applier.run(until_idle=0.2)
    applier.close()
    assert "apply totals: nothing received" in caplog.text
    assert "apply totals: \n" not in caplog.text + "\n"
    assert health.alive() == (True, "ok")
    assert "apply" in health._loops


def test_a_link_that_fails_is_down_until_a_call_succeeds_and_errors_are_counted() -> None:
    from collections.abc import Sequence

    from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
    from bridge.transport.reliable import Backoff, ReliableTransport

    class Flaky(Transport):
        schemes = ("flaky",)
        recoverable_errors = (ConnectionResetError,)
        failures = 2

        def publish(self, messages: Sequence[OutgoingMessage]) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionResetError("reset by peer")

        def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
            return []

        def ack(self, delivery: Delivery) -> None:
            pass

    health = Health()
    seen: list[tuple[bool, str]] = []
    reliable = ReliableTransport(Flaky(TransportURL.parse("flaky://q")), Backoff(0.0, 0.0), sleep=lambda _: None)
    reliable.health = health
    real_close = reliable._safe_close

    def close_and_look() -> None:  # between two attempts: what a probe would see
        seen.append(health.ready())
        real_close()

    reliable._safe_close = close_and_look  # type: ignore[method-assign]
    errors = metrics.sample_value("bridge_transport_errors_total", transport="flaky", error="ConnectionResetError")
    reconnects = metrics.sample_value("bridge_transport_reconnects_total", transport="flaky")
    confirms = metrics.sample_value("bridge_broker_confirms_total", transport="flaky")
    reliable.publish([OutgoingMessage(b"x", "m1", "p"), OutgoingMessage(b"y", "m2", "p")])
    assert seen == [(False, "flaky://q down: publish failed: ConnectionResetError: reset by peer")] * 2
    assert health.ready() == (True, "ok")
    assert (
        metrics.sample_value("bridge_transport_errors_total", transport="flaky", error="ConnectionResetError")
        == errors + 2
    )
    assert metrics.sample_value("bridge_transport_reconnects_total", transport="flaky") == reconnects + 2
    assert metrics.sample_value("bridge_broker_confirms_total", transport="flaky") == confirms + 2
