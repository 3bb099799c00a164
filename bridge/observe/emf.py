"""The registry's figures as CloudWatch Embedded Metric Format lines: metrics without PutMetricData.

Why a writer of our own: the maintained library (``aws-embedded-metrics``) is built around asyncio
and one metrics context per invocation, with its own flush-on-exit machinery; here the figures
already live in a Prometheus registry and one JSON line per interval is all that is needed. The
format (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)
is small: ``{"_aws": {"Timestamp": ms, "CloudWatchMetrics": [{"Namespace", "Dimensions": [[names]],
"Metrics": [{"Name", "Unit"}]}]}, <dimension and metric values as top-level members>}``, at most
100 metrics per directive and 30 dimensions per set. tests/unit/test_emf.py validates the lines
against a JSON schema written from that specification.

:class:`EmfWriter` is usable on its own (a Lambda handler calls :meth:`EmfWriter.flush` at the end
of an invocation); :class:`EmfReporter` flushes it on an interval for the daemons.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from bridge.observe.metrics import LAG_WINDOWS, REGISTRY

log = logging.getLogger(__name__)

MAX_METRICS_PER_DIRECTIVE = 100
MAX_DIMENSIONS_PER_SET = 30
MAX_VALUES_PER_METRIC = 100
DEFAULT_NAMESPACE = "ddb-bridge"


@dataclass(frozen=True)
class Figure:
    """One EMF metric, read from one Prometheus sample name (summed over the other labels)."""

    name: str
    unit: str
    sample: str
    labels: dict[str, str] = field(default_factory=dict)
    kind: str = "delta"  # delta: a counter's increase since the last line; max: a gauge's largest value
    scale: float = 1.0
    by_table: bool = True  # the sample has a ``table`` label: only this line's table counts


FIGURES: tuple[Figure, ...] = (
    Figure("RecordsRead", "Count", "bridge_stream_records_read_total"),
    Figure("ChangesPublished", "Count", "bridge_changes_published_total"),
    Figure("EnvelopesPublished", "Count", "bridge_envelopes_published_total"),
    Figure("PublishedBytes", "Bytes", "bridge_published_bytes_total"),
    # Lambda's and KCL's conventions: milliseconds, the largest over the shards.
    Figure("IteratorAge", "Milliseconds", "bridge_stream_iterator_age_seconds", kind="max", scale=1000),
    Figure("CheckpointAge", "Seconds", "bridge_checkpoint_age_seconds", kind="max"),
    Figure("EnvelopesReceived", "Count", "bridge_envelopes_received_total"),
    Figure("ReceivedBytes", "Bytes", "bridge_received_bytes_total"),
    Figure("DuplicateEnvelopes", "Count", "bridge_duplicate_envelopes_total"),
    Figure("ChangesApplied", "Count", "bridge_changes_applied_total", {"outcome": "applied"}),
    Figure("ChangesDuplicate", "Count", "bridge_changes_applied_total", {"outcome": "duplicate"}),
    Figure("ChangesStale", "Count", "bridge_changes_applied_total", {"outcome": "stale"}),
    Figure("EchoChanges", "Count", "bridge_echo_changes_total"),
    Figure("ApplyRetries", "Count", "bridge_apply_retries_total"),
    Figure("DeadLettersRetrying", "Count", "bridge_dead_letters_total", {"state": "retrying"}),
    Figure("DeadLettersRetried", "Count", "bridge_dead_letters_total", {"state": "retried"}),
    Figure("DeadLettersRecovered", "Count", "bridge_dead_letters_total", {"state": "recovered"}),
    Figure("DeadLettersParked", "Count", "bridge_dead_letters_total", {"state": "parked"}),
    Figure("DeadLettersQuarantined", "Count", "bridge_dead_letters_total", {"state": "quarantined"}),
    Figure("BrokerConfirms", "Count", "bridge_broker_confirms_total", by_table=False),
    Figure("TransportReconnects", "Count", "bridge_transport_reconnects_total", by_table=False),
    Figure("TransportErrors", "Count", "bridge_transport_errors_total", by_table=False),
    Figure("AwsErrors", "Count", "bridge_aws_errors_total", by_table=False),
    Figure("Ready", "None", "bridge_ready", kind="max", by_table=False),
)
# Global Tables' name for the same figure; its values are the applied changes' lags in the interval.
REPLICATION_LATENCY = "ReplicationLatency"


class EmfWriter:
    """Writes one EMF line (or a few, 100 metrics each) per :meth:`flush` for one table and replica."""

    def __init__(
        self,
        table: str,
        replica: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.dimensions = {"Table": table, "Replica": replica}
        self.namespace = namespace
        self.out = out
        self._clock = clock
        self._last: dict[str, float] = {}
        self._window = f"emf-{id(self)}"
        LAG_WINDOWS.open(self._window, table)
        self._lock = threading.Lock()

    def documents(self) -> list[dict[str, Any]]:
        """The figures since the previous call, as EMF documents (without writing them)."""
        with self._lock:
            values = self._values()
        names = list(values)
        docs = []
        for start in range(0, max(1, len(names)), MAX_METRICS_PER_DIRECTIVE):
            chunk = names[start : start + MAX_METRICS_PER_DIRECTIVE]
            doc: dict[str, Any] = {
                "_aws": {
                    "Timestamp": int(self._clock() * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self.namespace,
                            "Dimensions": [list(self.dimensions)],
                            "Metrics": [{"Name": n, "Unit": values[n][1]} for n in chunk],
                        }
                    ],
                },
                **self.dimensions,
            }
            doc.update({n: values[n][0] for n in chunk})
            docs.append(doc)
        return docs

    def close(self) -> None:
        """Stop collecting lags for this writer (a flush after it reports no ReplicationLatency)."""
        LAG_WINDOWS.close(self._window)

    def flush(self, out: TextIO | None = None) -> list[str]:
        """Write the figures since the last flush as EMF lines to ``out`` (default: stdout); returns them."""
        lines = [json.dumps(doc, separators=(",", ":")) for doc in self.documents()]
        stream = out or self.out or sys.stdout
        for line in lines:
            stream.write(line + "\n")
        stream.flush()
        return lines

    def _values(self) -> dict[str, tuple[Any, str]]:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        values: dict[str, tuple[Any, str]] = {}
        for figure in FIGURES:
            matching = [
                value
                for labels, value in samples.get(figure.sample, [])
                if all(labels.get(k) == v for k, v in figure.labels.items())
                and (not figure.by_table or labels.get("table") == self.table)
            ]
            if not matching:
                continue  # a figure of the other side, or of nothing yet: no line member
            if figure.kind == "max":
                values[figure.name] = (max(matching) * figure.scale, figure.unit)
            else:
                total = sum(matching)
                values[figure.name] = (max(0.0, total - self._last.get(figure.name, 0.0)), figure.unit)
                self._last[figure.name] = total
        lags = sorted(LAG_WINDOWS.take(self._window))
        if lags:
            values[REPLICATION_LATENCY] = ([round(v * 1000, 3) for v in _summarise(lags)], "Milliseconds")
        return values


def _summarise(ordered: list[float]) -> list[float]:
    """At most 100 values standing for the distribution (EMF's limit per metric value array)."""
    if len(ordered) <= MAX_VALUES_PER_METRIC:
        return ordered
    step = (len(ordered) - 1) / (MAX_VALUES_PER_METRIC - 1)
    return [ordered[round(i * step)] for i in range(MAX_VALUES_PER_METRIC)]


class EmfReporter:
    """Flushes an :class:`EmfWriter` every ``interval`` seconds in a daemon thread, and once at :meth:`close`."""

    def __init__(self, writer: EmfWriter, interval: float) -> None:
        self.writer = writer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emf", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()

    def _flush(self) -> None:
        try:
            self.writer.flush()
        except (OSError, ValueError) as exc:  # a closed stdout must not take the line down
            log.warning("could not write EMF metrics: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._flush()
        self.writer.close()
