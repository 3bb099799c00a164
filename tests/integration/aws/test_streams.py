"""StreamReader: lineage, checkpoints, expiry, trimming, start positions (scripted); real reads from moto."""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from bridge.change import Operation, from_boto_image
from bridge.errors import DataLossError, SourceError, SystemicError
from bridge.source import Checkpoint, SqliteCheckpointStore, StreamReader, parse_record
from bridge.source.streams import ShardRead
from bridge.state.checkpoints import CheckpointStore
from tests.scripted_streams import ScriptedStreams


class FakeClock:
    """Time that moves only when the reader sleeps, so pacing is tested without waiting or timing."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = SqliteCheckpointStore(tmp_path / "checkpoints.db")
    yield opened
    opened.close()


def reader_for(client: ScriptedStreams, store: CheckpointStore, **kwargs: Any) -> StreamReader:
    clock = FakeClock()
    return StreamReader(client, client.stream_arn, store, clock=clock, sleep=clock.sleep, **kwargs)


def write(client: ScriptedStreams, shard: str, key: str, n: int) -> dict[str, Any]:
    return client.put(shard, {"id": {"S": key}}, {"id": {"S": key}, "n": {"N": str(n)}, "secret": {"S": "s3cr3t"}})


def seq(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [seq(r) for r in records]


def confirm_read(reader: StreamReader, read: ShardRead) -> None:
    reader.confirm(read.shard_id, seq(read.records[-1]) if read.records else None, ended=read.ended)


def drain(reader: StreamReader, *, limit: int = 1000, confirm: bool = True) -> list[dict[str, Any]]:
    """Poll until three polls in a row were idle; return every record in the order read."""
    got: list[dict[str, Any]] = []
    idle = 0
    for _ in range(1000):
        for read in reader.poll(limit):
            assert len(read.records) <= limit
            got.extend(read.records)
            if confirm:
                confirm_read(reader, read)
        idle = idle + 1 if reader.idle else 0
        if idle == 3:
            return got
    raise AssertionError("the stream never went idle")


def all_records(client: ScriptedStreams) -> list[dict[str, Any]]:
    return [r for shard in client.shards for r in client.records_of(shard)]


def assert_per_key_order(got: list[dict[str, Any]]) -> None:
    """Every item's changes arrive in the order they were written (n grows per key)."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in got:
        image = record["dynamodb"]["NewImage"]
        by_key[image["id"]["S"]].append(int(image["n"]["N"]))
    for key, ns in by_key.items():
        assert ns == sorted(ns), key


# -- lineage ------------------------------------------------------------------------------------------


def split_stream(client: ScriptedStreams) -> None:
    """P -> (A, B); A -> (A1, A2). Each key keeps writing in whichever shard now holds it."""
    n = 0

    def burst(shards: list[str]) -> None:
        nonlocal n
        for i in range(8):
            n += 1
            write(client, shards[i % len(shards)], f"k{i}", n)

    client.add_shard("P")
    burst(["P"])
    client.split("P", "A", "B")
    burst(["A", "B"])
    client.split("A", "A1", "A2")
    burst(["A1", "B", "A2", "B"])


@pytest.mark.parametrize("limit", [1000, 3])
def test_parents_are_read_to_their_end_before_children(store: Any, limit: int) -> None:
    client = ScriptedStreams(page_size=2)
    split_stream(client)
    client.shards = dict(reversed(client.shards.items()))  # list children first: order must not matter
    got = drain(reader_for(client, store), limit=limit)

    assert sorted(seqs(got)) == sorted(seqs(all_records(client)))
    assert len(set(seqs(got))) == len(got)
    position = {s: i for i, s in enumerate(seqs(got))}
    for child in ("A", "B", "A1", "A2"):
        parent = client.shards[child].parent_id
        assert parent is not None
        last_parent = max(position[s] for s in seqs(client.records_of(parent)))
        assert all(position[s] > last_parent for s in seqs(client.records_of(child)))
    assert_per_key_order(got)
    finished = {shard for shard, c in store.load(client.stream_arn).items() if c.finished}
    assert finished == {"P", "A"}  # the closed ones, confirmed by drain()


