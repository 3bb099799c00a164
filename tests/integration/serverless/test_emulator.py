"""The event source mapping emulator keeps the contract the handlers are tested against.

Scripted handlers (plain functions: what is under test here is the emulator) over a real Kinesis
stream and SQS queue on moto.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.serverless.conftest import Side
from tests.integration.serverless.emulator import Function, SqsMapping, StreamMapping

pytestmark = pytest.mark.aws


def stream_of(side: Side, name: str, n: int) -> str:
    _, arn = side.kinesis(name)
    kinesis = side.client("kinesis")
    kinesis.put_records(StreamName=name, Records=[{"Data": str(i).encode(), "PartitionKey": "k"} for i in range(n)])
    return arn


def numbers(event: dict[str, Any]) -> list[int]:
    return [int(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]


def test_a_stream_resumes_at_the_lowest_reported_failure(make_side: Callable[..., Side], unique: str) -> None:
    side = make_side("us-east-1", stream=False)
    arn = stream_of(side, unique, 10)
    seen: list[list[int]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        got = numbers(event)
        seen.append(got)
        if len(seen) == 1:  # the first time: 6 and 4 fail; the mapping resumes at 4
            failed = [
                r["kinesis"]["sequenceNumber"]
                for r in event["Records"]
                if int(base64.b64decode(r["kinesis"]["data"])) in (6, 4)
            ]
            return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}
        return {"batchItemFailures": []}

    StreamMapping(
        side.client("kinesis"), "kinesis", arn, Function(handler, {}), region="us-east-1", batch_size=8
    ).drain()
    assert seen == [[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7], [8, 9]]


def test_bisect_then_retries_then_on_failure(make_side: Callable[..., Side], unique: str) -> None:
    side = make_side("us-east-1", stream=False)
    arn = stream_of(side, unique, 4)
    seen: list[list[int]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        seen.append(numbers(event))
        if 2 in numbers(event):
            raise RuntimeError("poison")
        return None

    mapping = StreamMapping(
        side.client("kinesis"), "kinesis", arn, Function(handler, {}), region="us-east-1", max_retries=2
    )
    report = mapping.drain()
    assert seen == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [2], [2], [3]]
    assert [(f["batchSize"], f["condition"]) for f in report.on_failure] == [(1, "RetryAttemptsExhausted")]


def test_sqs_returns_only_the_named_messages(make_side: Callable[..., Side], unique: str) -> None:
    side = make_side("us-east-1", stream=False)
    _, url = side.sqs(unique)
    sqs = side.client("sqs")
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    seen: list[tuple[str, str]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        for r in event["Records"]:
            seen.append((r["body"], r["attributes"]["ApproximateReceiveCount"]))
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if r["body"] == "1" and r["attributes"]["ApproximateReceiveCount"] == "1"
            ]
        }

    SqsMapping(sqs, url, Function(handler, {}), region="us-east-1").drain()
    assert sorted(seen) == [("0", "1"), ("1", "1"), ("1", "2"), ("2", "1")]
