"""Reading the source: bridge-publish's read path vs a bare GetRecords loop on the same stream.

Both read the same pre-filled emulated stream from TRIM_HORIZON to its last record, through
the same kind of client, against the same emulator process, alternately, best run of each.
The bridge side is the whole read path of bridge-publish: StreamReader, parse_record,
batching, encode and publish (to the in-process transport) and a checkpoint after every batch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bridge.bench.context import Bench, discard_memory_queue
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import ATTRIBUTES, KEY, KEY_SCHEMA, TIMESTAMP, ProfileWorkload
from bridge.deadletter.records import Parker
from bridge.demo.workload import create_table
from bridge.plugin.manager import open_transport
from bridge.publish.loop import Publisher
from bridge.source.streams import StreamReader
from bridge.state.checkpoints import SqliteCheckpointStore
from bridge.transport.reliable import ReliableTransport

REGION = "cn-north-1"
_WRITE_BATCH = 25  # BatchWriteItem's limit; the emulator streams each item of a batch


def fill_stream(bench: Bench, table: str, n: int, workload: ProfileWorkload) -> tuple[Any, str]:
    """A table whose stream holds ``n`` profile INSERTs; returns (streams client, stream ARN)."""
    side = bench.aws("source", REGION)
    db = side.client("dynamodb")
    create_table(db, table, key_schema=KEY_SCHEMA, attributes=ATTRIBUTES)
    for start in range(0, n, _WRITE_BATCH):
        items = [{"PutRequest": {"Item": workload.item(i)}} for i in range(start, min(n, start + _WRITE_BATCH))]
        pending: dict[str, Any] = {table: items}
        while pending:
            pending = db.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    arn = db.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    return side.client("dynamodbstreams"), arn


def source(bench: Bench) -> list[Figure]:
    n = bench.scale.source_records
    table = bench.table_name("source")
    bench.say(f"source: writing {n:,} items to the emulated source table")
    streams, arn = fill_stream(bench, table, n, ProfileWorkload(seed=13))
    raw_best, bridge_best = float("inf"), float("inf")
    for attempt in range(bench.scale.source_repeats):
        bench.say(
            f"source: bare GetRecords loop, then bridge-publish's read path ({attempt + 1}/"
            f"{bench.scale.source_repeats})"
        )
        raw_best = min(raw_best, _bare_loop(streams, arn, n))
        bridge_best = min(bridge_best, _bridge_read(bench, streams, arn, n, attempt))
    raw, ours = n / raw_best, n / bridge_best
    return [
        Figure(
            "source_vs_raw_ratio",
            ours / raw,
            "ratio",
            raw,
            Goal(">=", 0.9),
            "records/s",
            measured=f"{ours:,.0f} records/s",
            detail={
                "records": n,
                "repeats": bench.scale.source_repeats,
                "bridge_records_per_s": ours,
                "raw_records_per_s": raw,
                "emulator": "moto server, one process, loopback",
            },
        )
    ]


def _bare_loop(streams: Any, arn: str, n: int) -> float:
    started = time.perf_counter()
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    got = 0
    while got < n:
        response = streams.get_records(ShardIterator=iterator, Limit=1000)
        got += len(response["Records"])
        iterator = response["NextShardIterator"]
    return time.perf_counter() - started


def _bridge_read(bench: Bench, streams: Any, arn: str, n: int, attempt: int) -> float:
    """Seconds until bridge-publish has published and checkpointed all ``n`` changes."""
    store = SqliteCheckpointStore(bench.workdir / f"source-{attempt}.sqlite")  # fresh: from TRIM_HORIZON
    url = f"memory://bench-source-{bench.run_id}-{attempt}"
    stop = threading.Event()
    publisher = Publisher(
        StreamReader(streams, arn, store),
        ReliableTransport(open_transport(url, "publish")),
        bench.signer,
        Parker(None, bench.workdir / "quarantine"),
        table=bench.table_name("source"),
        key_names=(KEY,),
        origin=REGION,
        timestamp_attribute=TIMESTAMP,
        stop=stop,
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            publisher.run()
        except BaseException as exc:  # raised below
            errors.append(exc)

    thread = threading.Thread(target=run, name="bench-publish")
    started = time.perf_counter()
    thread.start()
    while publisher.stats.changes < n and thread.is_alive():
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(30)
    publisher.close()
    store.close()
    discard_memory_queue(url)
    if errors:
        raise errors[0]
    return elapsed
