"""A trusted key writes only what it is allowed to: an envelope re-routed to another table's queue, or
signed for an origin or table its key or this applier does not accept, is quarantined with the reason,
never applied. Real RabbitMQ, the moto server's DynamoDB, real .pub files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.change import Change, Operation, Version
from bridge.config import ApplyConfig
from bridge.deadletter.records import Kind, State
from bridge.demo.workload import create_table
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.wiring import build_applier
from tests.helpers import drain_failures

ORDERS_KEY = Signer.from_seed(bytes(range(32)))  # trusted by the users applier, but only for `orders`
USERS_KEY = Signer.from_seed(bytes(range(1, 33)))


def envelope(signer: Signer, table: str, origin: str, user: int, eid: str) -> bytes:
    key = {"tenant": {"S": "routing"}, "user_id": {"N": str(user)}}
    change = Change(key, Operation.PUT, Version(1_000_000 + user, origin, user), {**key, "v": {"S": eid}})
    return encode(Batch(eid, origin, table, 0, (change,)), signer, Compression.ZSTD)


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_envelopes_outside_their_keys_or_the_appliers_scope_are_quarantined(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o755)
    (trusted / "orders.pub").write_bytes(b"# allow-tables: orders\n" + ORDERS_KEY.public_pem())
    (trusted / "users.pub").write_bytes(
        b"# publisher of the users table in eu-west-1\n# allow-origins: eu-west-1, eu-central-1\n"
        + USERS_KEY.public_pem()
    )
    url = f"{amqp_url}?queue={unique}"
    cfg = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        trusted_keys=trusted,
        accept_origins=["eu-west-1", "ap-south-1"],
        transport=url,
        quarantine_dir=tmp_path / "q",
    )
    refused = {
        # the orders publisher's authentic envelope, re-routed to the users queue by a broker-side attacker
        "rerouted": envelope(ORDERS_KEY, "orders", "eu-west-1", 1, "rerouted"),
        # the orders key signing for this table: its trust entry forbids it
        "key scope": envelope(ORDERS_KEY, unique, "eu-west-1", 2, "keyscope"),
        # the users key, an origin its entry allows but this applier does not accept
        "applier origin": envelope(USERS_KEY, unique, "eu-central-1", 3, "origin"),
        # the users key, an origin this applier accepts but the key's entry does not
        "key origin": envelope(USERS_KEY, unique, "ap-south-1", 4, "keyorigin"),
    }
    good = envelope(USERS_KEY, unique, "eu-west-1", 5, "good")
    transport = open_transport(url, "publish")
    try:
        bodies = [*refused.values(), good]
        transport.publish([OutgoingMessage(b, f"m{i}", "p") for i, b in enumerate(bodies)])
    finally:
        transport.close()

    applier = build_applier(cfg, threading.Event())
    try:
        stats = applier.run(until_idle=2.0)
    finally:
        applier.close()

    items = client.scan(TableName=unique, ConsistentRead=True)["Items"]
    assert {int(i["user_id"]["N"]) for i in items} == {5}
    assert (stats.applied, stats.quarantined) == (1, len(refused))
    records = drain_failures(f"{url}.dlq.parked", expect=len(refused))
    by_payload: dict[bytes, Any] = {r.payload: r for r in records}
    assert set(by_payload) == set(refused.values())  # kept byte for byte
    assert all(r.kind is Kind.ENVELOPE and r.state is State.QUARANTINED for r in records)
    assert all(r.error == "RouteRefusedError" for r in records)
    why = {name: by_payload[body].message for name, body in refused.items()}
    assert "table 'orders'" in why["rerouted"] and ORDERS_KEY.key_id in why["rerouted"]
    assert f"table {unique!r}" in why["key scope"] and "trust entry" in why["key scope"]
    assert "origin 'eu-central-1'" in why["applier origin"] and "accept_origins" in why["applier origin"]
    assert "origin 'ap-south-1'" in why["key origin"] and USERS_KEY.key_id in why["key origin"]


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_default_accepts_only_the_target_tables_name(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    (tmp_path / "k.pub").write_bytes(USERS_KEY.public_pem())  # no allow- lines: the key may write anything
    url = f"{amqp_url}?queue={unique}"
    cfg = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        trusted_keys=tmp_path / "k.pub",
        transport=url,
        quarantine_dir=tmp_path / "q",
    )
    transport = open_transport(url, "publish")
    try:
        transport.publish(
            [
                OutgoingMessage(envelope(USERS_KEY, "other-table", "eu-west-1", 1, "other"), "a", "p"),
                OutgoingMessage(envelope(USERS_KEY, unique, "anywhere-1", 2, "same"), "b", "p"),
            ]
        )
    finally:
        transport.close()
    applier = build_applier(cfg, threading.Event())
    try:
        stats = applier.run(until_idle=2.0)
    finally:
        applier.close()
    items = client.scan(TableName=unique, ConsistentRead=True)["Items"]
    assert {int(i["user_id"]["N"]) for i in items} == {2}
    assert (stats.applied, stats.quarantined) == (1, 1)
    (record,) = drain_failures(f"{url}.dlq.parked", expect=1)
    assert "table 'other-table'" in record.message and "accept_tables" in record.message
