"""One-way replication end to end, every shipped transport: real processes, SIGKILL both mid-run.

bridge-publish and bridge-apply run as processes against moto's server (DynamoDB, Streams, Kinesis,
SQS in one process) and a real broker (RabbitMQ, Redis, NATS JetStream). A writer thread changes the source table
(every attribute type, composite keys, items near DynamoDB's 400 KB limit) while the test kills the
publisher once the target shows applied changes, then the applier once the target has moved on
again: kills land on observed progress, never at a fixed count or after a sleep. At the end the
tables are identical, both processes exit 0 on SIGTERM, and nothing was dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from bridge.plugin.manager import open_transport
from tests import services
from tests.helpers import no_failures_anywhere, start, wait_identical, wait_until
from tests.redis_server import delete_streams, redis_url

KEYS = ("tenant", "user_id")


@dataclass(frozen=True)
class Case:
    changes: int
    seed: int
    destination: Callable[..., contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def amqp(request: pytest.FixtureRequest, name: str, tmp_path: Path, moto: str) -> Iterator[str]:
    yield f"{request.getfixturevalue('amqp_url')}?queue={name}"


@contextlib.contextmanager
def kinesis(request: pytest.FixtureRequest, name: str, tmp_path: Path, moto: str) -> Iterator[str]:
    yield f"kinesis://{name}?region=us-west-2&endpoint_url={moto}&checkpoint={tmp_path / 'kinesis-cp.sqlite'}"


def sqs(fifo: bool) -> Callable[..., contextlib.AbstractContextManager[str]]:
    @contextlib.contextmanager
    def destination(request: pytest.FixtureRequest, name: str, tmp_path: Path, moto: str) -> Iterator[str]:
        # A short visibility timeout: the killed applier's messages come back within seconds.
        suffix = ".fifo" if fifo else ""
        yield f"sqs://{name}{suffix}?region=us-west-2&endpoint_url={moto}&visibility_timeout=5"

    return destination


@contextlib.contextmanager
def redis(request: pytest.FixtureRequest, name: str, tmp_path: Path, moto: str) -> Iterator[str]:
    if importlib.util.find_spec("bridge_redis") is None:
        services.missing("transport plugin bridge_redis is not installed (pip install -e plugins/ddb-bridge-redis)")
    with redis_url() as base:
        # A killed applier's deliveries come back after 2 s of silence.
        yield f"{base}?stream={name}&claim_idle_ms=2000"
        delete_streams(base, name, f"{name}.dlq", f"{name}.dlq.parked")


@contextlib.contextmanager
def nats(request: pytest.FixtureRequest, name: str, tmp_path: Path, moto: str) -> Iterator[str]:
    if importlib.util.find_spec("bridge_nats") is None:
        services.missing("transport plugin bridge_nats is not installed (pip install -e plugins/ddb-bridge-nats)")
    base = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    parts = urlsplit(base)
    if not services.port_open(parts.hostname or "127.0.0.1", parts.port or 4222):
        services.missing(f"NATS with JetStream at {base}")
    # A killed applier's deliveries come back after ack_wait=2 s.
    yield f"{base}/{name}?ack_wait=2"

    async def delete() -> None:
        import nats as nats_client
        import nats.js.errors

        nc = await nats_client.connect(base, connect_timeout=2, allow_reconnect=False)
        for stream in (name, f"{name}-dlq", f"{name}-dlq-parked"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(delete())


CASES = {
    "amqp": Case(1200, 11, amqp),
    "kinesis": Case(300, 13, kinesis),
    "sqs": Case(300, 13, sqs(fifo=False)),
    "sqs-fifo": Case(300, 13, sqs(fifo=True)),
    "redis": Case(400, 23, redis),
    "nats": Case(400, 23, nats),
}


class Writer(threading.Thread):
    def __init__(self, client: Any, table: str, workload: Workload, changes: int) -> None:
        super().__init__(daemon=True)
        self.client, self.table, self.workload, self.changes = client, table, workload, changes
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # Lazily: each op takes its timestamp attribute when it is made, just before its write.
            for op in self.workload.ops(self.changes):
                run_op(self.client, self.table, op)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def describe(src: Any, dst: Any, table: str, keys: list[Any]) -> list[str]:
    """What differs for a few keys: versions and timestamps, not item contents."""

    def brief(client: Any, key: Any) -> dict[str, Any]:
        item = client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        if item is None:
            return {}
        return {k: v for k, v in item.items() if k in {"updated_at", "_bridge_v"}} | {"attributes": len(item)}

    return [f"{key}: source {brief(src, key)} target {brief(dst, key)}" for key in keys]


def target_count(client: Any, table: str) -> int:
    return int(client.scan(TableName=table, Select="COUNT")["Count"])


def kill_and_restart(proc: subprocess.Popen[bytes], module: str, args: list[str], log: Path) -> Any:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return start(module, args, log)


@pytest.mark.aws
@pytest.mark.parametrize("kind", sorted(CASES))
def test_replication_survives_sigkill_of_both_processes(
    kind: str, moto_endpoint: str, unique: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    case = CASES[kind]
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    quarantine = str(tmp_path / "q")
    with case.destination(request, unique, tmp_path, moto_endpoint) as url:
        publish = ["--source-table", unique, "--source-region", "cn-north-1", "--source-endpoint", moto_endpoint]
        publish += ["--transport", url, "--signing-key", str(private), "--checkpoint", str(tmp_path / "cp.sqlite")]
        publish += ["--quarantine-dir", quarantine, "--timestamp-attribute", "updated_at"]
        apply = ["--target-table", unique, "--target-region", "us-west-2", "--target-endpoint", moto_endpoint]
        apply += ["--transport", url, "--trusted-keys", str(public), "--quarantine-dir", quarantine]
        log = tmp_path / "bridge.log"
        pub = start("bridge.cli.publish", publish, log)
        app = start("bridge.cli.apply", apply, log)
        writer = Writer(src, unique, Workload(seed=case.seed, keys=case.changes // 4, big_item_every=150), case.changes)
        writer.start()
        try:
            # Kill the publisher once changes flow end to end, the applier once more have arrived since.
            wait_until("the first applied changes", lambda: target_count(dst, unique) >= 10, timeout=120)
            pub = kill_and_restart(pub, "bridge.cli.publish", publish, log)
            applied_at_first_kill = target_count(dst, unique)
            wait_until(
                "changes applied after the publisher's restart",
                lambda: target_count(dst, unique) > applied_at_first_kill + 5,
                timeout=120,
            )
            app = kill_and_restart(app, "bridge.cli.apply", apply, log)
            writer.join(timeout=300)
            assert not writer.is_alive() and writer.error is None, writer.error
            diff = wait_identical(src, dst, unique, KEYS, timeout=240)
        finally:
            for proc in (pub, app):
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(60) for proc in (pub, app)]
        output = log.read_text()
        example = diff.different[:3] or diff.only_in_source[:3] or diff.only_in_target[:3]
        assert diff.identical, f"{diff.count} keys differ, e.g. {describe(src, dst, unique, example)}\n{output[-3000:]}"
        assert diff.compared > 50
        assert codes == [0, 0], output[-3000:]  # SIGTERM: finish in-flight work, checkpoint, exit 0
        # logs at INFO carry neither secrets nor item contents
        assert "guest:guest" not in output and "ünïcødé" not in output and "Seattle" not in output
        assert no_failures_anywhere(open_transport(url, "dlq").dead_letter_url().raw) == []
    assert not (tmp_path / "q").exists()
