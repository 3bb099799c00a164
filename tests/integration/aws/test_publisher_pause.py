"""The publisher stops the line on a systemic error too: paused, nothing lost or skipped, resumes.

A real Publisher (built by bridge.wiring, as bridge-publish builds it) reads moto's stream through a
real boto3 client. moto never refuses a permission, so a ``before-call`` hook answers GetRecords
with the AccessDeniedException AWS sends while ``denied`` is set; botocore raises it as the real one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from bridge.config import PublishConfig
from bridge.demo.workload import create_table
from bridge.envelope import TrustStore, decode, keygen
from bridge.envelope.keys import Signer
from bridge.plugin.manager import open_transport
from bridge.wiring import build_publisher
from tests.helpers import start, wait_until


def write(client: Any, table: str, ids: range) -> None:
    for i in ids:
        client.put_item(TableName=table, Item={"tenant": {"S": "p"}, "user_id": {"N": str(i)}})


@pytest.mark.aws
def test_access_denied_on_the_stream_pauses_and_resumes_without_a_gap(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique)
    private, _ = keygen(tmp_path / "keys")
    cfg = PublishConfig(
        source_table=unique,
        source_region="us-west-2",
        source_endpoint=moto_endpoint,
        transport=f"memory://{unique}",
        signing_key=private,
        checkpoint=str(tmp_path / "cp.sqlite"),
        quarantine_dir=tmp_path / "q",
        batch_max_wait=0.05,
    )
    stop = threading.Event()
    publisher = build_publisher(cfg, stop)
    publisher.pause.probe_interval_s = 0.5
    denied = threading.Event()

    def refuse(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not denied.is_set():
            return None
        error = {"Code": "AccessDeniedException", "Message": "not authorized to perform dynamodb:GetRecords"}
        return AWSResponse(params.get("url", ""), 400, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    publisher.reader._client.meta.events.register("before-call.dynamodbstreams.GetRecords", refuse)
    consumer = open_transport(f"memory://{unique}", "consume")
    trust = TrustStore.of(Signer.from_file(private))
    received: list[int] = []

    def take() -> list[int]:
        for delivery in consumer.receive(100, timeout=0.1):
            received.extend(int(c.keys["user_id"]["N"]) for c in decode(delivery.body, trust).changes)
            consumer.ack(delivery)
        return received

    thread = threading.Thread(target=publisher.run, daemon=True)
    thread.start()
    try:
        write(client, unique, range(1, 6))
        wait_until("the first changes", lambda: sorted(set(take())) == [1, 2, 3, 4, 5])

        denied.set()
        write(client, unique, range(6, 11))
        wait_until("the pause", lambda: not publisher.health.ready()[0])
        _, reason = publisher.health.ready()
        assert "publish paused" in reason and "AccessDeniedException" in reason
        assert max(take()) == 5 and thread.is_alive()  # nothing new shipped, still running

        denied.clear()
        wait_until("the rest", lambda: set(take()) >= set(range(1, 11)))
        wait_until("ready again", lambda: publisher.health.ready()[0])
    finally:
        stop.set()
        thread.join(30)
        publisher.close()
        consumer.close()
    assert not thread.is_alive()
    first_seen = list(dict.fromkeys(received))
    assert first_seen == list(range(1, 11))  # in stream order, no gap (a re-send is harmless)


@pytest.mark.aws
def test_bridge_publish_pauses_when_its_table_is_deleted_and_exits_9_after_max_paused(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique)
    write(client, unique, range(1, 4))
    private, _ = keygen(tmp_path / "keys")
    log = tmp_path / "publish.log"
    args = ["--source-table", unique, "--source-region", "us-west-2", "--source-endpoint", moto_endpoint]
    args += ["--transport", "memory://x", "--signing-key", str(private), "--checkpoint", str(tmp_path / "cp.sqlite")]
    proc = start("bridge.cli.publish", [*args, "--max-paused", "3"], log)
    try:
        wait_until("the publisher to start", lambda: "publishing" in log.read_text(), 60)
        client.delete_table(TableName=unique)
        wait_until("the pause", lambda: "publish paused" in log.read_text(), 60)
        assert proc.poll() is None  # paused, not gone
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 9, output[-3000:]
    assert "more than --max-paused 3" in output and "Traceback" not in output
