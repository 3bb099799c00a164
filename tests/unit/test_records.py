"""parse_record: both dialects (boto3 GetRecords and Lambda JSON), every type, keys, versions, errors."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.change import Change, Operation, Position, from_boto_image, to_boto_image
from bridge.errors import RecordError
from bridge.source.records import parse_record, timestamp_us

LAMBDA_EVENT = Path("/work/shared/reference/events/lambda-dynamodb-stream-event.json")
SEQ = "4421584500000000017450439091"
WHEN = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
WHEN_US = 1714564800123456


def boto_record(
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    *,
    keys: dict[str, Any] | None = None,
    event: str | None = None,
    seq: str = SEQ,
    when: Any = WHEN,
) -> dict[str, Any]:
    ddb: dict[str, Any] = {"ApproximateCreationDateTime": when, "SequenceNumber": seq, "SizeBytes": 10}
    ddb["Keys"] = keys if keys is not None else {"id": (new or old or {}).get("id", {"S": "k"})}
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    return {
        "eventID": "e1",
        "eventName": event or ("REMOVE" if new is None else "MODIFY" if old else "INSERT"),
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": ddb,
    }


def to_lambda(record: dict[str, Any]) -> dict[str, Any]:
    """The same record as a Lambda event carries it: epoch seconds, binary as base64 text."""
    out = copy.deepcopy(record)
    ddb = out["dynamodb"]
    ddb["ApproximateCreationDateTime"] = ddb["ApproximateCreationDateTime"].timestamp()
    for name in ("Keys", "NewImage", "OldImage"):
        if name in ddb:
            ddb[name] = from_boto_image(ddb[name])
    out["eventVersion"] = "1.1"
    return out


def parse(record: Any, keys: tuple[str, ...] = ("id",), **kwargs: Any) -> Change:
    return parse_record(record, key_names=keys, origin="site-a", shard_id="shard-1", **kwargs)


# -- the Lambda sample event ------------------------------------------------------------------------


def test_lambda_sample_event_parses() -> None:
    records = json.loads(LAMBDA_EVENT.read_text())["Records"]
    changes = [parse(r, keys=("Id",)) for r in records]
    assert [c.op for c in changes] == [Operation.PUT, Operation.PUT, Operation.DELETE]
    assert all(c.keys == {"Id": {"N": "101"}} for c in changes)
    assert changes[0].new_image == {"Message": {"S": "New item!"}, "Id": {"N": "101"}}
    assert changes[1].new_image == {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}}
    assert changes[2].new_image is None
    assert [c.version.seq for c in changes] == [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert all(c.version.ts_us == 1428537600 * 1_000_000 for c in changes)
    assert all(c.version.origin == "site-a" for c in changes)  # not the record's awsRegion
    assert changes[2].position == Position("shard-1", "4421584500000000017450439093")
    # only the first sample record carries the DynamoDB service identity
    assert [c.by_service for c in changes] == [True, False, False]


# -- every type, both dialects ----------------------------------------------------------------------

ALL_TYPES_BOTO: dict[str, Any] = {
    "id": {"S": "item-1"},
    "s": {"S": "héllo"},
    "n": {"N": "-12.5e3"},
    "b": {"B": b"\x00\xff\x10"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02\x03"]},
    "m": {"M": {"inner": {"B": b"\xfe"}, "deep": {"L": [{"BS": [b"z"]}, {"NULL": True}]}}},
    "l": {"L": [{"S": "x"}, {"N": "1"}, {"BOOL": False}, {"M": {}}]},
    "null": {"NULL": True},
    "bool": {"BOOL": True},
}


@pytest.mark.parametrize("dialect", ["boto3", "lambda"])
def test_every_attribute_type_in_both_dialects(dialect: str) -> None:
    record = boto_record(ALL_TYPES_BOTO)
    if dialect == "lambda":
        record = to_lambda(record)
    change = parse(record)
    assert change.op is Operation.PUT
    assert change.new_image == from_boto_image(ALL_TYPES_BOTO)
    assert change.new_image is not None
    assert change.new_image["b"] == {"B": base64.b64encode(b"\x00\xff\x10").decode()}
    assert to_boto_image(change.new_image) == ALL_TYPES_BOTO
    assert change.version.ts_us == WHEN_US
    assert change.version.seq == int(SEQ)


KEY_VALUES: dict[str, dict[str, Any]] = {"S": {"S": "k1"}, "N": {"N": "42"}, "B": {"B": b"\x00\x01\xfe"}}


@pytest.mark.parametrize("dialect", ["boto3", "lambda"])
@pytest.mark.parametrize("range_type", [None, "S", "N", "B"])
@pytest.mark.parametrize("hash_type", ["S", "N", "B"])
def test_key_types(hash_type: str, range_type: str | None, dialect: str) -> None:
    boto_keys = {"h": KEY_VALUES[hash_type]}
    if range_type:
        boto_keys["r"] = KEY_VALUES[range_type]
    names = tuple(boto_keys)
    item = {**boto_keys, "payload": {"S": "p"}}
    for record in (boto_record(item, keys=boto_keys), boto_record(None, item, keys=boto_keys)):
        change = parse(to_lambda(record) if dialect == "lambda" else record, keys=names)
        assert change.keys == from_boto_image(boto_keys)
        assert list(change.keys) == list(names)


def test_binary_key_taken_from_image_not_from_moto_double_encoded_keys() -> None:
    raw = b"\x00\xff"
    moto_keys = {"h": {"B": base64.b64encode(raw)}}  # moto: the bytes of the base64 text
    item = {"h": {"B": raw}, "x": {"S": "1"}}
    put = parse(boto_record(item, keys=moto_keys), keys=("h",))
    delete = parse(boto_record(None, item, keys=moto_keys), keys=("h",))
    expected = {"h": {"B": base64.b64encode(raw).decode()}}
    assert put.keys == expected
    assert delete.keys == expected
    assert put.key_token == delete.key_token


def test_delete_without_old_image_uses_keys() -> None:
    change = parse(boto_record(None, None, keys={"id": {"N": "7"}}))
    assert change.op is Operation.DELETE
    assert change.keys == {"id": {"N": "7"}}
    assert change.new_image is None


def test_ttl_delete_is_by_service() -> None:
    record = boto_record(None, {"id": {"S": "k"}})
    assert not parse(record).by_service
    record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert parse(record).by_service
    record["userIdentity"] = {"type": "Service", "principalId": "someone.else"}
    assert not parse(record).by_service


def test_sequence_numbers_compare_numerically() -> None:
    short = parse(boto_record({"id": {"S": "k"}}, seq="9" * 21))
    long = parse(boto_record({"id": {"S": "k"}}, seq="1" + "0" * 39))
    assert short.version.seq < long.version.seq
    assert short.version < long.version


# -- timestamps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (WHEN, WHEN_US),
        (dt.datetime(2024, 5, 1, 12, 0, 0, 123456), WHEN_US),  # naive: UTC
        (1714564800, 1714564800_000000),  # seconds (Lambda)
        (1714564800.5, 1714564800_500000),
        (Decimal("1714564800.123456"), WHEN_US),
        (1714564800123, 1714564800_123000),  # milliseconds (Kinesis-for-DynamoDB)
        (1714564800123456, WHEN_US),  # microseconds
        ("1714564800.25", 1714564800_250000),
        ("2024-05-01T12:00:00.123456Z", WHEN_US),
        ("2024-05-01T14:00:00.123456+02:00", WHEN_US),
    ],
)
def test_timestamp_us(value: Any, expected: int) -> None:
    assert timestamp_us(value) == expected


@pytest.mark.parametrize("bad", [True, None, "yesterday", float("nan"), [1]])
def test_timestamp_us_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        timestamp_us(bad)


def test_stream_time_as_lambda_seconds_and_kinesis_milliseconds() -> None:
    item = {"id": {"S": "k"}}
    assert parse(boto_record(item, when=1714564800)).version.ts_us == 1714564800_000000
    assert parse(boto_record(item, when=1714564800123)).version.ts_us == 1714564800_123000


def test_put_uses_timestamp_attribute_when_present() -> None:
    item = {"id": {"S": "k"}, "ts": {"N": "1700000000.5"}}
    assert parse(boto_record(item), timestamp_attribute="ts").version.ts_us == 1700000000_500000
    iso = {"id": {"S": "k"}, "ts": {"S": "2023-11-14T22:13:20Z"}}
    assert parse(boto_record(iso), timestamp_attribute="ts").version.ts_us == 1700000000_000000
    millis = {"id": {"S": "k"}, "ts": {"N": "1700000000123"}}
    assert parse(boto_record(millis), timestamp_attribute="ts").version.ts_us == 1700000000_123000
    missing = {"id": {"S": "k"}}
    assert parse(boto_record(missing), timestamp_attribute="ts").version.ts_us == WHEN_US


def test_delete_beats_the_write_it_deleted() -> None:
    # The item's own timestamp is ahead of the stream clock: the delete still wins.
    future = WHEN_US + 5_000_000
    old = {"id": {"S": "k"}, "ts": {"N": str(Decimal(future) / 1_000_000)}}
    delete = parse(boto_record(None, old), timestamp_attribute="ts")
    put = parse(boto_record(old), timestamp_attribute="ts")
    assert delete.version.ts_us == future + 1
    assert delete.version > put.version
    # The stream clock is ahead: it is used.
    past = {"id": {"S": "k"}, "ts": {"N": "1000000000"}}
    assert parse(boto_record(None, past), timestamp_attribute="ts").version.ts_us == WHEN_US


def test_bad_timestamp_attribute_is_a_record_error() -> None:
    item = {"id": {"S": "k"}, "ts": {"BOOL": True}}
    with pytest.raises(RecordError, match=r"NewImage\.ts.*number or an ISO-8601"):
        parse(boto_record(item), timestamp_attribute="ts")
    with pytest.raises(RecordError, match=r"NewImage\.ts"):
        parse(boto_record({"id": {"S": "k"}, "ts": {"S": "soon"}}), timestamp_attribute="ts")


# -- malformed records --------------------------------------------------------------------------------


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    record = boto_record({"id": {"S": "k"}})
    target = record
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return record


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        (_without(("dynamodb",)), "field 'dynamodb'"),
        (_without(("dynamodb", "SequenceNumber")), "SequenceNumber"),
        (_without(("dynamodb", "ApproximateCreationDateTime")), "ApproximateCreationDateTime"),
        ({**boto_record({"id": {"S": "k"}}), "eventName": "UPSERT"}, "eventName.*UPSERT"),
        (boto_record({"id": {"S": "k"}}, seq="12a"), "SequenceNumber"),
        (boto_record({"id": {"S": "k"}}, seq="1" * 41), "SequenceNumber"),
        (boto_record({"id": {"S": "k"}, "x": {"Q": "1"}}), r"NewImage\.x: unknown attribute type 'Q'"),
        (
            boto_record({"id": {"S": "k"}, "x": {"B": "not base64!"}}),
            r"NewImage\.x: binary value is not valid",
        ),
        (boto_record({"id": {"S": "k"}, "x": {"N": "twelve"}}), r"NewImage\.x: expected a number"),
        (boto_record({"id": {"S": "k"}, "x": {"M": {"y": {"SS": "a"}}}}), r"NewImage\.x\.y: expected a list"),
        (
            boto_record({"id": {"S": "k"}, "x": {"S": "a", "N": "1"}}),
            r"NewImage\.x: expected one typed value",
        ),
        (boto_record({"id": {"S": "k"}, "x": {"BOOL": "yes"}}), r"NewImage\.x: BOOL must hold"),
        (boto_record({"other": {"S": "k"}}), r"key attribute 'id' is missing from dynamodb\.NewImage"),
        (boto_record({"id": {"BOOL": True}}), "key attribute 'id'.*must be S, N or B"),
        (boto_record(None, None, keys={}), r"key attribute 'id' is missing from dynamodb\.Keys"),
    ],
)
def test_malformed_records_raise_record_error(record: dict[str, Any], pattern: str) -> None:
    with pytest.raises(RecordError, match=pattern) as info:
        parse(record)
    assert info.value.raw is record
    assert "eventID='e1'" in str(info.value)


def test_record_error_names_the_sequence_number() -> None:
    record = boto_record({"id": {"S": "k"}, "x": {"Q": "1"}})
    with pytest.raises(RecordError, match=f"SequenceNumber='{SEQ}'"):
        parse(record)


def test_insert_without_new_image_explains_the_stream_view_type() -> None:
    record = boto_record(None, {"id": {"S": "k"}}, event="INSERT")
    with pytest.raises(RecordError, match="stream view type must include new images"):
        parse(record)


@pytest.mark.parametrize("bad", [None, "text", [1, 2], 42])
def test_non_mapping_record(bad: Any) -> None:
    with pytest.raises(RecordError, match="must be a mapping") as info:
        parse(bad)
    assert info.value.raw is bad


# -- round trip of random nested values --------------------------------------------------------------

_names = st.text(min_size=1, max_size=8)
_numbers = st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str)
_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=20)),
    st.builds(lambda n: {"N": n}, _numbers),
    st.builds(lambda b: {"B": b}, st.binary(max_size=20)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda x: {"SS": x}, st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True)),
    st.builds(lambda x: {"NS": x}, st.lists(_numbers, min_size=1, max_size=4, unique=True)),
    st.builds(lambda x: {"BS": x}, st.lists(st.binary(max_size=5), min_size=1, max_size=4, unique=True)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda m: {"M": m}, st.dictionaries(_names, inner, max_size=4)),
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=4)),
    ),
    max_leaves=20,
)
_images = st.dictionaries(_names, _values, max_size=6).map(lambda image: {**image, "id": {"B": b"\x00key"}})


@settings(max_examples=200, deadline=None)
@given(image=_images)
def test_random_images_round_trip(image: dict[str, Any]) -> None:
    from_boto = parse(boto_record(image))
    from_lambda = parse(to_lambda(boto_record(image)))
    assert from_boto == from_lambda
    assert from_boto.new_image is not None
    assert to_boto_image(from_boto.new_image) == image
    assert Change.from_wire(json.loads(json.dumps(from_boto.to_wire()))) == from_boto
