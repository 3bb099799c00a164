"""The Kinesis transport: against moto's Kinesis server, plus a script for what moto cannot do.

moto (server mode) gives real PutRecords/GetRecords/ListShards/checkpoint round trips. Resharding,
iterator expiry, partial PutRecords failures and throttling cannot be produced on it (see
tests/scripted_kinesis.py for why); those paths run against a scripted client, or against moto
through a wrapper that fails chosen entries, and each test says which. Round trips up to the limit
and oversize refusal are the conformance kit's
(tests/integration/end_to_end/test_conformance.py); this file covers the rest.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.errors import ConfigError, RecoverableTransportError, TransportError
from bridge.plugin.manager import open_transport
from bridge.state.checkpoints import DynamoDBCheckpointStore, SqliteCheckpointStore
from bridge.transport import Delivery, OutgoingMessage, Transport
from bridge_kinesis import KinesisTransport
from bridge_kinesis.producer import Producer, partition_key
from bridge_kinesis.shards import ShardConsumer
from tests.scripted_kinesis import ARN, ScriptedKinesis

pytestmark = pytest.mark.aws


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def url(moto_endpoint: str, unique: str, tmp_path: Path) -> str:
    return (
        f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&checkpoint={tmp_path / 'checkpoints.sqlite'}"
    )


@pytest.fixture
def transport(url: str) -> Iterator[Transport]:
    t = open_transport(url, "consume")
    yield t
    t.close()


def messages(prefix: str, count: int, size: int = 32, key: str = "pk") -> list[OutgoingMessage]:
    return [OutgoingMessage(f"{prefix}-{i}:".encode().ljust(size, b"."), f"{prefix}-{i}", key) for i in range(count)]


def receive(
    t: Transport | ShardConsumer, count: int, *, ack: bool = True, timeout: float = 20, batch: int = 100
) -> list[Delivery]:
    """Receive until ``count`` deliveries arrived (the wait is a bound, not an assertion)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        new = t.receive(min(batch, count - len(got)), timeout=0.5)
        got += new
        if ack:
            for d in new:
                t.ack(d.handle if isinstance(t, ShardConsumer) else d)  # type: ignore[arg-type]
    return got


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


# -- the data path on moto ------------------------------------------------------------------


def test_publish_is_split_into_calls_within_500_records_and_5_mib(transport: KinesisTransport) -> None:
    many = messages("n", 1200)
    transport.publish(many)
    assert transport._producer is not None
    assert transport._producer.stats.calls == 3  # 500 + 500 + 200
    big = [OutgoingMessage(bytes([i]) * 1_000_000, f"big-{i}", "pk") for i in range(6)]
    transport.publish(big)
    assert transport._producer.stats.calls == 5  # five ~1 MB records fit 5 MiB, the sixth does not
    got = receive(transport, 1206, timeout=60)
    assert bodies(got) == [m.body for m in many + big]


def test_each_partition_key_keeps_its_order_across_shards(moto_endpoint: str, unique: str, tmp_path: Path) -> None:
    url = f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&shards=4&checkpoint={tmp_path}/c.db"
    t = open_transport(url, "consume")
    try:
        keys = [f"origin-{i}/table" for i in range(8)] + ["k" * 300]  # a key too long for Kinesis is hashed
        sent = [m for round_ in range(5) for k in keys for m in messages(f"{k[:9]}.{round_}", 4, key=k)]
        t.publish(sent[:90])
        t.publish(sent[90:])
        got = receive(t, len(sent), timeout=60)
    finally:
        t.close()
    assert sorted(bodies(got)) == sorted(m.body for m in sent)
    for key in keys:
        mine = [m.body for m in sent if m.partition_key == key]
        assert [b for b in bodies(got) if b in set(mine)] == mine, f"partition {key[:20]} out of order"
    assert len({d.handle.shard_id for d in got}) > 1  # really spread over several shards
    assert partition_key("k" * 300) != "k" * 300 and len(partition_key("k" * 300)) <= 256


