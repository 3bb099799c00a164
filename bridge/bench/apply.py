"""Applying: bridge-apply into an emulated table vs a bare conditional PutItem loop, same threads.

Three phases over the same profiles, each applied by a fresh Applier from the in-process
transport: inserts (new items), updates (a newer version of each), deletes. The raw loop does
the inserts and the updates as conditional PutItems (the condition bridge-apply uses) on a
thread pool of the same size, phase by phase interleaved with the bridge's. Every DynamoDB
request the applier's client makes is counted with a botocore event hook.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.apply.loop import Applier
from bridge.apply.target import TargetTable
from bridge.bench.context import Bench, discard_memory_queue
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import ATTRIBUTES, KEY, KEY_SCHEMA, TIMESTAMP, Op, ProfileWorkload
from bridge.change import Change, Outcome, to_boto_image
from bridge.deadletter.records import Parker
from bridge.demo.workload import create_table
from bridge.envelope import Batch, encode
from bridge.errors import BridgeError
from bridge.plugin.manager import open_transport
from bridge.source.records import parse_record
from bridge.transport import OutgoingMessage
from bridge.transport.reliable import ReliableTransport

REGION, ORIGIN = "us-west-2", "cn-north-1"
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
_PHASE_TIMEOUT_S = 240
ENVELOPE_CHANGES = 500  # changes per envelope: what bridge-publish packs at full speed


class RequestCounter:
    """Counts a client's API calls by operation (botocore ``before-call`` event: once per call)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def take(self) -> tuple[int, int]:
        """(writes, reads) since the last take."""
        with self._lock:
            calls, self.calls = self.calls, Counter()
        return sum(calls[op] for op in WRITES), sum(calls[op] for op in READS)


def phases(k: int) -> dict[str, list[Change]]:
    """k inserts, then a newer version of each, then a delete of each (positions in stream order)."""
    workload = ProfileWorkload(seed=14)
    plan = {
        "insert": [Op("INSERT", i, 0) for i in range(k)],
        "update": [Op("MODIFY", i, 1) for i in range(k)],
        "delete": [Op("REMOVE", i, 2) for i in range(k)],
    }
    out, position = {}, 0
    for name, ops in plan.items():
        changes = []
        for op in ops:
            changes.append(
                parse_record(
                    workload.record(position, op),
                    key_names=(KEY,),
                    origin=ORIGIN,
                    timestamp_attribute=TIMESTAMP,
                    shard_id="bench",
                )
            )
            position += 1
        out[name] = changes
    return out


def apply(bench: Bench) -> list[Figure]:
    k, workers = bench.scale.apply_items, bench.scale.apply_workers
    side = bench.aws("target", REGION, workers)
    table, raw_table = bench.table_name("apply"), bench.table_name("apply-raw")
    client, raw_client = side.client("dynamodb"), side.client("dynamodb")
    for name in (table, raw_table):
        create_table(client, name, stream=False, key_schema=KEY_SCHEMA, attributes=ATTRIBUTES)
    target = TargetTable.open(client, table)
    counter = RequestCounter(client)
    work = phases(k)
    seconds: dict[str, float] = {}
    requests: dict[str, tuple[int, int]] = {}
    for phase in ("insert", "update", "delete"):
        if phase != "delete":
            bench.say(f"apply: {phase} {k:,} items, bare conditional PutItem loop ({workers} threads)")
            seconds[f"raw_{phase}"] = _raw_puts(raw_client, raw_table, target.version_attr, work[phase], workers)
        bench.say(f"apply: {phase} {k:,} items, bridge-apply ({workers} workers)")
        counter.take()
        seconds[phase] = _bridge_apply(bench, target, work[phase], workers, phase)[0]
        requests[phase] = counter.take()
    puts = 2 * k
    bridge_rate = puts / (seconds["insert"] + seconds["update"])
    raw_rate = puts / (seconds["raw_insert"] + seconds["raw_update"])
    writes = requests["insert"][0] + requests["update"][0]
    reads = requests["insert"][1] + requests["update"][1]
    detail = {
        "items": k,
        "workers": workers,
        "bridge_puts_per_s": bridge_rate,
        "raw_puts_per_s": raw_rate,
        **{f"{name}_changes_per_s": k / s for name, s in seconds.items()},
        **{f"{phase}_requests": {"writes": w, "reads": r} for phase, (w, r) in requests.items()},
    }
    return [
        Figure(
            "apply_vs_raw_ratio",
            bridge_rate / raw_rate,
            "ratio",
            raw_rate,
            Goal(">=", 0.9),
            "puts/s",
            measured=f"{bridge_rate:,.0f} puts/s",
            detail=detail,
        ),
        Figure(
            "apply_calls_per_change",
            (writes + reads) / puts,
            "calls/change",
            None,
            Goal("<=", 1.05),
            detail={
                "inserts": sum(requests["insert"]) / k,
                "updates": sum(requests["update"]) / k,
                "envelope_changes": ENVELOPE_CHANGES,
            },
        ),
        Figure(
            "writes_per_change",
            writes / puts,
            "writes/change",
            None,
            Goal("==", 1.0),
            detail={"inserts": requests["insert"][0] / k, "updates": requests["update"][0] / k},
        ),
        Figure(
            "reads_per_change",
            reads / puts,
            "reads/change",
            None,
            None,
            detail={"inserts": requests["insert"][1] / k, "updates": requests["update"][1] / k},
        ),
        Figure(
            "writes_per_delete",
            requests["delete"][0] / k,
            "writes/delete",
            None,
            None,
            detail={"reads_per_delete": requests["delete"][1] / k},
        ),
    ]