def test_split_while_reading(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(5):
        write(client, "P", f"k{n % 2}", n)
    reader = reader_for(client, store)
    got = drain(reader)
    for n in range(5, 8):
        write(client, "P", f"k{n % 2}", n)
    client.split("P", "A", "B")
    for n in range(8, 14):
        write(client, "A" if n % 2 else "B", f"k{n % 2}", n)
    got += drain(reader)
    parent = seqs(client.records_of("P"))
    assert seqs(got)[: len(parent)] == parent
    assert sorted(seqs(got)) == sorted(seqs(all_records(client)))
    assert len(set(seqs(got))) == len(got)
    assert_per_key_order(got)


def test_ended_shard_is_reported_once_even_without_records(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    write(client, "P", "k", 1)
    reader = reader_for(client, store)
    first = reader.poll()
    assert [(r.shard_id, len(r.records), r.ended) for r in first] == [("P", 1, False)]
    client.close("P")
    second = reader.poll()
    assert [(r.shard_id, r.records, r.ended) for r in second] == [("P", [], True)]
    assert not reader.idle
    assert store.load(client.stream_arn) == {}  # the reader does not mark it finished; confirm does
    reader.confirm("P", seq(first[0].records[0]))
    reader.confirm("P", None, ended=True)
    assert store.load(client.stream_arn)["P"] == Checkpoint(seq(first[0].records[0]), True)
    assert reader.poll() == []
    assert reader.idle


# -- checkpoints and restarts -------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 2, 3, 5, 8])
def test_resume_from_the_sqlite_file_without_gaps_or_duplicates(tmp_path: Path, rounds: int) -> None:
    path = tmp_path / "ckpt.db"
    client = ScriptedStreams()
    split_stream(client)
    first_store = SqliteCheckpointStore(path)
    reader = reader_for(client, first_store)
    delivered: list[dict[str, Any]] = []  # what the transport accepted before the "crash"
    for round_ in range(1, rounds + 1):
        for read in reader.poll(limit=3):
            if round_ < rounds:
                delivered += read.records
                confirm_read(reader, read)
            elif read.records:
                # The last round: the transport took only the first record, then the process died
                # (an end-of-shard in this round is never confirmed).
                delivered.append(read.records[0])
                reader.confirm(read.shard_id, seq(read.records[0]))
    assert delivered
    first_store.close()  # only the file remains

    second_store = SqliteCheckpointStore(path)
    second = reader_for(client, second_store)
    rest = drain(second)
    second_store.close()

    combined = seqs(delivered) + seqs(rest)
    assert len(set(combined)) == len(combined), "duplicates"
    assert sorted(combined) == sorted(seqs(all_records(client))), "gaps"
    assert_per_key_order(delivered + rest)


def test_unconfirmed_records_are_read_again_after_a_restart(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(6):
        write(client, "P", "k", n)
    reader = reader_for(client, store)
    got = reader.poll()[0].records
    reader.confirm("P", seq(got[2]))
    again = drain(reader_for(client, store))
    assert seqs(again) == seqs(got[3:])


def test_rewind_rereads_from_the_last_confirm(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(6):
        write(client, "P", "k", n)
    reader = reader_for(client, store)
    got = reader.poll()[0].records
    reader.confirm("P", seq(got[1]))
    reader.rewind()
    assert seqs(reader.poll()[0].records) == seqs(got[2:])


def test_confirm_never_moves_backwards(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    records = [write(client, "P", "k", n) for n in range(6)]
    reader = reader_for(client, store)
    reader.poll()
    reader.confirm("P", seq(records[4]))
    reader.confirm("P", seq(records[1]))  # a late confirm of an earlier batch
    assert store.load(client.stream_arn)["P"].sequence_number == seq(records[4])
    assert seqs(drain(reader_for(client, store))) == [seq(records[5])]


# -- iterator expiry ----------------------------------------------------------------------------------


def test_expired_iterators_are_reacquired_without_skipping_or_duplicating(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.source.streams")
    client = ScriptedStreams(expire_after_uses=2)
    split_stream(client)
    got = drain(reader_for(client, store), limit=2)
    assert sorted(seqs(got)) == sorted(seqs(all_records(client)))
    assert len(set(seqs(got))) == len(got)
    assert_per_key_order(got)
    assert "expired" in caplog.text
    assert "s3cr3t" not in caplog.text  # no item contents in logs


def test_iterators_expired_while_idle_resume_after_the_last_record_read(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(3):
        write(client, "P", "k", n)
    reader = reader_for(client, store)
    first = reader.poll()[0].records  # read, not confirmed
    client.expire_iterators()
    later = [write(client, "P", "k", n) for n in range(3, 5)]
    assert seqs(drain(reader, confirm=False)) == seqs(later)
    assert seqs(first) + seqs(later) == seqs(client.records_of("P"))
    after = [c for c in client.calls if c[0] == "GetShardIterator"][-1][1]
    assert after["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert after["SequenceNumber"] == seq(first[-1])


# -- trimming -----------------------------------------------------------------------------------------


def trimmed_stream(store: Any) -> tuple[ScriptedStreams, str]:
    """Shard P: 10 records; checkpoint after the 3rd; the first 6 then trimmed away."""
    client = ScriptedStreams()
    client.add_shard("P")
    records = [write(client, "P", "k", n) for n in range(10)]
    store.save(client.stream_arn, "P", seq(records[2]))
    client.trim("P", 6)
    return client, seq(records[2])


def test_trimmed_records_fail_with_data_loss(store: Any) -> None:
    client, checkpoint = trimmed_stream(store)
    with pytest.raises(DataLossError) as info:
        reader_for(client, store).poll()
    message = str(info.value)
    assert "shard P" in message
    assert client.stream_arn in message
    assert checkpoint in message
    assert "oldest" in message
    assert "lost" in message
    assert "--on-trimmed trim-horizon" in message
    assert info.value.exit_code == 7


def test_trimmed_records_continue_from_trim_horizon_when_allowed(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    client, checkpoint = trimmed_stream(store)
    got = drain(reader_for(client, store, on_trimmed="trim-horizon"))
    assert seqs(got) == seqs(client.records_of("P")[6:])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert checkpoint in errors[0].getMessage()
    assert "shard P" in errors[0].getMessage()


def test_trimmed_while_reading_names_the_last_record_read(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(4):
        write(client, "P", "k", n)
    reader = reader_for(client, store)
    got = reader.poll(limit=2)[0].records
    client.trim("P", 3)
    with pytest.raises(DataLossError, match=f"after sequence number {seq(got[-1])}"):
        reader.poll()


def test_shard_trimmed_away_entirely(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    first = write(client, "P", "k", 1)
    write(client, "P", "k", 2)
    client.split("P", "C")
    child = write(client, "C", "k", 3)
    store.save(client.stream_arn, "P", seq(first))
    client.drop("P")
    with pytest.raises(DataLossError, match=f"shard P.*{seq(first)}.*--on-trimmed trim-horizon"):
        reader_for(client, store).poll()
    assert seqs(drain(reader_for(client, store, on_trimmed="trim-horizon"))) == [seq(child)]
    assert "shard P" in caplog.text
    # The accepted gap is recorded: the next default start does not fail again.
    assert drain(reader_for(client, store)) == []


# -- start position -----------------------------------------------------------------------------------


def iterator_types(client: ScriptedStreams) -> dict[str, list[str]]:
    types: dict[str, list[str]] = defaultdict(list)
    for op, kwargs in client.calls:
        if op == "GetShardIterator":
            types[kwargs["ShardId"]].append(kwargs["ShardIteratorType"])
    return types


def test_latest_start_skips_history_but_never_a_new_childs_records(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    write(client, "P", "k", 1)
    client.split("P", "A")
    write(client, "A", "k", 2)
    reader = reader_for(client, store, start_position="latest")
    assert drain(reader) == []
    assert iterator_types(client) == {"A": ["LATEST"]}
    assert store.load(client.stream_arn) == {"P": Checkpoint(None, True), "A": Checkpoint(None, False)}

    fresh = write(client, "A", "k", 3)
    assert seqs(drain(reader, confirm=False)) == [seq(fresh)]

    # Restart before anything was confirmed: still LATEST for A, not its whole history.
    client.calls.clear()
    restarted = reader_for(client, store, start_position="latest")
    assert drain(restarted) == []
    assert iterator_types(client) == {"A": ["LATEST"]}

    # A split found later: its children start at TRIM_HORIZON, so their first records are kept.
    newer = write(client, "A", "k", 4)
    client.split("A", "A1")
    first_child = write(client, "A1", "k", 5)
    assert seqs(drain(restarted)) == [seq(newer), seq(first_child)]
    assert iterator_types(client)["A1"] == ["TRIM_HORIZON"]

    # Once something is confirmed, a restart continues from the checkpoint.
    client.calls.clear()
    last = write(client, "A1", "k", 6)
    assert seqs(drain(reader_for(client, store, start_position="latest"))) == [seq(last)]
    assert iterator_types(client)["A1"] == ["AFTER_SEQUENCE_NUMBER"]


def test_latest_is_ignored_once_the_store_has_checkpoints(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    store.save(client.stream_arn, "gone", None, finished=True)
    history = [write(client, "P", "k", n) for n in range(3)]
    assert seqs(drain(reader_for(client, store, start_position="latest"))) == seqs(history)


# -- discovery, pacing, errors ------------------------------------------------------------------------


def test_describe_stream_is_paginated(store: Any) -> None:
    client = ScriptedStreams(page_size=2)
    for i in range(7):
        client.add_shard(f"S{i}")
        write(client, f"S{i}", f"k{i}", i)
    got = drain(reader_for(client, store))
    assert sorted(seqs(got)) == sorted(seqs(all_records(client)))
    starts = [kw["ExclusiveStartShardId"] for op, kw in client.calls if op == "DescribeStream"]
    assert starts[:4] == [None, "S1", "S3", "S5"]


def test_limit_caps_records_per_poll(store: Any) -> None:
    client = ScriptedStreams()
    for shard in ("S1", "S2"):
        client.add_shard(shard)
        for n in range(5):
            write(client, shard, f"{shard}-k", n)
    reader = reader_for(client, store)
    for _ in range(3):
        reads = reader.poll(limit=3)
        assert sum(len(r.records) for r in reads) <= 3
    with pytest.raises(ValueError):
        reader.poll(limit=0)


def test_empty_shards_are_paced_and_busy_ones_are_not(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    for n in range(4):
        write(client, "P", "k", n)
    clock = FakeClock()
    reader = StreamReader(client, client.stream_arn, store, clock=clock, sleep=clock.sleep)
    reader.poll(limit=2)
    reader.poll(limit=2)
    assert clock.sleeps == []  # records flowing: no waiting
    assert reader.poll() == []  # empty
    assert reader.idle
    calls = len([c for c in client.calls if c[0] == "GetRecords"])
    reader.poll()  # waits out the pause before asking the empty shard again
    assert clock.sleeps and clock.sleeps[-1] == pytest.approx(0.25)
    assert len([c for c in client.calls if c[0] == "GetRecords"]) == calls + 1


def test_throttling_is_retried(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    record = write(client, "P", "k", 1)
    client.fail_next("DescribeStream", "LimitExceededException")
    client.fail_next("GetRecords", "LimitExceededException", times=2)
    clock = FakeClock()
    reader = StreamReader(client, client.stream_arn, store, clock=clock, sleep=clock.sleep)
    assert seqs(reader.poll()[0].records) == [seq(record)]
    assert len(clock.sleeps) == 3


def test_endless_throttling_becomes_a_source_error(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    client.fail_next("DescribeStream", "LimitExceededException", times=100)
    with pytest.raises(SourceError, match="LimitExceededException"):
        reader_for(client, store).poll()


def test_missing_stream_is_systemic_naming_it(store: Any) -> None:
    # It concerns every record: the publisher pauses on it instead of exiting (bridge.observe.pause).
    client = ScriptedStreams()
    client.fail_next("DescribeStream", "ResourceNotFoundException")
    with pytest.raises(SystemicError, match=f"stream {client.stream_arn}.*does the stream exist") as info:
        reader_for(client, store).poll()
    assert info.value.__cause__ is not None


def test_connection_failure_is_a_source_error(store: Any) -> None:
    class Unreachable(ScriptedStreams):
        def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://streams.dynamodb.example")

    client = Unreachable()
    with pytest.raises(SourceError, match=f"stream {client.stream_arn}.*Could not connect") as info:
        reader_for(client, store).poll()
    assert isinstance(info.value.__cause__, EndpointConnectionError)


def test_other_errors_while_reading_are_source_errors(store: Any) -> None:
    client = ScriptedStreams()
    client.add_shard("P")
    write(client, "P", "k", 1)
    client.fail_next("GetRecords", "InternalServerError")
    with pytest.raises(SourceError, match="GetRecords failed"):
        reader_for(client, store).poll()


def test_bad_options_are_config_errors(store: Any) -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="start position"):
        StreamReader(ScriptedStreams(), "arn", store, start_position="now")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on-trimmed"):
        StreamReader(ScriptedStreams(), "arn", store, on_trimmed="skip")  # type: ignore[arg-type]


# -- against the real moto server ---------------------------------------------------------------------

KEY_SCHEMAS = {
    "binary-hash-number-range": (("h", "B"), ("r", "N")),
    "string-hash": (("h", "S"),),
    "number-hash-string-range": (("h", "N"), ("r", "S")),
}
SAMPLE_KEYS: dict[str, list[Any]] = {
    "B": [b"\x00\xffkey", b"\x01"],
    "N": ["17", "-3.5"],
    "S": ["alpha", "beta"],
}


@pytest.mark.aws
@pytest.mark.parametrize("schema", list(KEY_SCHEMAS))
def test_real_stream_from_moto(moto_endpoint: str, unique: str, tmp_path: Path, schema: str) -> None:
    keys = KEY_SCHEMAS[schema]
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    streams = boto3.client("dynamodbstreams", endpoint_url=moto_endpoint, region_name="us-east-1")
    table = ddb.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": n, "KeyType": "HASH" if i == 0 else "RANGE"} for i, (n, _) in enumerate(keys)],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in keys],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    key_names = [k["AttributeName"] for k in table["KeySchema"]]

    def key(i: int) -> dict[str, Any]:
        return {n: {t: SAMPLE_KEYS[t][i]} for n, t in keys}

    item1 = {
        **key(0),
        "s": {"S": "héllo"},
        "n": {"N": "12.5"},
        "b": {"B": b"\x00\x01\xfe"},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2"]},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"inner": {"B": b"\xff"}, "l": {"L": [{"N": "1"}, {"NULL": True}]}}},
        "l": {"L": [{"S": "x"}, {"BOOL": False}, {"M": {"deep": {"BS": [b"z"]}}}]},
        "null": {"NULL": True},
        "bool": {"BOOL": True},
    }
    item2 = {**key(1), "s": {"S": "second"}}
    ddb.put_item(TableName=unique, Item=item1)
    ddb.put_item(TableName=unique, Item=item2)
    ddb.update_item(
        TableName=unique,
        Key=key(0),
        UpdateExpression="SET s = :s",
        ExpressionAttributeValues={":s": {"S": "changed"}},
    )
    ddb.delete_item(TableName=unique, Key=key(1))
    item1_changed = {**item1, "s": {"S": "changed"}}

    store = SqliteCheckpointStore(tmp_path / "ckpt.db")
    reader = StreamReader(streams, table["LatestStreamArn"], store)
    changes = []
    idle = 0
    while idle < 3:
        for read in reader.poll():
            changes += [
                parse_record(r, key_names=key_names, origin="site-a", shard_id=read.shard_id) for r in read.records
            ]
            if read.records:
                reader.confirm(read.shard_id, seq(read.records[-1]), ended=read.ended)
        idle = idle + 1 if reader.idle else 0

    expected = [
        (Operation.PUT, key(0), item1),
        (Operation.PUT, key(1), item2),
        (Operation.PUT, key(0), item1_changed),
        (Operation.DELETE, key(1), None),
    ]
    assert [(c.op, c.keys, c.new_image) for c in changes] == [
        (op, from_boto_image(k), from_boto_image(image) if image else None) for op, k, image in expected
    ]
    assert [c.version.seq for c in changes] == sorted(c.version.seq for c in changes)
    assert changes[0].key_token == changes[2].key_token
    assert changes[1].key_token == changes[3].key_token
    assert all(c.position and c.position.shard_id for c in changes)
    assert not any(c.by_service for c in changes)
    if keys[0][1] == "B":
        assert changes[0].keys["h"] == {"B": base64.b64encode(b"\x00\xffkey").decode()}

    # A second reader on the same checkpoint file has nothing left to read.
    again = StreamReader(streams, table["LatestStreamArn"], store)
    assert again.poll() == [] and again.idle
    store.close()
