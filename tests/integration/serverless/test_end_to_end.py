"""End to end through emulated event source mappings: source stream -> publish_handler -> Kinesis or
SQS in the other region -> apply_handler -> target table, identical at the end, with faults injected.

Real parts: DynamoDB, Streams, Kinesis, SQS and SSM on the moto server, the handlers' own boto3 clients.
Emulated: the event source mappings (tests/integration/serverless/emulator.py says what they model).
Injected: exceptions raised by a handler after its batch went through (so the mapping delivers it
again: duplicate delivery), a transport failure in the middle of a publish batch, DynamoDB throttling
(moto never throttles: a botocore hook answers chosen PutItems with the real error), a poison change
(an item the target cannot hold once the bridge's attributes are added), and a forged envelope.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest

from bridge.apply.itemsize import ITEM_LIMIT_BYTES, item_size
from bridge.copy.compare import compare_tables
from bridge.demo.workload import Workload, run_op
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.errors import RecoverableTransportError
from bridge.observe import metrics
from tests.deadletter_support import Throttle
from tests.helpers import drain_failures
from tests.integration.serverless.conftest import KEYS, Side
from tests.integration.serverless.emulator import Function, SqsMapping, StreamMapping

pytestmark = pytest.mark.aws


class RaiseAfter:
    """A handler that does its work, then raises on chosen invocations: the mapping sees a failed
    batch although everything in it went through, and delivers it again."""

    def __init__(self, handler: Callable[..., Any], on: set[int]) -> None:
        self.handler, self.on, self.calls = handler, on, 0

    def __call__(self, event: Any, context: Any) -> Any:
        self.calls += 1
        result = self.handler(event, context)
        if self.calls in self.on:
            raise RuntimeError(f"injected failure after invocation {self.calls}")
        return result


def built(function: Function, role: str) -> Any:
    """The container's function object, built by a first (empty) invocation: a cold start."""
    function({"Records": []})
    return function._built[role][0]


#: moto refuses items from about 405,000 bytes as DynamoDB counts them (AWS: 409,600); measured on moto 5.
MOTO_ITEM_LIMIT = ITEM_LIMIT_BYTES - 4599


def poison_item() -> dict[str, Any]:
    """An item that fits the source but not the target once the bridge adds its attributes (~90 bytes):
    the emulator refuses the target write, as AWS would refuse one nearer its own limit."""
    item: dict[str, Any] = {"tenant": {"S": "poison"}, "user_id": {"N": "1"}, "blob": {"B": b""}}
    item["blob"] = {"B": os.urandom(MOTO_ITEM_LIMIT - 20 - item_size(item))}
    return item


def write(side: Side, seed: int, n: int, keys: int = 40) -> None:
    client = side.client("dynamodb")
    for op in Workload(seed=seed, keys=keys).ops(n):
        run_op(client, side.table, op)


def test_one_way_over_kinesis_with_faults(make_side: Callable[..., Side], unique: str) -> None:
    source, target = make_side("us-east-1"), make_side("eu-west-1")
    target.trust("source", source.signer)
    staging, staging_arn = target.kinesis(f"{unique}-staging")
    publish = source.publisher(staging)
    apply = target.applier(staging, target.dead_letter(unique), accept_tables=source.table)

    # A transport failure in the middle of a batch: the second publish call of the run fails once.
    publisher = built(publish, "publish").publisher
    transport = publisher.sender.transport.transport
    real_publish, calls = transport.publish, itertools.count(1)

    def flaky_publish(messages: Any) -> None:
        if next(calls) == 2:
            raise RecoverableTransportError("injected: connection reset in the middle of a batch")
        real_publish(messages)

    transport.publish = flaky_publish
    publisher.sender.transport.backoff = publisher.sender.transport.backoff.__class__(0.01, 0.01, max_attempts=1)
    publish.handler = RaiseAfter(publish.handler, on={3})
    # Throttling on the target: the first two writes of two items are refused.
    target_client = built(apply, "apply").target.client
    refused: dict[int, int] = {}

    def throttled(user_id: int) -> bool:
        refused[user_id] = refused.get(user_id, 0) + 1
        return user_id in (3, 7) and refused[user_id] <= 2

    throttle = Throttle(target_client, throttled)

    write(source, seed=11, n=150)
    source.client("dynamodb").put_item(TableName=source.table, Item=poison_item())
    pub_map = StreamMapping(
        source.client("dynamodbstreams"), "dynamodb", source.stream_arn, publish, region="us-east-1", batch_size=40
    )
    pub_report = pub_map.drain()
    app_map = StreamMapping(target.client("kinesis"), "kinesis", staging_arn, apply, region="eu-west-1", batch_size=25)
    app_map.drain()
    # A forged envelope once the container has verified real ones, signed by a key the target does not
    # trust: quarantined. (At the head of a cold container's first batch it stops the line: test_handlers.py.)
    forged = encode(Batch("forged", "mallory", target.table, 0, ()), Signer.from_seed(b"m" * 32), Compression.ZSTD)
    target.client("kinesis").put_record(StreamName=f"{unique}-staging", Data=forged, PartitionKey="x")
    app_report = app_map.drain()

    assert pub_report.failures >= 2 and pub_report.bisections >= 1, pub_report  # both injected failures seen
    assert throttle.refused == 4 and app_report.failures >= 1
    assert not pub_report.on_failure and not app_report.on_failure
    parked = drain_failures(target.dead_letter(unique).replace("-dlq?", "-dlq-parked?"), expect=2, timeout=3)
    # The poison change is parked once per delivery of its envelope (the publish side delivered it twice;
    # dedupe across batches is the conditional writes', which a failing change never reaches).
    assert {r.error for r in parked} == {"ItemTooLargeError", "SignatureError"}, [r.summary() for r in parked]
    assert len({r.envelope_id for r in parked if r.error == "ItemTooLargeError"}) == 1
    assert "maximum allowed size" in next(r.message for r in parked if r.error == "ItemTooLargeError")

    # Everything but the poison item is there; once it is deleted at the source, the tables are identical.
    source.client("dynamodb").delete_item(
        TableName=source.table, Key={"tenant": {"S": "poison"}, "user_id": {"N": "1"}}
    )
    pub_map.drain()
    app_map.drain()
    diff = compare_tables(source.client("dynamodb"), source.table, target.client("dynamodb"), target.table, KEYS)
    assert diff.identical and diff.compared > 20, diff

    # Duplicate delivery of the whole staging stream changes nothing.
    applied = metrics.sample_value("bridge_changes_applied_total", table=target.table, outcome="applied")
    again = StreamMapping(target.client("kinesis"), "kinesis", staging_arn, apply, region="eu-west-1", batch_size=50)
    again.drain()
    assert metrics.sample_value("bridge_changes_applied_total", table=target.table, outcome="applied") == applied
    assert compare_tables(
        source.client("dynamodb"), source.table, target.client("dynamodb"), target.table, KEYS
    ).identical


