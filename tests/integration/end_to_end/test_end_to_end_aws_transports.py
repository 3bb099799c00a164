"""One-way replication end to end over the AWS transports: real processes, moto's server, SIGKILL.

The shape of tests/integration/end_to_end/test_end_to_end.py (bridge-publish + bridge-apply as processes, both killed
mid-run, tables identical at the end, nothing dead-lettered) over ``kinesis://`` and ``sqs://``
standard and FIFO, with fewer changes to keep CI short. All of DynamoDB, Streams, Kinesis and SQS
are one moto server process.
"""

from __future__ import annotations

import signal
from pathlib import Path

import boto3
import pytest

from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from bridge.plugin.manager import open_transport
from tests.helpers import no_failures_anywhere, start, wait_identical

KEYS = ("tenant", "user_id")
CHANGES = 300


def transport_url(kind: str, moto_endpoint: str, name: str, tmp_path: Path) -> str:
    aws = f"region=us-west-2&endpoint_url={moto_endpoint}"
    if kind == "kinesis":
        return f"kinesis://{name}?{aws}&checkpoint={tmp_path / 'kinesis-checkpoints.sqlite'}"
    # A short visibility timeout: the killed applier's messages come back within seconds.
    return f"sqs://{name}{'.fifo' if kind == 'sqs-fifo' else ''}?{aws}&visibility_timeout=5"


@pytest.mark.aws
@pytest.mark.parametrize("kind", ["kinesis", "sqs", "sqs-fifo"])
def test_replication_survives_sigkill_of_both_processes(
    moto_endpoint: str, unique: str, tmp_path: Path, kind: str
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    url = transport_url(kind, moto_endpoint, unique, tmp_path)
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
    # every attribute type, composite keys, and an item near DynamoDB's 400 KB limit
    workload = Workload(seed=13, keys=120, big_item_every=CHANGES // 2)
    try:
        for i, op in enumerate(workload.ops(CHANGES)):
            run_op(src, unique, op)
            if i == CHANGES // 3:
                pub.send_signal(signal.SIGKILL)
                pub.wait()
                pub = start("bridge.cli.publish", publish_args, log)
            if i == 2 * CHANGES // 3:
                app.send_signal(signal.SIGKILL)
                app.wait()
                app = start("bridge.cli.apply", apply_args, log)
        diff = wait_identical(src, dst, unique, KEYS, timeout=180)
    finally:
        for proc in (pub, app):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (pub, app)]
    output = log.read_text()
    example = diff.different[:3] or diff.only_in_source[:3] or diff.only_in_target[:3]
    assert diff.identical, f"{diff.count} keys differ, e.g. {example}\n{output[-3000:]}"
    assert diff.compared > 50
    assert codes == [0, 0], output[-3000:]  # SIGTERM: finish in-flight work, checkpoint, exit 0
    assert no_failures_anywhere(open_transport(url, "dlq").dead_letter_url().raw) == []
    assert not (tmp_path / "q").exists()
