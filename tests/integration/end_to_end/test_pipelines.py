"""Many tables in one process: real bridge-publish / bridge-apply processes running three pipelines each.

Real parts: moto's server (sources in cn-north-1, targets in us-west-2), RabbitMQ (one queue per
table, from ``{table}`` in the URL), processes killed with SIGKILL and stopped with SIGTERM. The
three tables have different key schemas (S hash; N hash + S range; B hash). The publisher finds
them by pattern (``source_tables``); the applier lists them (``pipelines:``).
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.envelope import keygen
from bridge.plugin.manager import open_transport
from tests.helpers import start, wait_until
from tests.services import free_port

pytestmark = [pytest.mark.aws, pytest.mark.rabbitmq]

# name suffix -> (key schema, attribute definitions)
SCHEMAS: dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]] = {
    "s": ([{"AttributeName": "id", "KeyType": "HASH"}], [{"AttributeName": "id", "AttributeType": "S"}]),
    "n": (
        [{"AttributeName": "n", "KeyType": "HASH"}, {"AttributeName": "s", "KeyType": "RANGE"}],
        [{"AttributeName": "n", "AttributeType": "N"}, {"AttributeName": "s", "AttributeType": "S"}],
    ),
    "b": ([{"AttributeName": "b", "KeyType": "HASH"}], [{"AttributeName": "b", "AttributeType": "B"}]),
}


def create(client: Any, table: str, kind: str, *, stream: bool) -> None:
    keys, attributes = SCHEMAS[kind]
    extra: dict[str, Any] = {}
    if stream:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    client.create_table(
        TableName=table, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST", **extra
    )


def key(kind: str, i: int) -> dict[str, Any]:
    if kind == "s":
        return {"id": {"S": f"item-{i}"}}
    if kind == "n":
        return {"n": {"N": str(i % 7)}, "s": {"S": f"r{i}"}}
    return {"b": {"B": i.to_bytes(2, "big") + b"\x00\xff"}}


def key_names(kind: str) -> tuple[str, ...]:
    return tuple(k["AttributeName"] for k in SCHEMAS[kind][0])


class Writer(threading.Thread):
    """Puts, updates and deletes over a small key space of each table, round robin."""

    def __init__(self, client: Any, tables: dict[str, str], ops: int, seed: int, rate: float = 0) -> None:
        super().__init__(daemon=True)
        self.client, self.tables, self.ops, self.rng = client, tables, ops, random.Random(seed)
        self.rate = rate  # ops per second (0: as fast as the emulator takes them)
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            for n in range(self.ops):
                if self.rate:
                    time.sleep(max(0.0, started + n / self.rate - time.monotonic()))
                kind = "snb"[n % 3]
                table, k = self.tables[kind], key(kind, self.rng.randrange(40))
                roll = self.rng.random()
                if roll < 0.6:
                    item = {
                        **k,
                        "v": {"N": str(n)},
                        "tags": {"SS": ["a", f"t{n % 5}"]},
                        "blob": {"B": bytes([n % 256])},
                    }
                    self.client.put_item(TableName=table, Item=item)
                elif roll < 0.85:
                    self.client.update_item(
                        TableName=table,
                        Key=k,
                        UpdateExpression="SET w = :w",
                        ExpressionAttributeValues={":w": {"S": f"w{n}"}},
                    )
                else:
                    self.client.delete_item(TableName=table, Key=k)
        except BaseException as exc:  # reported by the test
            self.error = exc


def configs(tmp_path: Path, moto: str, amqp_url: str, unique: str) -> tuple[Path, Path]:
    private, public = keygen(tmp_path / "keys")
    publish, apply = tmp_path / "publish.yaml", tmp_path / "apply.yaml"
    publish.write_text(
        f"source_tables: ['{unique}-*']\nsource_region: cn-north-1\nsource_endpoint: {moto}\n"
        f"transport: {amqp_url}?queue={{table}}\nsigning_key: {private}\ncheckpoint: {tmp_path / 'cp.sqlite'}\n"
        f"quarantine_dir: {tmp_path / 'q'}\nbatch_max_wait: 0.05\n"
    )
    entries = "".join(f"  - target_table: {unique}-{kind}\n" for kind in SCHEMAS)
    apply.write_text(
        f"target_region: us-west-2\ntarget_endpoint: {moto}\ntransport: {amqp_url}?queue={{table}}\n"
        f"trusted_keys: {public}\nquarantine_dir: {tmp_path / 'q'}\nstatus_file: {tmp_path / 'status.json'}\n"
        f"pipelines:\n{entries}"
    )
    return publish, apply


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_a_failing_pipeline_does_not_stop_the_others(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    good, missing = f"{unique}-good", f"{unique}-late"
    create(src, good, "s", stream=True)
    private, _ = keygen(tmp_path / "keys")
    port = free_port()
    config = tmp_path / "publish.yaml"
    config.write_text(
        f"source_region: cn-north-1\nsource_endpoint: {moto_endpoint}\ntransport: {amqp_url}?queue={{table}}\n"
        f"signing_key: {private}\ncheckpoint: {tmp_path / 'cp.sqlite'}\nquarantine_dir: {tmp_path / 'q'}\n"
        f"batch_max_wait: 0.05\nmetrics_port: {port}\n"
        f"pipelines:\n  - source_table: {good}\n  - name: late\n    source_table: {missing}\n"
        # The same table over a broker that is not there: its own pipeline waits, the others go on.
        f"  - name: nobroker\n    source_table: {good}\n"
        f"    transport: amqp://guest:guest@127.0.0.1:{free_port()}//?queue={good}\n"
    )
    log = tmp_path / "publish.log"
    proc: subprocess.Popen[bytes] = start("bridge.cli.publish", ["--config", str(config)], log)
    queue = open_transport(f"{amqp_url}?queue={good}", "consume")
    try:
        wait_until("the metrics port", lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] != 0, timeout=30)
        src.put_item(TableName=good, Item={"id": {"S": "x"}})
        got: list[Any] = []
        wait_until("the good pipeline's envelope", lambda: bool(got.extend(queue.receive(10, 0.5)) or got), 60)
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and f"late: failed: source table '{missing}' does not exist" in body, body
        wait_until(
            "the broker-less pipeline shown", lambda: "nobroker: " in _get(f"http://127.0.0.1:{port}/readyz")[1], 30
        )
        assert _get(f"http://127.0.0.1:{port}/readyz?pipeline={good}")[0] == 200
        shown = CliRunner().invoke(admin, ["status", "--config", str(config)])
        assert f"pipeline {good}: publisher of {good}" in shown.output, shown.output
        assert f"pipeline late: FAILED: source table '{missing}' does not exist" in shown.output
        assert proc.poll() is None
        # The table appears: the failed pipeline is started again and becomes ready.
        create(src, missing, "s", stream=True)
        wait_until(
            "the late pipeline ready", lambda: _get(f"http://127.0.0.1:{port}/readyz?pipeline=late")[0] == 200, 60
        )
        assert _get(f"http://127.0.0.1:{port}/readyz?pipeline=nobroker")[0] == 503
    finally:
        queue.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert f"pipeline late failed: source table '{missing}' does not exist; starting it again" in output


def test_status_of_apply_pipelines_names_a_missing_target(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create(dst, f"{unique}-here", "s", stream=False)
    _, public = keygen(tmp_path / "keys")
    config = tmp_path / "apply.yaml"
    config.write_text(
        f"target_region: us-west-2\ntarget_endpoint: {moto_endpoint}\ntransport: {amqp_url}?queue={{table}}\n"
        f"trusted_keys: {public}\nstatus_file: {tmp_path / 'status.json'}\n"
        f"pipelines:\n  - target_table: {unique}-here\n  - name: gone\n    target_table: {unique}-gone\n"
    )
    shown = CliRunner().invoke(admin, ["status", "--config", str(config)])
    assert shown.exit_code == 12, shown.output  # BehindError: a pipeline is not well
    assert f"pipeline {unique}-here: applier of {unique}-here" in shown.output
    assert f"pipeline gone: FAILED: target table '{unique}-gone' does not exist" in shown.output
