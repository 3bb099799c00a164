"""Bad input never gets applied and is never lost: it lands on NAME.dlq with its bytes and reason.

Real RabbitMQ for the queue and its dead-letter queue, moto's server for the target table.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bridge.change import Change, Operation, Version
from bridge.config import ApplyConfig
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.demo.workload import create_table
from bridge.envelope import Batch, Compression, Signer, TrustStore, decode, encode
from bridge.plugin.manager import open_transport
from bridge.publish.loop import Publisher
from bridge.transport import OutgoingMessage
from bridge.transport.reliable import ReliableTransport
from bridge.wiring import build_applier
from tests.helpers import drain_failures

SIGNER = Signer.from_seed(bytes(range(32)))
STRANGER = Signer.from_seed(bytes(32))


def key(i: int) -> dict[str, Any]:
    return {"tenant": {"S": "bad-input"}, "user_id": {"N": str(i)}}


def put(i: int, **attrs: Any) -> Change:
    return Change(key(i), Operation.PUT, Version(1_000_000 + i, "cn-north-1", i), {**key(i), **attrs})


def envelope(changes: list[Change], signer: Signer = SIGNER, eid: str = "e") -> bytes:
    return encode(Batch(eid, "cn-north-1", "users", 0, tuple(changes)), signer, Compression.ZSTD)


@pytest.fixture
def target_setup(moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path) -> dict[str, Any]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "bridge.pub").write_bytes(SIGNER.public_pem())
    cfg = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        trusted_keys=tmp_path / "trusted",
        accept_tables=["users"],  # the envelopes above come from a table named users
        transport=f"{amqp_url}?queue={unique}",
        quarantine_dir=tmp_path / "q",
    )
    return {"client": client, "cfg": cfg, "url": cfg.transport, "dlq": f"{amqp_url}?queue={unique}.dlq"}


def send(url: str, bodies: list[bytes]) -> None:
    transport = open_transport(url, "publish")
    try:
        transport.publish([OutgoingMessage(b, f"m{i}", "p") for i, b in enumerate(bodies)])
    finally:
        transport.close()


def stored_keys(client: Any, table: str) -> set[int]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {int(i["user_id"]["N"]) for i in items}


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_bad_envelopes_and_changes_are_dead_lettered_never_applied(target_setup: dict[str, Any]) -> None:
    good = envelope([put(1, name={"S": "ok"})], eid="good")
    valid = envelope([put(2, name={"S": "should never land"})], eid="victim")
    tampered = bytearray(valid)
    tampered[len(tampered) // 2] ^= 0x01
    future = bytearray(valid)
    future[4] = 99  # format version byte
    bad_envelopes = {
        "tampered": bytes(tampered),
        "unknown key id": envelope([put(3)], signer=STRANGER, eid="stranger"),
        "garbage": b"this is not an envelope at all",
        "truncated": valid[: len(valid) // 2],
        "unknown version": bytes(future),
        "empty": b"",
    }
    poison = envelope(
        [
            put(4, name={"S": "fine"}),
            put(5, blob={"S": "x" * 420_000}),  # over DynamoDB's 400 KB item limit
            put(6, blob={"B": "this is not base64!"}),  # signed, still unusable (a wrong key schema pauses)
            put(7, name={"S": "also fine"}),
        ],
        eid="poison",
    )
    send(target_setup["url"], [good, *bad_envelopes.values(), poison, good])  # good twice: a redelivery

    applier = build_applier(target_setup["cfg"], threading.Event())
    try:
        stats = applier.run(until_idle=2.0)
    finally:
        applier.close()

    cfg = target_setup["cfg"]
    assert stored_keys(target_setup["client"], cfg.target_table) == {1, 4, 7}
    assert stats.applied == 3
    assert stats.quarantined == len(bad_envelopes)
    assert stats.dead_lettered == 2
    assert stats.duplicate_envelopes == 1

    # parked and quarantined records wait on the parked queue beside the retry queue
    records = drain_failures(target_setup["dlq"] + ".parked", expect=len(bad_envelopes) + 2)
    quarantined = [r for r in records if r.kind is Kind.ENVELOPE]
    assert sorted(r.payload for r in quarantined) == sorted(bad_envelopes.values())  # original bytes kept
    assert all(r.state is State.QUARANTINED for r in quarantined)
    reasons = {r.payload: f"{r.error}: {r.message}" for r in quarantined}
    assert "SignatureError" in reasons[bad_envelopes["tampered"]]
    assert STRANGER.key_id in reasons[bad_envelopes["unknown key id"]]
    assert "UnsupportedVersionError" in reasons[bad_envelopes["unknown version"]]
    assert "99" in reasons[bad_envelopes["unknown version"]]
    assert "truncated" in reasons[bad_envelopes["truncated"]].lower()

    # a failed change is kept as the signed envelope it came in plus its index there
    changes = {}
    for r in records:
        if r.kind is Kind.CHANGES:
            (index,) = r.changes
            failed = decode(r.payload, TrustStore.of(SIGNER)).changes[index]
            changes[failed.keys["user_id"]["N"]] = r
    assert set(changes) == {"5", "6"}
    assert changes["6"].state is State.PARKED and "unexpected" in changes["6"].message
    assert changes["5"].state is State.PARKED and changes["5"].envelope_id == "poison"
    assert not cfg.quarantine_dir.exists()  # all went to the DLQ, none needed the local fallback


@dataclass
class _Read:
    shard_id: str
    records: list[dict[str, Any]]
    ended: bool = False


class ListReader:
    """Stands in for StreamReader: the publisher's handling of what it reads is under test here,
    and a real stream cannot be made to hold malformed records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.pending = [_Read("shard-1", records)]
        self.confirmed: list[tuple[str, str | None, bool]] = []

    def poll(self, limit: int = 1000) -> list[_Read]:
        out, self.pending = self.pending, []
        return out

    def confirm(self, shard_id: str, sequence_number: str | None, ended: bool = False) -> None:
        self.confirmed.append((shard_id, sequence_number, ended))


