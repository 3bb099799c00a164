"""One-way replication end to end: real processes, real RabbitMQ, moto's server, SIGKILL."""

from __future__ import annotations

import signal
from pathlib import Path

import boto3
import pytest

from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from tests.helpers import no_failures_anywhere, start, wait_identical

KEYS = ("tenant", "user_id")


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_replication_survives_sigkill_of_both_processes(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    url = f"{amqp_url}?queue={unique}"
    publish_args = [
        "--source-table",
        unique,
        "--source-region",
        "cn-north-1",
        "--source-endpoint",
        moto_endpoint,
        "--transport",
        url,
        "--signing-key",
        str(private),
        "--checkpoint",
        str(tmp_path / "cp.sqlite"),
        "--quarantine-dir",
        str(tmp_path / "q"),
        "--timestamp-attribute",
        "updated_at",
    ]
    apply_args = [
        "--target-table",
        unique,
        "--target-region",
        "us-west-2",
        "--target-endpoint",
        moto_endpoint,
        "--transport",
        url,
        "--trusted-keys",
        str(public),
        "--quarantine-dir",
        str(tmp_path / "q"),
    ]
    log = tmp_path / "bridge.log"
    pub = start("bridge.cli.publish", publish_args, log)
    app = start("bridge.cli.apply", apply_args, log)
    # every attribute type, composite keys, and a few items near DynamoDB's 400 KB limit
    workload = Workload(seed=11, keys=300, big_item_every=300)
    try:
        for i, op in enumerate(workload.ops(1200)):
            run_op(src, unique, op)
            if i == 400:
                pub.send_signal(signal.SIGKILL)
                pub.wait()
                pub = start("bridge.cli.publish", publish_args, log)
            if i == 800:
                app.send_signal(signal.SIGKILL)
                app.wait()
                app = start("bridge.cli.apply", apply_args, log)
        diff = wait_identical(src, dst, unique, KEYS, timeout=240)
    finally:
        for proc in (pub, app):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (pub, app)]
    output = log.read_text()
    example = diff.different[:3] or diff.only_in_source[:3] or diff.only_in_target[:3]
    assert diff.identical, f"{diff.count} keys differ, e.g. {example}\n{output[-3000:]}"
    assert diff.compared > 100
    assert codes == [0, 0], output[-3000:]  # SIGTERM: finish in-flight work, checkpoint, exit 0
    # logs at INFO carry neither secrets nor item contents
    assert "guest:guest" not in output and "ünïcødé" not in output and "Seattle" not in output
    assert no_failures_anywhere(f"{amqp_url}?queue={unique}.dlq") == []
    assert not (tmp_path / "q").exists()
