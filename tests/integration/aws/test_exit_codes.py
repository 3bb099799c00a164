"""What a missing table or stream does at start, as the README's exit-code table says (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from bridge.demo.workload import create_table
from bridge.envelope import keygen


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.aws
def test_a_missing_table_or_stream_exits_2_with_one_line(moto_endpoint: str, unique: str, tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "keys")
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    publish = ["--source-region", "us-west-2", "--source-endpoint", moto_endpoint, "--transport", "memory://x"]
    publish += ["--signing-key", str(private), "--checkpoint", str(tmp_path / "cp.sqlite")]
    for table, why in ((unique + "-gone", "does not exist"), (unique, "has no stream")):
        result = run("bridge.cli.publish", "--source-table", table, *publish)
        assert result.returncode == 2, result.stderr
        assert why in result.stderr and "Traceback" not in result.stderr
    apply = ["--target-region", "us-west-2", "--target-endpoint", moto_endpoint, "--transport", "memory://x"]
    result = run("bridge.cli.apply", "--target-table", unique + "-gone", "--trusted-keys", str(public), *apply)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.aws
def test_publish_until_idle_exits_10_when_the_run_parked_a_change(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    private, _ = keygen(tmp_path / "keys")
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique)
    # SQS on moto with a small per-queue limit: a change of incompressible bytes cannot fit at all.
    transport = f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&max_message_bytes=2048"
    args = ["--source-table", unique, "--source-region", "us-west-2", "--source-endpoint", moto_endpoint]
    args += ["--transport", transport, "--signing-key", str(private), "--checkpoint", str(tmp_path / "cp.sqlite")]
    args += ["--quarantine-dir", str(tmp_path / "q"), "--until-idle", "2"]

    client.put_item(TableName=unique, Item={"tenant": {"S": "a"}, "user_id": {"N": "1"}})
    clean = run("bridge.cli.publish", *args)
    assert clean.returncode == 0, clean.stderr

    blob = {"B": os.urandom(8192)}
    client.put_item(TableName=unique, Item={"tenant": {"S": "a"}, "user_id": {"N": "2"}, "blob": blob})
    parked = run("bridge.cli.publish", *args)
    assert parked.returncode == 10, parked.stderr
    assert "1 record(s) or change(s) parked in this run" in parked.stderr
    assert '"oversize":1' in parked.stdout