def test_create_false_refuses_a_missing_stream(moto_endpoint: str, unique: str) -> None:
    t = open_transport(f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&create=false", "publish")
    with pytest.raises(ConfigError, match=f"Kinesis stream '{unique}' does not exist"):
        t.publish(messages("x", 1))


def test_bad_urls_are_named() -> None:
    with pytest.raises(ConfigError, match="region is required"):
        open_transport("kinesis://stream", "publish")
    with pytest.raises(ConfigError, match="stream name"):
        open_transport("kinesis://bad%20name?region=us-west-2", "publish")
    with pytest.raises(ConfigError, match="shards must be"):
        open_transport("kinesis://s?region=us-west-2&shards=lots", "publish")


def test_resharding_on_moto_loses_nothing(url: str, moto_endpoint: str, unique: str) -> None:
    """The real thing first: moto lists the children after UpdateShardCount, but keeps writing to the
    closed parent and never ends it (see tests/scripted_kinesis.py), so lineage itself is tested with
    the script below; here the consumer must simply not stumble over the new listing."""
    t = open_transport(url, "consume")
    try:
        sent = messages("before", 10)
        t.publish(sent)
        got = receive(t, 5, batch=5)
        client = boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-west-2")
        client.update_shard_count(StreamName=unique, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
        assert len(client.list_shards(StreamName=unique)["Shards"]) == 3
        more = messages("after", 10)
        t.publish(more)
        got += receive(t, 15)
    finally:
        t.close()
    assert bodies(got) == [m.body for m in sent + more]


# -- acks are checkpoints --------------------------------------------------------------------


def test_checkpoint_moves_only_over_contiguous_acks(url: str) -> None:
    sent = messages("c", 6)
    first = open_transport(url, "consume")
    first.publish(sent)
    held = receive(first, 6, ack=False)
    for i in (0, 1, 3):  # 2 is still being applied
        first.ack(held[i])
    first.close()

    second = open_transport(url, "consume")
    again = receive(second, 4)
    assert bodies(again) == [m.body for m in sent[2:]]  # 3 comes back too: the checkpoint stopped at 1
    assert second.receive(10, timeout=1) == []
    second.close()
    third = open_transport(url, "consume")
    assert third.receive(10, timeout=1) == []
    third.close()


def test_release_hands_a_delivery_back_and_holds_the_checkpoint(url: str) -> None:
    sent = messages("r", 3)
    t = open_transport(url, "consume")
    t.publish(sent)
    first, second, third = receive(t, 3, ack=False)
    t.release(first)
    t.ack(second)
    t.ack(third)
    [back] = t.receive(10, timeout=1)
    assert (back.body, back.redelivered) == (first.body, True)
    t.close()  # `back` was never acked: the checkpoint cannot have passed it
    reopened = open_transport(url, "consume")
    assert bodies(receive(reopened, 3)) == [m.body for m in sent]
    reopened.close()


def test_a_killed_consumer_loses_nothing_it_did_not_ack(url: str, tmp_path: Path) -> None:
    sent = messages("k", 6)
    publisher = open_transport(url, "publish")
    publisher.publish(sent)
    publisher.close()
    child = textwrap.dedent(f"""
        import sys, time
        from bridge.plugin.manager import open_transport
        t = open_transport({url!r}, "consume")
        got = []
        while len(got) < 6:
            got += t.receive(6 - len(got), timeout=1)
        for d in got[:3]:
            t.ack(d)
        t.receive(1, timeout=0)  # stores the checkpoint
        print("holding", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    survivor = open_transport(url, "consume")
    try:
        got = receive(survivor, 3)
        assert bodies(got) == [m.body for m in sent[3:]]
        assert survivor.receive(10, timeout=1) == []
    finally:
        survivor.close()


def test_checkpoints_in_a_dynamodb_table(moto_endpoint: str, unique: str) -> None:
    url = f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&checkpoint=dynamodb://{unique}-cp"
    sent = messages("d", 4)
    first = open_transport(url, "consume")
    first.publish(sent)
    held = receive(first, 4, ack=False)
    first.ack(held[0])
    first.ack(held[1])
    first.close()
    second = open_transport(url, "consume")
    assert bodies(receive(second, 2)) == [m.body for m in sent[2:]]
    second.close()
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    [item] = ddb.scan(TableName=f"{unique}-cp")["Items"]
    assert item["stream_id"]["S"].endswith(f":stream/{unique}")


def test_kinesis_sized_sequence_numbers_checkpoint_in_both_stores(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    older = "49590338271490256608559692538361571095921575989136588898"
    newer = "49590338271490256608559692540925702759324208523137515618"
    for store in (SqliteCheckpointStore(tmp_path / "cp.sqlite"), DynamoDBCheckpointStore(ddb, f"{unique}-seq")):
        store.save("stream", "shard", "9" * 40)  # the longest DynamoDB Streams number sorts below both
        store.save("stream", "shard", newer)
        store.save("stream", "shard", older)  # a late confirm never moves it back
        assert store.load("stream")["shard"].sequence_number == newer
        store.close()


# -- PutRecords partial failures (moto behind a wrapper that fails chosen entries) -------------


class FailingEntries:
    """The real moto client, except that chosen entries of a call fail as Kinesis reports it:
    not written, with an ErrorCode in their result. moto itself never fails an entry."""

    def __init__(self, client: Any, failures: list[dict[int, str]]) -> None:
        self._client = client
        self.failures = failures  # per call: entry index -> error code
        self.calls: list[int] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        plan = self.failures.pop(0) if self.failures else {}
        self.calls.append(len(Records))
        results: list[dict[str, Any]] = []
        for i, entry in enumerate(Records):
            if i in plan:
                results.append({"ErrorCode": plan[i], "ErrorMessage": "scripted"})
            else:
                results += self._client.put_records(StreamName=StreamName, Records=[entry])["Records"]
        return {"FailedRecordCount": len(plan), "Records": results}


def stream_bodies(client: Any, stream: str) -> list[bytes]:
    shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    it = client.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [bytes(r["Data"]) for r in client.get_records(ShardIterator=it)["Records"]]


def test_partial_failure_resends_only_the_failed_records(moto_endpoint: str, unique: str) -> None:
    client = boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-west-2")
    client.create_stream(StreamName=unique, ShardCount=1)
    flaky = FailingEntries(
        client,
        [
            {2: "ProvisionedThroughputExceededException", 5: "InternalFailure"},
            {1: "ProvisionedThroughputExceededException"},
        ],
    )
    producer = Producer(flaky, unique, "test", sleep=lambda _: None)
    sent = messages("p", 8)
    producer.put(sent)
    assert flaky.calls == [8, 2, 1]  # then only the failed ones, then the one that failed again
    assert producer.stats.retried_records == 3
    stored = stream_bodies(client, unique)
    assert sorted(stored) == sorted(m.body for m in sent)  # each exactly once
    # Kinesis does not order under partial failure: the retried records land last.
    assert stored[-2:] == [sent[2].body, sent[5].body]


def test_a_refused_record_is_a_transport_error_and_persistent_throttling_goes_to_core(
    moto_endpoint: str, unique: str
) -> None:
    client = boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-west-2")
    client.create_stream(StreamName=unique, ShardCount=1)
    refused = Producer(FailingEntries(client, [{0: "KMSAccessDeniedException"}]), unique, "test", sleep=lambda _: None)
    with pytest.raises(TransportError, match="KMSAccessDeniedException") as info:
        refused.put(messages("f", 2))
    assert not isinstance(info.value, RecoverableTransportError)
    throttled = Producer(
        FailingEntries(client, [{0: "ProvisionedThroughputExceededException"}] * 3),
        unique,
        "test",
        attempts=3,
        sleep=lambda _: None,
    )
    with pytest.raises(RecoverableTransportError, match="still failing after 3 calls"):
        throttled.put(messages("t", 2))


# -- lineage, expiry, throttling (scripted: moto cannot reshard, expire or throttle) ------------


def consumer(kinesis: ScriptedKinesis, store: SqliteCheckpointStore, read_ahead: int = 3) -> ShardConsumer:
    # A small read-ahead: many GetRecords calls, so lineage and expiry are exercised mid-shard.
    return ShardConsumer(
        kinesis,
        "scripted",
        ARN,
        store,
        "scripted",
        poll_interval=0.2,
        read_ahead=read_ahead,
        refresh_s=0.5,
        sleep=lambda s: time.sleep(min(s, 0.05)),
    )


def put(kinesis: ScriptedKinesis, tag: str, count: int, keys: int = 6) -> list[OutgoingMessage]:
    sent = [OutgoingMessage(f"{tag}-{i}".encode(), f"{tag}-{i}", f"key-{i % keys}") for i in range(count)]
    Producer(kinesis, "scripted", "scripted").put(sent)
    return sent


def assert_per_key_order(sent: list[OutgoingMessage], got: list[Delivery]) -> None:
    arrival = list(dict.fromkeys(bodies(got)))  # first arrivals
    assert sorted(arrival) == sorted(m.body for m in sent), "lost or invented records"
    for key in {m.partition_key for m in sent}:
        mine = [m.body for m in sent if m.partition_key == key]
        assert [b for b in arrival if b in set(mine)] == mine, f"{key} out of order"


def test_split_and_merge_keep_each_keys_order_and_lose_nothing(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis(shards=1)
    store = SqliteCheckpointStore(tmp_path / "cp.sqlite")
    reader = consumer(kinesis, store, read_ahead=7)  # a parent's last records wait in the buffer
    sent = put(kinesis, "before", 20)
    got = receive(reader, 10)
    a, b = kinesis.split("shardId-000000000000")
    sent += put(kinesis, "split", 30)
    merged = kinesis.merge(a, b)
    sent += put(kinesis, "merged", 20)
    got += receive(reader, len(sent) - 10, batch=4)  # small receives: the parent takes several

    assert_per_key_order(sent, got)
    assert len(got) == len(sent)
    reads = [c for c in kinesis.calls if c.startswith("GetRecords")]
    last_parent = max(i for i, c in enumerate(reads) if c.endswith("shardId-000000000000"))
    assert all(not c.endswith((a, b)) for c in reads[:last_parent])  # the parent was read to its end first
    last_child = max(i for i, c in enumerate(reads) if c.endswith((a, b)))
    assert all(not c.endswith(merged) for c in reads[:last_child])  # and both children before the merge
    reader.receive(1, timeout=0)  # stores the checkpoints the acks moved
    stored = store.load(ARN)
    assert stored["shardId-000000000000"].finished and stored[a].finished and stored[b].finished
    assert not stored[merged].finished and len(stored[merged].sequence_number or "") == 56


def test_a_restart_part_way_through_a_split_resumes_from_the_checkpoints(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis(shards=1)
    store = SqliteCheckpointStore(tmp_path / "cp.sqlite")
    sent = put(kinesis, "before", 12)
    kinesis.split("shardId-000000000000")
    sent += put(kinesis, "after", 24)
    first = consumer(kinesis, store, read_ahead=5)
    held = receive(first, 20, ack=False, batch=4)  # the whole parent, and some of the children
    for d in held[:8]:  # acked: the parent's first 8 only
        first.ack(d.handle)
    first.flush()
    # a crash: the next consumer starts from the stored checkpoints
    second = consumer(kinesis, store, read_ahead=5)
    again = receive(second, len(sent) - 8, batch=3)

    assert bodies(again)[:4] == [m.body for m in sent[8:12]]  # the parent's unacked tail first
    assert_per_key_order(sent, held[:8] + again)
    assert second.receive(10, timeout=0.3) == []


def test_expired_iterators_are_replaced_after_the_last_record_read(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis(shards=1, expire_after_uses=2)
    reader = consumer(kinesis, SqliteCheckpointStore(tmp_path / "cp.sqlite"))
    sent = put(kinesis, "e", 30, keys=1)
    got = receive(reader, 30, batch=4)
    assert bodies(got) == [m.body for m in sent]  # nothing skipped, nothing twice
    renewed = [c for c in kinesis.calls if "AFTER_SEQUENCE_NUMBER" in c]
    assert renewed and all(c.rsplit(":", 1)[1] in {d.handle.sequence_number for d in got} for c in renewed)


def test_a_throttled_shard_waits_while_the_others_are_read(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis(shards=2)
    reader = consumer(kinesis, SqliteCheckpointStore(tmp_path / "cp.sqlite"))
    sent = put(kinesis, "t", 40, keys=8)
    kinesis.throttle.add("shardId-000000000000")
    first = reader.receive(100, timeout=0.1)
    assert first and {d.handle.shard_id for d in first} == {"shardId-000000000001"}
    for d in first:
        reader.ack(d.handle)
    rest = receive(reader, 40 - len(first))
    assert_per_key_order(sent, first + rest)


def test_read_ahead_serves_small_receives_from_one_get_records(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis(shards=1)
    reader = consumer(kinesis, SqliteCheckpointStore(tmp_path / "cp.sqlite"), read_ahead=100)
    sent = put(kinesis, "a", 60, keys=1)
    got = receive(reader, 60, batch=4)
    assert bodies(got) == [m.body for m in sent]
    assert sum(c.startswith("GetRecords") for c in kinesis.calls) == 1  # 15 receives, one call
    reader.receive(1, timeout=0)
    [(_, stored)] = reader._store.load(ARN).items()
    assert stored.sequence_number == got[-1].handle.sequence_number
