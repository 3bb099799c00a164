"""Items near DynamoDB's 400 KB limit: the bridge's own attributes are counted before writing, an item
that cannot fit with them is refused with its own reason (ItemTooLargeError) and counted (too_large),
and the headroom an item needs is exact. The moto server's DynamoDB; real RabbitMQ for the parked record.

moto's item limit is 405,000 bytes, not AWS's 409,600 (moto's own comment: "between 409 and 410KB" on
AWS); where a test shows the headroom is exact, the target is told moto's limit.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.apply.itemsize import ITEM_LIMIT_BYTES, bridge_overhead, item_size
from bridge.apply.target import TargetTable
from bridge.change import Change, Operation, Outcome, Version
from bridge.config import ApplyConfig
from bridge.demo.workload import create_table
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.errors import ItemTooLargeError, PermanentApplyError
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.wiring import build_applier
from tests.helpers import drain_failures

MOTO_ITEM_LIMIT = 405_000
ORIGIN = "eu-west-1"
SIGNER = Signer.from_seed(bytes(range(32)))


def sized(user: int, total: int) -> Change:
    """A put whose item (as DynamoDB counts it, without bridge attributes) is exactly ``total`` bytes."""
    key = {"tenant": {"S": "size"}, "user_id": {"N": str(user)}}
    base = item_size({**key, "blob": {"S": ""}})
    image = {**key, "blob": {"S": "x" * (total - base)}}
    assert item_size(image) == total
    return Change(key, Operation.PUT, Version(1_000_000 + user, ORIGIN, user), image)


@pytest.fixture
def target(moto_endpoint: str, unique: str) -> TargetTable:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    return TargetTable.open(client, unique)


def stored(target: TargetTable, user: int) -> dict[str, Any] | None:
    key = {"tenant": {"S": "size"}, "user_id": {"N": str(user)}}
    item: dict[str, Any] | None = target.client.get_item(TableName=target.table, Key=key, ConsistentRead=True).get(
        "Item"
    )
    return item


@pytest.mark.aws
def test_the_headroom_an_item_needs_is_exact(target: TargetTable) -> None:
    at_moto_limit = dataclasses.replace(target, item_limit=MOTO_ITEM_LIMIT)
    headroom = bridge_overhead("_bridge", ORIGIN)
    assert headroom == 105  # documented in docs/consistency.md for origin eu-west-1
    assert at_moto_limit.apply(sized(1, MOTO_ITEM_LIMIT - headroom)) is Outcome.APPLIED
    assert item_size(stored(target, 1) or {}) == MOTO_ITEM_LIMIT  # counted as the emulator counts
    with pytest.raises(ItemTooLargeError, match=f"with the bridge's {headroom} bytes .* over .* by 1 "):
        at_moto_limit.apply(sized(2, MOTO_ITEM_LIMIT - headroom + 1))
    assert stored(target, 2) is None


@pytest.mark.aws
def test_an_item_that_fits_alone_but_not_with_the_bridges_attributes_is_refused_before_writing(
    target: TargetTable,
) -> None:
    with pytest.raises(ItemTooLargeError, match=f"item is {ITEM_LIMIT_BYTES - 50} bytes"):
        target.apply(sized(3, ITEM_LIMIT_BYTES - 50))
    assert stored(target, 3) is None
    # Between moto's limit and AWS's, the pre-check lets it through and the service's refusal is
    # recognised as the same case, not as a generic validation error.
    with pytest.raises(ItemTooLargeError, match="ValidationException: Item size"):
        target.apply(sized(4, MOTO_ITEM_LIMIT + 1000))
    assert issubclass(ItemTooLargeError, PermanentApplyError)


@pytest.mark.aws
@pytest.mark.rabbitmq
def test_an_oversize_item_is_parked_with_its_own_reason_and_counted(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    (tmp_path / "k.pub").write_bytes(SIGNER.public_pem())
    url = f"{amqp_url}?queue={unique}"
    cfg = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        trusted_keys=tmp_path / "k.pub",
        transport=url,
        quarantine_dir=tmp_path / "q",
    )
    changes = (sized(5, 1000), sized(6, ITEM_LIMIT_BYTES - 50))
    body = encode(Batch("big", ORIGIN, unique, 0, changes), SIGNER, Compression.ZSTD)
    sender = open_transport(url, "publish")
    try:
        sender.publish([OutgoingMessage(body, "big", "p")])
    finally:
        sender.close()
    applier = build_applier(cfg, threading.Event())
    try:
        stats = applier.run(until_idle=2.0)
    finally:
        applier.close()
    assert (stats.applied, stats.parked, stats.too_large) == (1, 1, 1)
    (record,) = drain_failures(f"{url}.dlq.parked", expect=1)
    assert record.error == "ItemTooLargeError" and "bytes of headroom" in record.message