def stream_record(seq: int, event: str = "INSERT", **image: Any) -> dict[str, Any]:
    new = {**key(seq), **image}
    return {
        "eventID": f"ev{seq}",
        "eventName": event,
        "eventVersion": "1.1",
        "awsRegion": "cn-north-1",
        "dynamodb": {
            "Keys": key(seq),
            "NewImage": new,
            "SequenceNumber": f"{seq:021d}",
            "SizeBytes": 100,
            "ApproximateCreationDateTime": 1_700_000_000,
        },
    }


@pytest.mark.rabbitmq
def test_malformed_stream_records_are_parked_and_the_rest_published(amqp_url: str, unique: str, tmp_path: Path) -> None:
    records: list[Any] = [
        stream_record(1, name={"S": "ok"}),
        stream_record(2, event="TRUNCATE"),  # unknown eventName
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": f"{3:021d}"}},  # no keys, no image
        stream_record(4, name={"X": "what type is this"}),  # unknown attribute type
        stream_record(5, name={"S": "ok too"}),
    ]
    url = f"{amqp_url}?queue={unique}"
    reader = ListReader(records)
    main = ReliableTransport(open_transport(url, "publish"))
    dlq = ReliableTransport(open_transport(f"{amqp_url}?queue={unique}.dlq", "dlq"))
    publisher = Publisher(
        reader,
        main,
        SIGNER,
        Parker(dlq, tmp_path / "q", opener=open_transport),  # type: ignore[arg-type]
        table="users",
        key_names=("tenant", "user_id"),
        origin="cn-north-1",
    )
    try:
        stats = publisher.run(until_idle=0.2)
    finally:
        publisher.close()
    assert stats.bad_records == 3 and stats.changes == 2
    # the checkpoint moved past the bad records only because they were parked first
    assert reader.confirmed[-1] == ("shard-1", f"{5:021d}", False)

    consumer = open_transport(url, "consume")
    try:
        got = consumer.receive(10, timeout=5)
        batches = [decode(d.body, TrustStore.of(SIGNER)) for d in got]
    finally:
        consumer.close()
    published = [c.keys["user_id"]["N"] for b in batches for c in b.changes]
    assert published == ["1", "5"]

    parked = drain_failures(f"{amqp_url}?queue={unique}.dlq.parked", expect=3)
    assert [r.kind for r in parked] == [Kind.RECORD] * 3
    assert [orjson.loads(r.payload) for r in parked] == records[1:4]  # the original record, whole
    messages = " | ".join(r.message for r in parked)
    assert "TRUNCATE" in messages and "X" in messages


def test_change_too_large_for_the_transport_is_parked_not_sent(tmp_path: Path) -> None:
    url = f"memory://small-{time.monotonic_ns()}"
    transport = open_transport(url, "publish")
    transport.max_message_bytes = 4096  # type: ignore[misc]  # a broker with a small limit
    dlq = open_transport(url + "-dlq", "dlq")
    reader = ListReader(
        [
            stream_record(1, name={"S": "small"}),
            stream_record(2, blob={"B": base64.b64encode(os.urandom(9000)).decode()}),
            stream_record(3, name={"S": "small"}),
        ]
    )
    publisher = Publisher(
        reader,
        ReliableTransport(transport),
        SIGNER,  # type: ignore[arg-type]
        Parker(ReliableTransport(dlq), tmp_path / "q", opener=open_transport),
        table="users",
        key_names=("tenant", "user_id"),
        origin="o",
    )
    stats = publisher.run(until_idle=0.1)
    assert stats.oversize == 1 and stats.changes == 2
    sent = [
        c.keys["user_id"]["N"] for d in transport.receive(10, 1) for c in decode(d.body, TrustStore.of(SIGNER)).changes
    ]
    assert sent == ["1", "3"]
    parked_queue = open_transport(url + "-dlq.parked", "dlq")
    (parked,) = [FailureRecord.decode(d.body) for d in parked_queue.receive(10, 1)]
    assert parked.error == "MessageTooLargeError" and "4096" in parked.message
    assert Change.from_wire(orjson.loads(parked.payload)).keys == key(2)