def _raw_puts(client: Any, table: str, version_attr: str, changes: list[Change], workers: int) -> float:
    def put(change: Change) -> None:
        assert change.new_image is not None
        v = change.version.encode()
        client.put_item(
            TableName=table,
            Item={**to_boto_image(change.new_image), version_attr: {"S": v}},
            ConditionExpression="attribute_not_exists(#v) OR #v < :v",
            ExpressionAttributeNames={"#v": version_attr},
            ExpressionAttributeValues={":v": {"S": v}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, changes))
    return time.perf_counter() - started


def _bridge_apply(
    bench: Bench, target: TargetTable, changes: list[Change], workers: int, phase: str
) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, from start until the applier has applied every change
    (all encoded and queued beforehand)."""
    url = f"memory://bench-apply-{bench.run_id}-{phase}"
    transport = ReliableTransport(open_transport(url, "consume"))
    transport.publish(
        [
            OutgoingMessage(
                encode(
                    Batch(f"{phase}-{i}", ORIGIN, "profiles", 0, tuple(changes[i : i + ENVELOPE_CHANGES])),
                    bench.signer,
                ),
                f"{phase}-{i}",
                "bench",
            )
            for i in range(0, len(changes), ENVELOPE_CHANGES)
        ]
    )
    done = threading.Event()
    count = [0]
    finished = [0.0, 0.0]
    lock = threading.Lock()

    def on_applied(change: Change, outcome: Outcome) -> None:
        with lock:
            count[0] += 1
            if count[0] == len(changes):
                finished[0], finished[1] = time.perf_counter(), time.process_time()
                done.set()

    applier = Applier(
        transport,
        target,
        bench.trust,
        Parker(None, bench.workdir / "quarantine"),
        workers=workers,
        on_applied=on_applied,
        stop=done,
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            applier.run()
        except BaseException as exc:  # raised below
            errors.append(exc)
            done.set()

    started, cpu_started = time.perf_counter(), time.process_time()
    thread = threading.Thread(target=run, name=f"bench-apply-{phase}")
    thread.start()
    if not done.wait(_PHASE_TIMEOUT_S):
        errors.append(BridgeError(f"apply figure: {phase} phase did not finish in {_PHASE_TIMEOUT_S} s"))
        done.set()
    thread.join(60)
    applier.close()
    discard_memory_queue(url)
    if errors:
        raise errors[0]
    if applier.stats.dead_lettered or applier.stats.quarantined:
        raise BridgeError(f"apply figure: {phase} phase dead-lettered changes: {applier.stats.as_dict()}")
    return finished[0] - started, finished[1] - cpu_started
