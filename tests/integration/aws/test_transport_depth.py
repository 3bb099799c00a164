"""`Transport.depth()` (for `bridge status`): what waits, or None where the transport cannot say."""

from __future__ import annotations

import boto3
import pytest

from bridge.plugin.manager import open_transport
from bridge.testing.support import make_messages


@pytest.mark.aws
def test_sqs_depth_counts_visible_messages(moto_endpoint: str, unique: str) -> None:
    transport = open_transport(f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}", "publish")
    try:
        assert transport.depth() == 0
        transport.publish(make_messages("depth", 3))
        assert transport.depth() == 3
        got = transport.receive(1, timeout=5)
        assert len(got) == 1
        assert transport.depth() == 2  # a received, unacknowledged message is invisible: not waiting
    finally:
        transport.close()


@pytest.mark.aws
def test_kinesis_cannot_say(moto_endpoint: str, unique: str) -> None:
    boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-west-2").create_stream(
        StreamName=unique, ShardCount=1
    )
    transport = open_transport(f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_endpoint}", "publish")
    try:
        assert transport.depth() is None
    finally:
        transport.close()


def test_memory_depth() -> None:
    transport = open_transport("memory://depth-test", "publish")
    transport.publish(make_messages("m", 2))
    assert transport.depth() == 2
