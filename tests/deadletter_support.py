"""What the dead-letter tests share: signed test envelopes, injected throttling, reading queues."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from botocore.awsrequest import AWSResponse

from bridge.change import Change, Operation, Version
from bridge.config import ApplyConfig
from bridge.deadletter.records import FailureRecord
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage

SIGNER = Signer.from_seed(bytes(range(32)))
STRANGER = Signer.from_seed(bytes(32))


def key(i: int) -> dict[str, Any]:
    return {"tenant": {"S": "dlq"}, "user_id": {"N": str(i)}}


def put(i: int, ts: int = 1_000_000, **attrs: Any) -> Change:
    return Change(key(i), Operation.PUT, Version(ts, "cn-north-1", ts), {**key(i), **attrs})


def envelope(changes: list[Change], signer: Signer = SIGNER, eid: str = "e") -> bytes:
    return encode(Batch(eid, "cn-north-1", "users", 0, tuple(changes)), signer, Compression.ZSTD)


def send(url: str, bodies: list[bytes]) -> None:
    transport = open_transport(url, "publish")
    try:
        transport.publish([OutgoingMessage(b, f"m{i}", "p") for i, b in enumerate(bodies)])
    finally:
        transport.close()


def trusted_dir(tmp_path: Path, *signers: Signer) -> Path:
    trusted = tmp_path / "trusted"
    trusted.mkdir(exist_ok=True)
    for n, signer in enumerate(signers or (SIGNER,)):
        (trusted / f"k{n}.pub").write_bytes(signer.public_pem())
    return trusted


def apply_config(tmp_path: Path, endpoint: str, table: str, transport: str, **settings: Any) -> ApplyConfig:
    return ApplyConfig(
        target_table=table,
        target_region="us-west-2",
        target_endpoint=endpoint,
        trusted_keys=tmp_path / "trusted",
        transport=transport,
        quarantine_dir=tmp_path / "q",
        **{"accept_tables": ["users"], **settings},  # the envelopes above come from a table named users
    )


def records_on(url: str, take: bool = True, wait: float = 0.2) -> list[FailureRecord]:
    """Every failure record on a queue; acked (taken) unless ``take`` is False."""
    transport = open_transport(url, "dlq")
    out: list[FailureRecord] = []
    try:
        while True:
            got = transport.receive(500, timeout=wait)
            if not got:
                return out
            for delivery in got:
                out.append(FailureRecord.decode(delivery.body))
                if take:
                    transport.ack(delivery)
    finally:
        transport.close()


def stored(client: Any, table: str) -> dict[int, dict[str, Any]]:
    """The target table's items by user_id (consistent scan, all pages)."""
    items: dict[int, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        for item in page["Items"]:
            items[int(item["user_id"]["N"])] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class Throttle:
    """Injected DynamoDB throttling on a real boto3 client.

    moto never throttles, so a ``before-call`` hook answers chosen PutItem calls with the
    error DynamoDB sends (ProvisionedThroughputExceededException, HTTP 400) instead of
    sending them. botocore raises it exactly as it raises the real one once its own
    retries are used up, which is where the bridge's retry layers take over. The hook also
    counts the writes that did go through, per item, so tests can prove no change was
    applied twice.
    """

    def __init__(self, client: Any, throttled: Callable[[int], bool]) -> None:
        self.throttled = throttled  # user_id -> throttle this call?
        self.sent: Counter[int] = Counter()
        self.refused = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-call.dynamodb.PutItem", self._before_call)

    def _before_call(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        body = orjson.loads(params["body"])
        if "user_id" not in body.get("Item", {}) or body.get("TableName", "").endswith("-tombstones"):
            return None
        user_id = int(body["Item"]["user_id"]["N"])
        with self._lock:
            if self.throttled(user_id):
                self.refused += 1
                error = {
                    "Code": "ProvisionedThroughputExceededException",
                    "Message": "The level of configured provisioned throughput for the table was exceeded.",
                }
                return (
                    AWSResponse(params.get("url", ""), 400, {}, None),
                    {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}},
                )
            self.sent[user_id] += 1
        return None
