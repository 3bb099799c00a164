"""End-to-end lag: a source write until it is visible in the target, at a steady paced rate.

The whole bridge as bridge-publish and bridge-apply build it (bridge.wiring), over the real
RabbitMQ, between two emulator processes (one per region). The writer stamps each profile
with the time of the write (``last_update_timestamp``, the version's timestamp); the lag is
taken when the applier's conditional write has returned, i.e. when a reader of the target
would see the item.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bridge.bench.context import Bench
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import ATTRIBUTES, KEY_SCHEMA, TIMESTAMP, ProfileWorkload
from bridge.change import Change, Operation, Outcome
from bridge.config import ApplyConfig, PublishConfig
from bridge.demo.workload import create_table
from bridge.errors import BridgeError
from bridge.wiring import build_applier, build_publisher

SOURCE_REGION, TARGET_REGION = "cn-north-1", "us-west-2"
_DRAIN_TIMEOUT_S = 60


def lag(bench: Bench) -> list[Figure]:
    bench.require_amqp("lag_p99_s")
    rate, seconds = bench.scale.lag_rate, bench.scale.lag_seconds
    n = int(rate * seconds)
    table = bench.table_name("lag")
    src = bench.aws("source", SOURCE_REGION).client("dynamodb")
    dst_endpoint = bench.emulator("target")
    create_table(src, table, key_schema=KEY_SCHEMA, attributes=ATTRIBUTES)
    create_table(
        bench.aws("target", TARGET_REGION).client("dynamodb"),
        table,
        stream=False,
        key_schema=KEY_SCHEMA,
        attributes=ATTRIBUTES,
    )
    private, public = bench.key_files
    transport = bench.queue_url(bench.queue("lag"))
    common: dict[str, Any] = {"transport": transport, "quarantine_dir": bench.workdir / "quarantine"}
    publisher = build_publisher(
        PublishConfig(
            source_table=table,
            source_region=SOURCE_REGION,
            source_endpoint=bench.emulator("source"),
            signing_key=private,
            checkpoint=str(bench.workdir / "lag.sqlite"),
            timestamp_attribute=TIMESTAMP,
            **common,
        ),
        threading.Event(),
    )
    lags: list[float] = []
    done = threading.Event()

    def on_applied(change: Change, outcome: Outcome) -> None:
        if outcome is Outcome.APPLIED and change.op is Operation.PUT:
            lags.append(time.time() - change.version.ts_us / 1e6)
            if len(lags) >= n:
                done.set()

    applier = build_applier(
        ApplyConfig(
            target_table=table, target_region=TARGET_REGION, target_endpoint=dst_endpoint, trusted_keys=public, **common
        ),
        threading.Event(),
        on_applied=on_applied,
    )
    errors: list[BaseException] = []

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # raised below
                errors.append(exc)
                done.set()

        return run

    threads = [
        threading.Thread(target=guarded(publisher.run), name="bench-publish"),
        threading.Thread(target=guarded(applier.run), name="bench-apply"),
    ]
    for thread in threads:
        thread.start()
    bench.say(f"lag: writing {n:,} profiles at {rate:g}/s, replicating over RabbitMQ")
    workload = ProfileWorkload(seed=15)
    started = time.monotonic()
    try:
        for i in range(n):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            src.put_item(TableName=table, Item=workload.item(i, ts=time.time()))
        written_in = time.monotonic() - started
        done.wait(_DRAIN_TIMEOUT_S)
    finally:
        publisher.stop.set()
        applier.stop.set()
        for thread in threads:
            thread.join(60)
        publisher.close()
        applier.close()
    if errors:
        raise errors[0]
    if len(lags) < n:
        raise BridgeError(f"lag figure: only {len(lags)} of {n} writes reached the target in time")
    p99 = _percentile(lags, 99)
    return [
        Figure(
            "lag_p99_s",
            p99,
            "s",
            None,
            Goal("<=", 1.0),
            detail={
                "writes": n,
                "target_rate_per_s": rate,
                "achieved_rate_per_s": n / written_in,
                "p50_s": _percentile(lags, 50),
                "p90_s": _percentile(lags, 90),
                "max_s": max(lags),
                "transport": "RabbitMQ",
                "emulators": "one moto server per region",
            },
        )
    ]


def _percentile(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
