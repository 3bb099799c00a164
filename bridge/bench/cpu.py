"""Client CPU per change: bridge-publish and bridge-apply against the bare boto3 loops they replace.

Both figures run against :mod:`bridge.bench.stub`, an endpoint in its own process that answers
valid DynamoDB and DynamoDB Streams JSON at once (its CPU is not counted), so what is measured is
the CPU this process spends: ``time.process_time()`` (every thread of the process, user + system)
around the measured work only, best of several runs per side, the two sides alternated.

* ``publish_cpu_ratio``: bridge-publish's read path (``StreamReader``, ``parse_record``, batching,
  encode, publish to the in-process transport, a SQLite checkpoint per batch) over the stub's one
  closed shard, until the shard is done; over a bare ``DescribeStream`` + ``GetShardIterator`` +
  ``GetRecords(Limit=1000)`` loop over the same records, same client settings.
* ``apply_cpu_ratio``: an ``Applier`` (8 workers) fed pre-encoded envelopes of 500 changes through the
  in-process transport, inserting N profiles then updating each, from its start until the last change is
  applied (decode, verify, conditional writes, batched tombstone reads); over a bare conditional
  ``PutItem`` loop (the applier's condition) on 8 threads, same items, same phases.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bridge.apply.target import TargetTable
from bridge.aws import AwsSide
from bridge.bench.apply import _bridge_apply, _raw_puts, phases
from bridge.bench.context import Bench, discard_memory_queue
from bridge.bench.report import Figure, Goal
from bridge.bench.stub import STREAM_ARN, stub_server
from bridge.bench.workloads import KEY, TIMESTAMP
from bridge.deadletter.records import Parker
from bridge.plugin.manager import open_transport
from bridge.publish.loop import Publisher
from bridge.source.streams import StreamReader
from bridge.state.checkpoints import SqliteCheckpointStore
from bridge.transport.reliable import ReliableTransport

REGION = "us-west-2"
STUB_SEED = 17


def cpu(bench: Bench) -> list[Figure]:
    scale = bench.scale
    records, items, repeats, workers = scale.cpu_records, scale.cpu_items, scale.cpu_repeats, scale.apply_workers
    with stub_server(records, STUB_SEED) as endpoint:
        side = AwsSide(REGION, endpoint, max_pool_connections=max(10, workers + 2))
        # Two clients: bridge-publish's reader changes how its client parses GetRecords.
        streams, raw_streams = side.client("dynamodbstreams"), side.client("dynamodbstreams")
        db, raw_db = side.client("dynamodb"), side.client("dynamodb")
        _bare_read(raw_streams, records)  # the stub builds and keeps its pages on first read
        publish: dict[str, float] = {"bridge": float("inf"), "raw": float("inf")}
        apply: dict[str, float] = {"bridge": float("inf"), "raw": float("inf")}
        work = phases(items)
        for attempt in range(repeats):
            bench.say(f"cpu: publish path vs bare GetRecords loop, {records:,} records ({attempt + 1}/{repeats})")
            publish["raw"] = min(publish["raw"], _bare_read(raw_streams, records))
            publish["bridge"] = min(publish["bridge"], _bridge_read(bench, streams, records, attempt))
            bench.say(f"cpu: applier vs bare PutItem loop, {items:,} inserts + updates ({attempt + 1}/{repeats})")
            target = TargetTable.open(db, bench.table_name(f"cpu-{attempt}"))
            raw_table = bench.table_name(f"cpu-raw-{attempt}")
            raw = 0.0
            for phase in ("insert", "update"):
                started = time.process_time()
                _raw_puts(raw_db, raw_table, target.version_attr, work[phase], workers)
                raw += time.process_time() - started
            apply["raw"] = min(apply["raw"], raw)
            ours = sum(
                _bridge_apply(bench, target, work[p], workers, f"cpu-{p}-{attempt}")[1] for p in work if p != "delete"
            )
            apply["bridge"] = min(apply["bridge"], ours)
    puts = 2 * items
    per_record = {side: 1e6 * s / records for side, s in publish.items()}
    per_put = {side: 1e6 * s / puts for side, s in apply.items()}
    against = "bridge.bench.stub (own process, answers at once, conditions not evaluated)"
    return [
        Figure(
            "publish_cpu_ratio",
            per_record["bridge"] / per_record["raw"],
            "ratio",
            per_record["raw"],
            Goal("<=", 1.0),
            "µs CPU/record",
            measured=f"{per_record['bridge']:,.0f} µs CPU/record",
            detail={"records": records, "repeats": repeats, "us_per_record": per_record, "endpoint": against},
        ),
        Figure(
            "apply_cpu_ratio",
            per_put["bridge"] / per_put["raw"],
            "ratio",
            per_put["raw"],
            Goal("<=", 1.10),
            "µs CPU/put",
            measured=f"{per_put['bridge']:,.0f} µs CPU/change",
            detail={
                "changes": puts,
                "repeats": repeats,
                "workers": workers,
                "us_per_change": per_put,
                "endpoint": against,
            },
        ),
    ]


def _bare_read(streams: Any, n: int) -> float:
    """CPU seconds of a bare loop reading the stub's shard to its end."""
    started = time.process_time()
    shard = streams.describe_stream(StreamArn=STREAM_ARN)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=STREAM_ARN, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    got = 0
    while iterator:
        response = streams.get_records(ShardIterator=iterator, Limit=1000)
        got += len(response["Records"])
        iterator = response.get("NextShardIterator")
    assert got == n, (got, n)
    return time.process_time() - started


def _bridge_read(bench: Bench, streams: Any, n: int, attempt: int) -> float:
    """CPU seconds of bridge-publish's read path over the stub's shard, to its end."""
    store = SqliteCheckpointStore(bench.workdir / f"cpu-source-{attempt}.sqlite")
    url = f"memory://bench-cpu-source-{bench.run_id}-{attempt}"
    publisher = Publisher(
        StreamReader(streams, STREAM_ARN, store),
        ReliableTransport(open_transport(url, "publish")),
        bench.signer,
        Parker(None, bench.workdir / "quarantine"),
        table="profiles",
        key_names=(KEY,),
        origin=REGION,
        timestamp_attribute=TIMESTAMP,
        stop=threading.Event(),
    )
    try:
        started = time.process_time()
        stats = publisher.run(until_idle=0)
        spent = time.process_time() - started
    finally:
        publisher.close()
        store.close()
        discard_memory_queue(url)
    if stats.changes != n:
        raise RuntimeError(f"cpu figure: the publisher published {stats.changes} of {n} records")
    return spent
