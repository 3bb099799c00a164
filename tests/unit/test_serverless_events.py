"""Reading Lambda's event shapes and answering with partial batch responses (bridge.serverless.events)."""

from __future__ import annotations

import base64

import pytest

from bridge.errors import ConfigError
from bridge.serverless import events
from bridge.serverless.publish import first_unconfirmed


def stream_record(seq: str) -> dict[str, object]:
    return {"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": seq}}


def test_the_first_unconfirmed_record_is_where_the_mapping_resumes() -> None:
    records = [stream_record(s) for s in ("11", "12", "13")]
    assert first_unconfirmed(records, None) == "11"
    assert first_unconfirmed(records, "12") == "13"
    assert first_unconfirmed(records, "13") is None
    assert first_unconfirmed(records, "99") == "11"  # not from this batch: resume at its start, never skip


def test_sqs_bodies_are_the_transports_base64_and_keep_its_message_id() -> None:
    record = {
        "eventSource": "aws:sqs",
        "messageId": "m-1",
        "body": base64.b64encode(b"\x00envelope").decode(),
        "attributes": {"ApproximateReceiveCount": "3"},
        "messageAttributes": {"bridge-message-id": {"stringValue": "env-7", "dataType": "String"}},
    }
    (delivery,) = events.deliveries({"Records": [record]})
    assert delivery.body == b"\x00envelope" and delivery.message_id == "env-7" and delivery.redelivered
    assert delivery.handle == events.Item("m-1", 3)


def test_a_body_that_is_not_base64_is_kept_as_it_came_for_quarantine() -> None:
    kinesis = {"eventSource": "aws:kinesis", "kinesis": {"data": "not base64!", "sequenceNumber": "5"}}
    (delivery,) = events.deliveries({"Records": [kinesis]})
    assert delivery.body == b"not base64!" and delivery.handle == events.Item("5", 1)


@pytest.mark.parametrize("event", [{}, {"Records": None}, {"Records": [{"eventSource": "aws:s3"}]}])
def test_events_the_handlers_cannot_take_are_refused(event: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        events.deliveries(event)


def test_responses_name_items_as_lambda_expects() -> None:
    assert events.response(["a", "b"]) == {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}
    assert events.response([]) == {"batchItemFailures": []}
