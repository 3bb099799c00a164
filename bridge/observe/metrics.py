"""Every metric ddb-bridge exports, in one registry, and the one-line calls the loops make.

Names follow Prometheus' rules (``bridge_`` prefix, base units: seconds and bytes, counters end in
``_total``). Labels are bounded by configuration, never by data: ``table`` (the one table of a
process), ``origin`` (the replicas writing to it), ``shard`` (the shards of one stream: a few, and
they come and go with 24-hour retention), ``outcome``/``state``/``side`` (fixed sets), ``transport``
(a URL scheme) and ``error`` (an exception class or AWS error code). No key, sequence number or
message id is ever a label. docs/metrics.md documents each; tests/unit/test_metrics_docs.py holds
the two in step.

A private :class:`~prometheus_client.CollectorRegistry` rather than the global one: several
publishers and appliers may share a process (the demo, tests), and nothing else's metrics end up in
the EMF lines.

Loops keep their own statistics dataclasses (for their summaries and tests); :class:`StatsMirror`
copies the increase of those counters into the registry once per loop turn, so the hot loops gain
one call per turn rather than one per counter per change.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

# Replication lag spans milliseconds (healthy, one region) to hours (a stalled line).
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))

# -- publisher ------------------------------------------------------------------------------------
RECORDS_READ = Counter(
    "bridge_stream_records_read", "Stream records read from the source table's stream", ["table"], registry=REGISTRY
)
CHANGES_PUBLISHED = Counter(
    "bridge_changes_published", "Changes shipped and confirmed by the transport", ["table"], registry=REGISTRY
)
ENVELOPES_PUBLISHED = Counter(
    "bridge_envelopes_published", "Signed envelopes confirmed by the transport", ["table"], registry=REGISTRY
)
PUBLISHED_BYTES = Counter(
    "bridge_published_bytes",
    "Wire bytes of confirmed envelopes (compressed, signed)",
    ["table"],
    registry=REGISTRY,
)
ITERATOR_AGE = Gauge(
    "bridge_stream_iterator_age_seconds",
    "Read time minus creation time of the newest record of the last read, per shard (0 when caught up)",
    ["table", "shard"],
    registry=REGISTRY,
)

# -- applier --------------------------------------------------------------------------------------
ENVELOPES_RECEIVED = Counter(
    "bridge_envelopes_received", "Envelopes verified and decoded", ["table"], registry=REGISTRY
)
RECEIVED_BYTES = Counter("bridge_received_bytes", "Wire bytes of messages received", ["table"], registry=REGISTRY)
DUPLICATE_ENVELOPES = Counter(
    "bridge_duplicate_envelopes", "Envelopes skipped as already applied (redeliveries)", ["table"], registry=REGISTRY
)
CHANGES_APPLIED = Counter(
    "bridge_changes_applied",
    "Changes judged by the applier, by outcome: applied, duplicate, stale",
    ["table", "outcome"],
    registry=REGISTRY,
)
ECHO_CHANGES = Counter(
    "bridge_echo_changes",
    "Changes that came back to the replica they were written at (also counted in their outcome)",
    ["table"],
    registry=REGISTRY,
)
APPLY_RETRIES = Counter(
    "bridge_apply_retries", "In-place retries of throttled or timed-out writes", ["table"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "bridge_dead_letters",
    "Dead-letter events by state: retrying, retried, recovered, parked, quarantined",
    ["table", "state"],
    registry=REGISTRY,
)
REPLICATION_LAG = Histogram(
    "bridge_replication_lag_seconds",
    "Applier write time minus the change's time in its source stream, per applied change",
    ["table", "origin"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)

# -- links ----------------------------------------------------------------------------------------
BROKER_CONFIRMS = Counter(
    "bridge_broker_confirms",
    "Messages the broker confirmed (publisher confirms, or the equivalent acknowledgement)",
    ["transport"],
    registry=REGISTRY,
)
TRANSPORT_RECONNECTS = Counter(
    "bridge_transport_reconnects", "Reconnects after recoverable transport errors", ["transport"], registry=REGISTRY
)
TRANSPORT_ERRORS = Counter(
    "bridge_transport_errors", "Transport errors by exception class", ["transport", "error"], registry=REGISTRY
)
AWS_ERRORS = Counter(
    "bridge_aws_errors",
    "Failed AWS calls by side (source, target) and error code or class",
    ["side", "error"],
    registry=REGISTRY,
)


class _AgeCollector(Collector):
    """Seconds since an event, computed at scrape time, so a stalled loop's age still grows."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self._since: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def touch(self, *values: str) -> None:
        with self._lock:
            self._since[values] = time.time()

    def forget(self, *values: str) -> None:
        with self._lock:
            self._since.pop(values, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))
        now = time.time()
        with self._lock:
            for values, since in self._since.items():
                family.add_metric(list(values), max(0.0, now - since))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))