def test_one_way_over_sqs_parks_what_cannot_be_sent(make_side: Callable[..., Side], unique: str) -> None:
    source, target = make_side("us-east-1"), make_side("eu-west-1")
    target.trust("source", source.signer)
    staging, queue_url = target.sqs(f"{unique}-staging", max_message_bytes=256 * 1024)  # SQS' old limit
    dead_letter = target.dead_letter(unique)
    publish = source.publisher(staging, dead_letter=dead_letter)
    apply = target.applier(staging, dead_letter, accept_tables=source.table)
    apply.handler = RaiseAfter(apply.handler, on={1})  # the first batch comes again after it was applied

    write(source, seed=5, n=60)
    source.client("dynamodb").put_item(TableName=source.table, Item=poison_item())  # over the queue's limit

    StreamMapping(source.client("dynamodbstreams"), "dynamodb", source.stream_arn, publish, region="us-east-1").drain()
    report = SqsMapping(target.client("sqs"), queue_url, apply, region="eu-west-1").drain()

    assert report.failures == 1
    parked = drain_failures(dead_letter.replace("-dlq?", "-dlq-parked?"), expect=1)
    assert [r.error for r in parked] == ["MessageTooLargeError"], [r.summary() for r in parked]
    assert parked[0].kind.value == "change"
    source.client("dynamodb").delete_item(
        TableName=source.table, Key={"tenant": {"S": "poison"}, "user_id": {"N": "1"}}
    )
    diff = compare_tables(source.client("dynamodb"), source.table, target.client("dynamodb"), target.table, KEYS)
    assert diff.identical and diff.compared > 10, diff


def test_active_active_across_two_regions_converges(make_side: Callable[..., Side], unique: str) -> None:
    east, west = make_side("us-east-1"), make_side("eu-west-1")
    east.trust("west", west.signer)
    west.trust("east", east.signer)
    mappings = []
    for here, there in ((east, west), (west, east)):
        state = f"{unique}-state-{here.region}"
        here.client("dynamodb").create_table(
            TableName=state,
            KeySchema=[{"AttributeName": "stream_shard", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "stream_shard", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        staging, arn = there.kinesis(f"{unique}-to-{there.region}")
        aa = {"active_active": "true", "checkpoint": f"dynamodb://{state}", "timestamp_attribute": "updated_at"}
        publish = here.publisher(staging, **aa)
        apply = there.applier(
            staging, there.dead_letter(f"{unique}-{there.region}"), origin=there.region, accept_tables=here.table
        )
        mappings.append(
            StreamMapping(here.client("dynamodbstreams"), "dynamodb", here.stream_arn, publish, region=here.region)
        )
        mappings.append(StreamMapping(there.client("kinesis"), "kinesis", arn, apply, region=there.region))

    # Both regions write the same keys; every mapping runs in turn until nothing moves.
    write(east, seed=1, n=60, keys=15)
    write(west, seed=2, n=60, keys=15)
    delivered = -1
    for _ in range(5):
        before, delivered = delivered, sum(m.drain().records_delivered for m in mappings)
        if delivered == before:  # a whole round moved nothing: converged (or stuck: the compare tells)
            break
    else:
        pytest.fail("the regions kept exchanging changes: an echo loop")
    diff = compare_tables(east.client("dynamodb"), east.table, west.client("dynamodb"), west.table, KEYS)
    assert diff.identical and diff.compared > 5, diff
    assert not any(m.report.on_failure for m in mappings)
