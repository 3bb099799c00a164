"""Failure records no dead-letter queue can hold live as files in the quarantine directory; `bridge dlq`
lists, shows and replays them like the queued ones. Real RabbitMQ (16 MiB message limit), the moto
server's DynamoDB, real `bridge dlq` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import yaml

from bridge.change import Change, Operation, Version
from bridge.config import ApplyConfig
from bridge.demo.workload import create_table
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.wiring import build_applier

TRUSTED = Signer.from_seed(bytes(range(32)))
ROTATED = Signer.from_seed(bytes(range(2, 34)))  # not trusted yet when its envelope arrives
CHANGES = 40
ITEM_BYTES = 330_000  # 40 of them: a 13 MiB envelope, whose failure record (base64) is over 16 MiB


def dlq_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("bridge")), "dlq", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_records_too_large_for_the_dlq_are_listed_and_replayed_from_files(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "current.pub").write_bytes(TRUSTED.public_pem())
    settings: dict[str, Any] = {
        "target_table": unique,
        "target_region": "us-west-2",
        "target_endpoint": moto_endpoint,
        "trusted_keys": str(trusted),
        "transport": f"{amqp_url}?queue={unique}",
        "quarantine_dir": str(tmp_path / "quarantine"),
    }
    config_file = tmp_path / "apply.yaml"
    config_file.write_text(yaml.safe_dump(settings))

    changes = []
    for i in range(CHANGES):
        key = {"tenant": {"S": "big"}, "user_id": {"N": str(i)}}
        blob = os.urandom(ITEM_BYTES // 2).hex()  # incompressible
        changes.append(Change(key, Operation.PUT, Version(1_000_000 + i, "eu-west-1", i), {**key, "blob": {"S": blob}}))
    body = encode(Batch("big", "eu-west-1", unique, 0, tuple(changes)), ROTATED, Compression.NONE)
    # One envelope the applier can verify comes first: an unknown key before any envelope has verified is
    # taken for a wrong trusted_keys setting and pauses the line instead of quarantining (docs/design.md).
    first_key = {"tenant": {"S": "small"}, "user_id": {"N": "0"}}
    first = Change(first_key, Operation.PUT, Version(1_000_000, "eu-west-1", 0), first_key)
    verified = encode(Batch("first", "eu-west-1", unique, 0, (first,)), TRUSTED, Compression.NONE)
    sender = open_transport(settings["transport"], "publish")
    try:
        sender.publish([OutgoingMessage(verified, "first", "p")])
        sender.publish([OutgoingMessage(body, "big", "p")])
    finally:
        sender.close()
    applier = build_applier(ApplyConfig.model_validate(settings), threading.Event())
    try:
        stats = applier.run(until_idle=2.0)
    finally:
        applier.close()
    assert stats.quarantined == 1 and applier.parker.quarantined_locally == 1
    (kept,) = (tmp_path / "quarantine").glob("*.failure.json")

    listed = dlq_cli("list", "--config", str(config_file), "--json", "--wait", "0.5")
    assert listed.returncode == 0, listed.stderr
    (row,) = orjson.loads(listed.stdout)
    assert (row["queue"], row["state"], row["error"], row["file"]) == (
        "local",
        "quarantined",
        "SignatureError",
        str(kept),
    )
    assert ROTATED.key_id in row["message"]
    table = dlq_cli("list", "--config", str(config_file), "--wait", "0.5")
    assert "local" in table.stdout and "1 quarantined" in table.stdout

    still = dlq_cli("replay", "--config", str(config_file), "--wait", "0.5")  # the key is not trusted yet
    assert still.returncode != 0 and kept.exists()
    (trusted / "rotated.pub").write_bytes(ROTATED.public_pem())
    replayed = dlq_cli("replay", "--config", str(config_file), "--wait", "0.5")
    assert replayed.returncode == 0, replayed.stderr
    assert orjson.loads(replayed.stdout.strip().splitlines()[-1])["replay"]["changes_applied"] == CHANGES
    assert not kept.exists()  # resolved: the file is gone
    pages = client.get_paginator("scan").paginate(TableName=unique, ConsistentRead=True, Select="COUNT")
    assert sum(page["Count"] for page in pages) == CHANGES + 1