CHECKPOINT_AGE = _AgeCollector(
    "bridge_checkpoint_age_seconds", "Seconds since the shard's checkpoint was last saved", ("table", "shard")
)
REGISTRY.register(CHECKPOINT_AGE)


class _ReadyCollector(Collector):
    """1 while every :class:`~bridge.observe.health.Health` in this process is ready, else 0."""

    def __init__(self) -> None:
        self._checks: list[Callable[[], tuple[bool, str]]] = []

    def add(self, check: Callable[[], tuple[bool, str]]) -> None:
        self._checks.append(check)

    def remove(self, check: Callable[[], tuple[bool, str]]) -> None:
        if check in self._checks:
            self._checks.remove(check)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("bridge_ready", "1 while the process is ready (as /readyz), else 0")
        family.add_metric([], float(all(check()[0] for check in self._checks)))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("bridge_ready", "1 while the process is ready (as /readyz), else 0")


READY = _ReadyCollector()
REGISTRY.register(READY)


# -- the one-line calls ---------------------------------------------------------------------------


def table_of_stream(stream_arn: str) -> str:
    """``arn:aws:dynamodb:r:a:table/NAME/stream/TS`` -> ``NAME`` (the label; never a sequence number)."""
    parts = stream_arn.split("/")
    return parts[1] if len(parts) >= 2 else stream_arn


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        # Lambda events carry seconds, Kinesis-for-DynamoDB milliseconds (facts.md).
        return float(value) / 1000 if value > 1e11 else float(value)
    return None


def stream_read(stream_arn: str, shard_id: str, records: list[dict[str, Any]]) -> None:
    """After each GetRecords: the shard's iterator age, as Lambda's ``IteratorAge`` measures it."""
    newest = None
    for record in reversed(records):
        ddb = record.get("dynamodb") if isinstance(record, Mapping) else None
        newest = _epoch(ddb.get("ApproximateCreationDateTime")) if isinstance(ddb, Mapping) else None
        if newest is not None:
            break
    # An empty read means the iterator is at the shard's tip: nothing is waiting.
    age = max(0.0, time.time() - newest) if newest is not None else 0.0
    ITERATOR_AGE.labels(table_of_stream(stream_arn), shard_id).set(age)


def checkpoint_saved(stream_arn: str, shard_id: str, finished: bool = False) -> None:
    table = table_of_stream(stream_arn)
    if finished:  # a finished shard is never read again: drop its series, keep the label set bounded
        CHECKPOINT_AGE.forget(table, shard_id)
        with contextlib.suppress(KeyError):
            ITERATOR_AGE.remove(table, shard_id)
    else:
        CHECKPOINT_AGE.touch(table, shard_id)


def change_applied(table: str, origin: str, ts_us: int, outcome: Any) -> None:
    """After each change the applier judged (``outcome``: an ``Outcome`` or its value): an applied one's lag.

    The change's version time is its stream creation time, or the application's own write time when
    ``timestamp_attribute`` is set (earlier still, by milliseconds): either way what the lag means.
    """
    if getattr(outcome, "value", outcome) == "applied":
        now = time.time()
        LAST_APPLIED[table] = (now, ts_us, origin)
        lag = max(0.0, now - ts_us / 1e6)
        REPLICATION_LAG.labels(table, origin).observe(lag)
        LAG_WINDOWS.add(lag, table)


def broker_confirmed(transport: str, messages: int) -> None:
    BROKER_CONFIRMS.labels(transport).inc(messages)


def transport_error(transport: str, exc: BaseException, reconnecting: bool) -> None:
    TRANSPORT_ERRORS.labels(transport, type(exc).__name__).inc()
    if reconnecting:
        TRANSPORT_RECONNECTS.labels(transport).inc()


