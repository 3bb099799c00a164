"""GetRecords taken raw (bridge.source.rawread) gives byte for byte the envelopes the typed path gave.

A real botocore client is served canned HTTP answers (a ``before-send`` hook: no network), once as
botocore parses them and once through :func:`read_raw`. Each record goes through the real
``parse_record`` and is encoded into a signed envelope: the two envelopes must be identical bytes.
The records are the record-parsing tests' own: every attribute type, every key type (binary keys,
and moto's double-encoded binary ``Keys``), random nested images, and the timestamp shapes
GetRecords sends (whole and fractional epoch seconds, exponent notation).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from hypothesis import given, settings

from bridge.envelope import Batch, Signer, encode
from bridge.source.rawread import read_raw
from bridge.source.records import parse_record
from tests.unit.test_records import ALL_TYPES_BOTO, KEY_VALUES, WHEN, _images, boto_record

SIGNER = Signer.from_seed(bytes(32))


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def client(body: bytes, status: int = 200, raw: bool = False) -> Any:
    c = boto3.client(
        "dynamodbstreams",
        region_name="us-east-1",
        endpoint_url="http://streams.invalid",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

    def answer(request: Any, **_: Any) -> AWSResponse:
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "r"}
        return AWSResponse(request.url, status, headers, _Body(body))

    c.meta.events.register("before-send.dynamodb-streams.GetRecords", answer)
    if raw:
        assert read_raw(c)
    return c


def wire(record: dict[str, Any], when: str | None = None) -> dict[str, Any]:
    """A boto3-form record as the service sends it: binary as base64 text, time in epoch seconds."""

    def value(v: Any) -> Any:
        ((tag, inner),) = v.items()
        if tag == "B":
            return {"B": base64.b64encode(inner).decode()}
        if tag == "BS":
            return {"BS": [base64.b64encode(x).decode() for x in inner]}
        if tag == "M":
            return {"M": {k: value(x) for k, x in inner.items()}}
        if tag == "L":
            return {"L": [value(x) for x in inner]}
        return v

    out = copy.deepcopy(record)
    ddb = out["dynamodb"]
    ddb["ApproximateCreationDateTime"] = "@WHEN@" if when else ddb["ApproximateCreationDateTime"].timestamp()
    for name in ("Keys", "NewImage", "OldImage"):
        if name in ddb:
            ddb[name] = {k: value(v) for k, v in ddb[name].items()}
    return out


def body(records: list[dict[str, Any]], when: str | None = None) -> bytes:
    text = orjson.dumps({"Records": records, "NextShardIterator": "next"})
    return text.replace(b'"@WHEN@"', when.encode()) if when else text


def envelopes(payload: bytes, keys: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The envelope of the answer's records read typed, and read raw."""
    out = []
    for raw in (False, True):
        answer = client(payload, raw=raw).get_records(ShardIterator="it")
        assert answer["NextShardIterator"] == "next"
        changes = tuple(
            parse_record(r, key_names=keys, origin="site-a", timestamp_attribute="ts", shard_id="shard-1")
            for r in answer["Records"]
        )
        out.append(encode(Batch("envelope-1", "site-a", "table", 0, changes), SIGNER))
    return out[0], out[1]


def test_every_attribute_type_is_byte_identical() -> None:
    records = [
        wire(boto_record(ALL_TYPES_BOTO)),
        wire(boto_record(ALL_TYPES_BOTO, {**ALL_TYPES_BOTO, "s": {"S": "old"}})),
        wire(boto_record(None, ALL_TYPES_BOTO)),
    ]
    typed, raw = envelopes(body(records), ("id",))
    assert typed == raw
    # and the raw path really skipped botocore's parsing: binary stays base64 text
    new = client(body(records), raw=True).get_records(ShardIterator="it")["Records"][0]["dynamodb"]["NewImage"]
    assert new["b"] == {"B": base64.b64encode(b"\x00\xff\x10").decode()}
    typed_new = client(body(records)).get_records(ShardIterator="it")["Records"][0]["dynamodb"]["NewImage"]
    assert typed_new["b"] == {"B": b"\x00\xff\x10"}


@pytest.mark.parametrize("range_type", [None, "S", "N", "B"])
@pytest.mark.parametrize("hash_type", ["S", "N", "B"])
def test_every_key_type_is_byte_identical(hash_type: str, range_type: str | None) -> None:
    keys = {"h": KEY_VALUES[hash_type], **({"r": KEY_VALUES[range_type]} if range_type else {})}
    item = {**keys, "payload": {"S": "p"}}
    records = [wire(boto_record(item, keys=keys)), wire(boto_record(None, item, keys=keys))]
    records.append(wire(boto_record(None, None, keys=keys)))  # a delete with only Keys (KEYS_ONLY-like)
    typed, raw = envelopes(body(records), tuple(keys))
    assert typed == raw


def test_moto_double_encoded_binary_keys_are_byte_identical() -> None:
    raw_key = b"\x00\xff"
    moto_keys = {"h": {"B": base64.b64encode(raw_key)}}  # the bytes of the base64 text
    item = {"h": {"B": raw_key}, "x": {"S": "1"}}
    records = [wire(boto_record(item, keys=moto_keys)), wire(boto_record(None, item, keys=moto_keys))]
    typed, raw = envelopes(body(records), ("h",))
    assert typed == raw


@pytest.mark.parametrize("when", ["1714564800", "1714564800.0", "1714564800.123456", "1.7145648E9", "1.7145648001E9"])
def test_timestamp_shapes_are_byte_identical(when: str) -> None:
    item = {"id": {"S": "k"}, "x": {"N": "1"}}
    records = [wire(boto_record(item), when), wire(boto_record(None, item), when)]
    typed, raw = envelopes(body(records, when), ("id",))
    assert typed == raw


def test_timestamp_attribute_and_stream_time_as_the_typed_path_reads_them() -> None:
    item = {"id": {"S": "k"}, "ts": {"N": "1714564800123"}}
    records = [wire(boto_record(item)), wire(boto_record(None, item))]
    typed, raw = envelopes(body(records), ("id",))
    assert typed == raw
    answer = client(body(records), raw=True).get_records(ShardIterator="it")
    assert answer["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] == WHEN
    assert isinstance(answer["Records"][0]["dynamodb"]["ApproximateCreationDateTime"], dt.datetime)


@settings(max_examples=100, deadline=None)
@given(image=_images)
def test_random_images_are_byte_identical(image: dict[str, Any]) -> None:
    records = [wire(boto_record(image)), wire(boto_record(None, image))]
    typed, raw = envelopes(body(records), ("id",))
    assert typed == raw


@pytest.mark.parametrize(
    "code", ["ExpiredIteratorException", "TrimmedDataAccessException", "ResourceNotFoundException"]
)
def test_errors_are_still_botocores(code: str) -> None:
    error = orjson.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "m"})
    with pytest.raises(ClientError) as caught:
        client(error, status=400, raw=True).get_records(ShardIterator="it")
    assert caught.value.response["Error"]["Code"] == code


def test_a_scripted_client_is_left_alone() -> None:
    assert not read_raw(object())
