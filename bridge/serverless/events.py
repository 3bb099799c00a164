"""Lambda's event shapes: what the handlers read of them and the partial batch responses they return.

* DynamoDB Streams: ``Records[].dynamodb`` as ``GetRecords`` gives it, with epoch-second times and
  base64 binary (:func:`bridge.source.records.parse_record` reads both dialects). An event holds
  records of one shard, in order, but does not name the shard: the stream's ARN stands for it.
* Kinesis: ``Records[].kinesis.data`` (base64 of the envelope), ``sequenceNumber``.
* SQS: ``Records[].body`` (the SQS transport's base64 text of the envelope), ``messageId``,
  ``attributes.ApproximateReceiveCount``, ``messageAttributes``.

A partial batch response names items to retry: ``{"batchItemFailures": [{"itemIdentifier": ID}]}``,
the sequence number for streams (the mapping resumes at the lowest) and the message id for SQS.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import ConfigError
from bridge.transport import Delivery

#: The SQS transport's message attribute holding the bridge's message id (``bridge_sqs``).
SQS_ID_ATTRIBUTE = "bridge-message-id"


@dataclass(frozen=True)
class Item:
    """One message of a Kinesis or SQS event: its id for the response, and how often it came."""

    identifier: str
    receives: int  # SQS' ApproximateReceiveCount; 1 for Kinesis (it does not count)


def response(identifiers: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in identifiers]}


def records(event: Any) -> list[dict[str, Any]]:
    found = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(found, list):
        raise ConfigError("the event has no Records list: is the function behind an event source mapping?")
    return found


def stream_label(record: Mapping[str, Any]) -> str:
    """What stands for the shard in positions: ``stream/LABEL`` of the record's stream ARN."""
    arn = str(record.get("eventSourceARN", ""))
    return arn.rsplit("/stream/", 1)[-1] if "/stream/" in arn else "lambda"


def sequence_number(record: Any) -> str | None:
    ddb = record.get("dynamodb") if isinstance(record, Mapping) else None
    seq = ddb.get("SequenceNumber") if isinstance(ddb, Mapping) else None
    return seq if isinstance(seq, str) and seq else None


def deliveries(event: Any) -> list[Delivery]:
    """The envelopes of a Kinesis or SQS event, in order, as the applier receives them."""
    out = []
    for record in records(event):
        source = record.get("eventSource") if isinstance(record, Mapping) else None
        if source == "aws:kinesis":
            out.append(_kinesis(record))
        elif source == "aws:sqs":
            out.append(_sqs(record))
        else:
            raise ConfigError(f"apply_handler takes Kinesis or SQS events, not eventSource {source!r}")
    return out


def _kinesis(record: Mapping[str, Any]) -> Delivery:
    kinesis = record.get("kinesis") or {}
    seq = str(kinesis.get("sequenceNumber", ""))
    try:
        body = base64.b64decode(str(kinesis.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        body = str(kinesis.get("data", "")).encode()  # not ours: the applier quarantines it as it came
    return Delivery(body, f"kinesis:{seq}", False, Item(seq, 1))


def _sqs(record: Mapping[str, Any]) -> Delivery:
    text = str(record.get("body", ""))
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        body = text.encode()
    attributes = record.get("attributes") or {}
    receives = int(attributes.get("ApproximateReceiveCount", "1"))
    bridge_id = ((record.get("messageAttributes") or {}).get(SQS_ID_ATTRIBUTE) or {}).get("stringValue")
    message_id = str(record.get("messageId", ""))
    return Delivery(body, bridge_id or message_id, receives > 1, Item(message_id, receives))