def aws_error(side: str, exc: BaseException) -> None:
    """Counted by the AWS error code when there is one (``ResourceNotFoundException``), else the class.

    The bridge's own errors wrap botocore's (``raise ... from``): the cause holds the code.
    """
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            if code:
                AWS_ERRORS.labels(side, str(code)[:64]).inc()
                return
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    # Without a code, only botocore's own (network, timeouts) failed a call; a change that broke the
    # applier's own code (a bad base64 value) is no AWS error and stays out of this figure.
    if type(cause).__module__.split(".")[0] in ("botocore", "urllib3"):
        AWS_ERRORS.labels(side, type(cause).__name__).inc()


class StatsMirror:
    """Copies the increase of a loop's statistics dataclass into counters, once per loop turn."""

    def __init__(self, counters: Mapping[str, Any]) -> None:
        # field name -> counter child (already labelled)
        self._counters = dict(counters)
        self._last: dict[str, int] = dict.fromkeys(self._counters, 0)
        self._lock = threading.Lock()

    def sync(self, stats: Any) -> None:
        values = asdict(stats) if is_dataclass(stats) and not isinstance(stats, type) else dict(stats)
        with self._lock:
            for name, counter in self._counters.items():
                value = int(values.get(name, 0))
                if value > self._last[name]:
                    counter.inc(value - self._last[name])
                self._last[name] = value


def publish_mirror(table: str) -> StatsMirror:
    """For :class:`~bridge.publish.loop.PublishStats`."""
    return StatsMirror(
        {
            "records": RECORDS_READ.labels(table),
            "changes": CHANGES_PUBLISHED.labels(table),
            "envelopes": ENVELOPES_PUBLISHED.labels(table),
            "wire_bytes": PUBLISHED_BYTES.labels(table),
            "bad_records": DEAD_LETTERS.labels(table, "parked"),
            "oversize": DEAD_LETTERS.labels(table, "parked"),
        }
    )


def apply_mirror(table: str) -> StatsMirror:
    """For :class:`~bridge.apply.loop.ApplyStats` (plus ``echoes``, ``received_bytes``)."""
    return StatsMirror(
        {
            "envelopes": ENVELOPES_RECEIVED.labels(table),
            "received_bytes": RECEIVED_BYTES.labels(table),
            "duplicate_envelopes": DUPLICATE_ENVELOPES.labels(table),
            "applied": CHANGES_APPLIED.labels(table, "applied"),
            "duplicates": CHANGES_APPLIED.labels(table, "duplicate"),
            "stale": CHANGES_APPLIED.labels(table, "stale"),
            "echoes": ECHO_CHANGES.labels(table),
            "retries": APPLY_RETRIES.labels(table),
            "dead_lettered": DEAD_LETTERS.labels(table, "retrying"),
            "retried": DEAD_LETTERS.labels(table, "retried"),
            "recovered": DEAD_LETTERS.labels(table, "recovered"),
            "parked": DEAD_LETTERS.labels(table, "parked"),
            "quarantined": DEAD_LETTERS.labels(table, "quarantined"),
        }
    )


class LagWindows:
    """Recent lag observations for consumers that need quantiles (the minute log line, EMF).

    A histogram's buckets are too coarse for a p99 in a log line; each consumer gets the raw values
    observed since it last took them, capped so a stalled consumer cannot grow memory.
    """

    CAP = 50_000

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}
        self._tables: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def open(self, name: str, table: str | None = None) -> None:
        """``table``: only that table's lags (one process may apply to many: pipelines); None: every table's."""
        with self._lock:
            self._windows.setdefault(name, [])
            self._tables[name] = table

    def add(self, value: float, table: str | None = None) -> None:
        with self._lock:
            for name, values in self._windows.items():
                wanted = self._tables.get(name)
                if len(values) < self.CAP and (wanted is None or table is None or wanted == table):
                    values.append(value)

    def close(self, name: str) -> None:
        with self._lock:
            self._windows.pop(name, None)
            self._tables.pop(name, None)

    def take(self, name: str) -> list[float]:
        with self._lock:
            values = self._windows.get(name, [])
            self._windows[name] = []
            return values


LAG_WINDOWS = LagWindows()
# table -> (applied at, the change's version time in µs, its origin): for the status file
LAST_APPLIED: dict[str, tuple[float, int, str]] = {}


def quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def registered_names() -> set[str]:
    """Every metric family name this registry exports (counters without their ``_total``)."""
    return {metric.name for metric in REGISTRY.collect()}


def sample_value(name: str, **labels: str) -> float:
    """Sum of the samples ``name`` with these labels (others summed over): for logs and status."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
