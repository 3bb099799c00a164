"""Failure records, where they are parked, and per-change isolation in the apply loop.

Real parts: the memory transport, local files, moto's server for the target table (with
throttling injected on its real client where a test says so: moto never throttles).
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bridge.change import Change, Operation, Version
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.demo.workload import create_table
from bridge.envelope import TrustStore, decode
from bridge.errors import DecodeError, SystemicError
from bridge.plugin.manager import open_transport, plugin_set
from bridge.transport.reliable import ReliableTransport
from bridge.wiring import build_applier
from tests.deadletter_support import (
    SIGNER,
    STRANGER,
    Throttle,
    apply_config,
    envelope,
    key,
    put,
    records_on,
    send,
    stored,
    trusted_dir,
)


def sample() -> FailureRecord:
    return FailureRecord(
        Kind.CHANGES,
        State.RETRYING,
        "TransientApplyError",
        "throttled",
        b"\x00DDBR\xff",
        attempts=3,
        first_failed_at=1.5,
        last_failed_at=9.25,
        origin="cn-north-1",
        table="users",
        position=("shard-1", "000123"),
        envelope_id="e1",
        changes=(0, 4),
        retry_at=12.0,
        checked_at=10.0,
    )


def test_a_record_survives_the_wire_whole_and_lists_without_its_payload() -> None:
    record = sample()
    assert FailureRecord.decode(record.encode()) == record
    listed = record.describe()
    assert "payload" not in listed and listed["payload_bytes"] == 6
    assert (
        listed | {"kind": "changes", "state": "retrying", "changes": [0, 4], "position": ["shard-1", "000123"]}
        == listed
    )
    assert {"id", "state", "error", "attempts", "first_failed_at"} <= set(listed)
    assert "\x00" not in record.summary() and "2 change(s) of envelope e1" in record.summary()


def _doc(**changes: Any) -> bytes:
    doc = orjson.loads(sample().encode())
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v != "DROP"})


@pytest.mark.parametrize(
    "body,names",
    [
        (b"", "not a failure record"),
        (b"[1, 2]", "JSON object"),
        (_doc(format="other/1"), "ddb-bridge-failure/1"),
        (_doc(state="applied"), "applied"),
        (_doc(attempts="3"), "attempts"),
        (_doc(attempts=0), "attempts"),
        (_doc(payload="***"), "base64"),
        (_doc(changes=[0, -1]), "changes"),
        (_doc(changes=[True]), "changes"),
        (_doc(position=["only-one"]), "position"),
        (_doc(first_failed_at="yesterday"), "first_failed_at"),
        (_doc(retry_at=-5), "retry_at"),
        (_doc(id="x" * 500), "id"),
        (_doc(id="DROP"), "id"),
        (_doc(extra="field"), "extra"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_forged_or_broken_records_are_refused_naming_what_is_wrong(body: bytes, names: str) -> None:
    with pytest.raises(DecodeError, match=names) as info:
        FailureRecord.decode(body)
    assert info.value.raw == body  # kept whole


@pytest.mark.parametrize(
    "dlq,parked",
    [
        ("amqp://u:p@h:5672/v?queue=users.dlq&prefetch=8", "amqp://u:p@h:5672/v?queue=users.dlq.parked&prefetch=8"),
        ("amqps://h/?queue=failures", "amqps://h/?queue=failures.parked"),
        ("memory://users.dlq", "memory://users.dlq.parked"),
        ("kinesis://users.dlq?region=us-east-1", "kinesis://users.dlq.parked?region=us-east-1"),
        ("sqs://users-dlq.fifo?region=us-east-1", "sqs://users-dlq-parked.fifo?region=us-east-1"),
    ],
)
def test_the_parked_queue_sits_beside_the_retry_queue(dlq: str, parked: str) -> None:
    assert plugin_set().sibling(dlq, "parked").raw == parked


def test_parker_routes_by_state_and_keeps_what_the_queue_refuses_locally(tmp_path: Path) -> None:
    name = f"memory://parker-{time.monotonic_ns()}"
    dlq = open_transport(name + ".dlq", "dlq")
    dlq.max_message_bytes = 2048  # type: ignore[misc]  # a broker with a small limit
    parker = Parker(ReliableTransport(dlq), tmp_path / "q", opener=open_transport)
    retrying = sample()
    parked = sample().with_(state=State.PARKED, retry_at=None)
    quarantined = FailureRecord(Kind.ENVELOPE, State.QUARANTINED, "SignatureError", "bad", b"DDBR")
    too_big = sample().with_(payload=bytes(4000))
    parker.park_all([retrying, parked, quarantined, too_big])
    parker.close()
    assert [r.id for r in records_on(name + ".dlq")] == [retrying.id]
    assert sorted(r.id for r in records_on(name + ".dlq.parked")) == sorted([parked.id, quarantined.id])
    (local,) = (tmp_path / "q").iterdir()
    assert local.name == f"{too_big.id}.failure.json"
    assert FailureRecord.decode(local.read_bytes()) == too_big


@pytest.fixture
def target(moto_endpoint: str, unique: str) -> tuple[Any, str]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    return client, unique


@pytest.mark.aws
def test_one_poison_change_never_blocks_drops_or_reapplies_the_rest_of_its_envelope(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(
        tmp_path, client.meta.endpoint_url, table, url, transient_retries=2, retry_initial_delay=30, retry_max_delay=60
    )
    not_base64 = put(3, blob={"B": "this is not base64!"})  # signed by a trusted key, still unusable
    too_big = put(9, blob={"S": "x" * 420_000})  # over DynamoDB's 400 KB item limit
    mixed = [put(1), put(2), not_base64, put(4), put(5), too_big, put(6)]  # 2 is throttled for good
    after = [put(7), put(8)]
    bodies = [envelope(mixed, eid="mixed"), envelope(after, eid="after")]
    send(url, bodies)
    applier = build_applier(cfg, threading.Event())
    throttle = Throttle(applier.target.client, lambda user_id: user_id == 2)
    try:
        applier.process(applier.source.receive(10, 1.0))
    finally:
        applier.close()

    assert set(stored(client, table)) == {1, 4, 5, 6, 7, 8}
    assert all(throttle.sent[k] == 1 for k in (1, 4, 5, 6, 7, 8))  # each written once, none again
    assert throttle.refused == 3  # 1 + 2 in-place retries, then off to the retry queue
    stats = applier.stats
    assert (stats.applied, stats.dead_lettered, stats.retries, stats.parked) == (6, 3, 2, 2)
    (retrying,) = records_on(url + ".dlq")
    assert retrying.state is State.RETRYING and retrying.changes == (1,) and retrying.retry_at
    parked = {r.changes: r for r in records_on(url + ".dlq.parked")}
    assert set(parked) == {(2,), (5,)}
    assert "unexpected" in parked[(2,)].message and parked[(5,)].error == "ItemTooLargeError"
    for record in (retrying, *parked.values()):
        assert record.payload == bodies[0]  # the signed envelope, so a retry or replay verifies again
        batch = decode(record.payload, TrustStore.of(SIGNER))
        assert batch.changes[record.changes[0]].keys in (key(2), key(3), key(9))


@pytest.mark.aws
@pytest.mark.parametrize("case", ["wrong key schema", "no trusted key matches the stream"])
def test_a_systemic_failure_dead_letters_nothing_and_leaves_the_messages_on_the_queue(
    target: tuple[Any, str], tmp_path: Path, unique: str, case: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url, transient_retries=2)
    if case == "wrong key schema":
        wrong = Change({"id": {"S": "x"}}, Operation.DELETE, Version(1, "cn-north-1", 1))
        bodies = [envelope([put(1), wrong, put(2)], eid="a"), envelope([put(3)], eid="b")]
        reason = "key schema mismatch"
    else:
        bodies = [envelope([put(1)], signer=STRANGER, eid="a"), envelope([put(3)], signer=STRANGER, eid="b")]
        reason = STRANGER.key_id
    send(url, bodies)
    applier = build_applier(cfg, threading.Event())
    try:
        with pytest.raises(SystemicError, match=reason):
            applier.process(applier.source.receive(10, 1.0))
        assert applier.stats.retries == 0 and applier.stats.dead_lettered == 0 and applier.stats.quarantined == 0
        # released, not acked: the same envelopes come back for after the pause
        again = applier.source.receive(10, 1.0)
        assert sorted(d.body for d in again) == sorted(bodies)
    finally:
        applier.close()
    assert records_on(url + ".dlq") == [] and records_on(url + ".dlq.parked") == []


@pytest.mark.aws
def test_a_run_of_envelopes_from_one_unknown_key_stops_the_line_after_the_limit(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url)
    strangers = [envelope([put(100 + i)], signer=STRANGER, eid=f"s{i}") for i in range(25)]
    send(url, [envelope([put(1)], eid="trusted"), *strangers])
    applier = build_applier(cfg, threading.Event())
    try:
        with pytest.raises(SystemicError, match=f"{STRANGER.key_id}.*20 in a row"):
            while True:
                applier.process(applier.source.receive(4, 1.0))
        left = applier.source.receive(100, 1.0)
    finally:
        applier.close()
    limit = applier.unknown_key_run_limit
    assert applier.stats.quarantined == limit - 1  # the stray ones before the rule could tell
    assert len(records_on(url + ".dlq.parked")) == limit - 1
    assert len(left) == len(strangers) - (limit - 1)  # the rest stay on the queue
    assert set(stored(client, table)) == {1}


@pytest.mark.aws
def test_an_envelope_from_an_untrusted_key_is_quarantined_whole(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url)
    body = envelope([put(1)], signer=STRANGER, eid="stranger")
    send(url, [envelope([put(2)], eid="trusted"), body])  # once one verified, a stranger is one bad message
    applier = build_applier(cfg, threading.Event())
    try:
        applier.process(applier.source.receive(10, 1.0))
    finally:
        applier.close()
    assert set(stored(client, table)) == {2}
    (record,) = records_on(url + ".dlq.parked")
    assert (record.kind, record.state, record.payload) == (Kind.ENVELOPE, State.QUARANTINED, body)
    assert STRANGER.key_id in record.message and base64.b64encode(body).decode() in record.encode().decode()
