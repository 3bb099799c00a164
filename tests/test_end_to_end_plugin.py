"""One-way replication end to end over plugin transports: real processes, SIGKILL both.

The shape of tests/test_end_to_end.py (which runs amqp:// with more changes), shorter:
one run per scheme, so a third-party transport is held to the same standard.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from bridge.envelope import keygen
from bridge.workload import Workload, create_table, run_op
from tests import services
from tests.helpers import no_failures_anywhere, start, wait_identical
from tests.redis_server import delete_streams, redis_url

KEYS = ("tenant", "user_id")


@contextlib.contextmanager
def redis_destination(name: str) -> Iterator[str]:
    if importlib.util.find_spec("bridge_redis") is None:
        services.missing("transport plugin bridge_redis is not installed (pip install -e plugins/ddb-bridge-redis)")
    with redis_url() as base:
        # A killed applier's deliveries come back after 2 s of silence.
        yield f"{base}?stream={name}&claim_idle_ms=2000"
        delete_streams(base, name, f"{name}.dlq")


@contextlib.contextmanager
def nats_destination(name: str) -> Iterator[str]:
    if importlib.util.find_spec("bridge_nats") is None:
        services.missing("transport plugin bridge_nats is not installed (pip install -e plugins/ddb-bridge-nats)")
    base = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    parts = urlsplit(base)
    if not services.port_open(parts.hostname or "127.0.0.1", parts.port or 4222):
        services.missing(f"NATS with JetStream at {base}")
    # A killed applier's deliveries come back after ack_wait=2 s.
    yield f"{base}/{name}?ack_wait=2"

    async def delete() -> None:
        import nats
        import nats.js.errors

        nc = await nats.connect(base, connect_timeout=2, allow_reconnect=False)
        for stream in (name, f"{name}-dlq", f"{name}-dlq-parked"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(delete())


def wait_for_items(client: Any, table: str, at_least: int, timeout: float = 60) -> int:
    """The target's item count once it reaches ``at_least`` (a bound, not an assertion)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(client.scan(TableName=table, Select="COUNT")["Count"])
        if count >= at_least:
            break
        time.sleep(0.2)
    return count


DESTINATIONS: dict[str, Callable[[str], contextlib.AbstractContextManager[str]]] = {
    "redis": redis_destination,
    "nats": nats_destination,
}


@pytest.mark.aws
@pytest.mark.parametrize("scheme", sorted(DESTINATIONS))
def test_replication_over_plugin_survives_sigkill_of_both_processes(
    scheme: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    with DESTINATIONS[scheme](unique) as url:
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
        workload = Workload(seed=23, keys=150, big_item_every=200)
        try:
            for i, op in enumerate(workload.ops(400)):
                run_op(src, unique, op)
                if i == 130:
                    # Mid-run, not before the process did anything: wait for applied items.
                    applied_before_kill = wait_for_items(dst, unique, at_least=1)
                    pub.send_signal(signal.SIGKILL)
                    pub.wait()
                    pub = start("bridge.cli.publish", publish_args, log)
                if i == 260:
                    wait_for_items(dst, unique, at_least=applied_before_kill + 1)
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
        assert no_failures_anywhere(url.replace(f"stream={unique}", f"stream={unique}.dlq")) == []
    assert not (tmp_path / "q").exists()
