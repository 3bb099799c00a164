"""Attributes that stay home: ``exclude_attributes`` never reach the wire, nor the target.

Real parts: moto's server for the source (us-east-1) and target (us-west-2) tables and the stream,
RabbitMQ between a real Publisher and a real Applier (both built by bridge.wiring as the daemons
build them). Every envelope on the queue is taken off, decoded and checked, then put back for the
applier: what the applier applies is exactly what crossed the hop.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.config import ApplyConfig, PublishConfig, load
from bridge.copy.verify import DIFFERENT_EXIT
from bridge.demo.workload import create_table
from bridge.envelope import TrustStore, decode, keygen
from bridge.envelope.keys import Signer
from bridge.errors import ConfigError
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.wiring import build_applier, build_publisher

pytestmark = [pytest.mark.aws, pytest.mark.rabbitmq]


def _apply_all(apply: ApplyConfig, dst: Any, table: str) -> dict[int, dict[str, Any]]:
    """Run bridge-apply's applier until the queue is idle; the target's items by user id."""
    applier = build_applier(apply, threading.Event())
    try:
        applier.run(until_idle=1.5)
    finally:
        applier.close()
    return {int(i["user_id"]["N"]): i for i in dst.scan(TableName=table, ConsistentRead=True)["Items"]}


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    base = {"source_table": "src", "source_region": "r", "transport": "memory://q", "signing_key": "k"}
    with pytest.raises(ConfigError, match=r"exclude_attributes cannot be used with active_active.*could not converge"):
        load(PublishConfig, None, {**base, "active_active": True, "exclude_attributes": "secret"}, environ={})
    with pytest.raises(ConfigError, match="not both"):
        load(PublishConfig, None, {**base, "exclude_attributes": "a", "include_attributes": "b"}, environ={})
    applied = {"target_table": "dst", "target_region": "r", "transport": "memory://q", "trusted_keys": "k"}
    with pytest.raises(ConfigError, match="exclude_mode keep needs exclude_attributes"):
        load(ApplyConfig, None, {**applied, "exclude_mode": "keep"}, environ={})
    cfg = load(
        PublishConfig,
        None,
        {},
        environ={**{f"BRIDGE_{k.upper()}": v for k, v in base.items()}, "BRIDGE_EXCLUDE_ATTRIBUTES": "ssn, card"},
    )
    assert cfg.exclude_attributes == ["ssn", "card"]


def _configs(moto: str, amqp_url: str, unique: str, tmp_path: Path, **apply_extra: Any) -> tuple[Any, Any]:
    private, public = keygen(tmp_path / "keys")
    transport = f"{amqp_url}?queue={unique}"
    publish = PublishConfig(
        source_table=unique,
        source_region="us-east-1",
        source_endpoint=moto,
        transport=transport,
        signing_key=private,
        checkpoint=str(tmp_path / "cp.sqlite"),
        quarantine_dir=tmp_path / "q",
        batch_max_wait=0.05,
        exclude_attributes=["ssn", "notes"],
    )
    apply = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto,
        transport=transport,
        trusted_keys=public,
        quarantine_dir=tmp_path / "q",
        status_file=None,
        exclude_attributes=["ssn", "notes"],
        **apply_extra,
    )
    return publish, apply


def _item(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": {"S": "a"},
        "user_id": {"N": str(i)},
        "name": {"S": f"n{i}"},
        "ssn": {"S": f"secret-{i}"},
        **extra,
    }


def _publish_and_inspect(publish: PublishConfig, trust: TrustStore, expect: int) -> int:
    """Run the publisher to idle, then take every envelope off the queue, check it, put it back."""
    publisher = build_publisher(publish, threading.Event())
    try:
        publisher.run(until_idle=1.0)
    finally:
        publisher.close()
    queue = open_transport(publish.transport, "consume")
    bodies: list[bytes] = []
    try:
        while got := queue.receive(100, timeout=1.0):
            for delivery in got:
                bodies.append(delivery.body)
                queue.ack(delivery)
    finally:
        queue.close()
    changes = 0
    for body in bodies:
        for change in decode(body, trust).changes:
            changes += 1
            if change.new_image is not None:
                assert "ssn" not in change.new_image and "notes" not in change.new_image, change.new_image
                assert "name" in change.new_image  # the rest did cross
    assert changes >= expect
    sender = open_transport(publish.transport, "publish")
    try:
        sender.publish([OutgoingMessage(b, f"again-{i}", "p") for i, b in enumerate(bodies)])
    finally:
        sender.close()
    return changes


def test_excluded_attributes_never_cross_and_the_target_lacks_them(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    publish, apply = _configs(moto_endpoint, amqp_url, unique, tmp_path)
    for i in range(5):
        src.put_item(TableName=unique, Item=_item(i, notes={"S": "home only"}))
    src.update_item(
        TableName=unique,
        Key={"tenant": {"S": "a"}, "user_id": {"N": "1"}},
        UpdateExpression="SET ssn = :s, #n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":s": {"S": "secret-new"}, ":n": {"S": "renamed"}},
    )
    trust = TrustStore.of(Signer.from_file(publish.signing_key))
    _publish_and_inspect(publish, trust, expect=6)
    items = _apply_all(apply, dst, unique)
    assert sorted(items) == [0, 1, 2, 3, 4]
    assert all("ssn" not in i and "notes" not in i for i in items.values())
    assert items[1]["name"] == {"S": "renamed"}

    # verify compares through the same projection: identical; without it the source's ssn differs.
    pub_file, app_file = tmp_path / "publish.yaml", tmp_path / "apply.yaml"
    pub_file.write_text(
        f"source_table: {unique}\nsource_region: us-east-1\nsource_endpoint: {moto_endpoint}\n"
        f"transport: {publish.transport}\nsigning_key: {publish.signing_key}\nexclude_attributes: [ssn, notes]\n"
    )
    app_file.write_text(
        f"target_table: {unique}\ntarget_region: us-west-2\ntarget_endpoint: {moto_endpoint}\n"
        f"transport: {publish.transport}\ntrusted_keys: {apply.trusted_keys}\n"
    )
    runner = CliRunner()
    same = runner.invoke(admin, ["verify", "--config", str(pub_file), "--config", str(app_file)])
    assert same.exit_code == 0, same.output
    assert "identical" in same.output
    plain = runner.invoke(
        admin,
        [
            "verify",
            "--source-table",
            unique,
            "--source-region",
            "us-east-1",
            "--source-endpoint",
            moto_endpoint,
            "--target-table",
            unique,
            "--target-region",
            "us-west-2",
            "--target-endpoint",
            moto_endpoint,
        ],
    )
    assert plain.exit_code == DIFFERENT_EXIT, plain.output


def test_keep_mode_leaves_the_targets_own_values(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    publish, apply = _configs(moto_endpoint, amqp_url, unique, tmp_path, exclude_mode="keep")
    # The target's own value of an excluded attribute, written locally before the first replica arrives.
    dst.put_item(TableName=unique, Item={"tenant": {"S": "a"}, "user_id": {"N": "0"}, "ssn": {"S": "local"}})
    for i in range(3):
        src.put_item(TableName=unique, Item=_item(i))
    src.update_item(
        TableName=unique,
        Key={"tenant": {"S": "a"}, "user_id": {"N": "0"}},
        UpdateExpression="SET #n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":n": {"S": "second"}},
    )
    trust = TrustStore.of(Signer.from_file(publish.signing_key))
    _publish_and_inspect(publish, trust, expect=4)
    items = _apply_all(apply, dst, unique)
    assert items[0]["ssn"] == {"S": "local"} and items[0]["name"] == {"S": "second"}
    assert "ssn" not in items[1] and items[1]["name"] == {"S": "n1"}


def test_excluding_a_key_attribute_is_refused_at_start(moto_endpoint: str, unique: str, tmp_path: Path) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    create_table(src, unique)
    private, public = keygen(tmp_path / "keys")
    cfg = PublishConfig(
        source_table=unique,
        source_region="us-east-1",
        source_endpoint=moto_endpoint,
        transport=f"memory://{unique}",
        signing_key=private,
        checkpoint=str(tmp_path / "cp.sqlite"),
        exclude_attributes=["user_id", "ssn"],
    )
    with pytest.raises(ConfigError, match=f"key attribute user_id of table '{unique}': key attributes cannot be"):
        build_publisher(cfg, threading.Event())
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(dst, unique, stream=False)
    apply = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        transport=f"memory://{unique}",
        trusted_keys=public,
        exclude_attributes=["tenant"],
        exclude_mode="keep",
        status_file=None,
    )
    with pytest.raises(ConfigError, match="key attribute tenant"):
        build_applier(apply, threading.Event())
