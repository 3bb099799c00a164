"""Active-active end to end: two emulated regions writing the same keys at once, through RabbitMQ.

Each region runs bridge-publish (--active-active) and bridge-apply as real processes; one
publisher is SIGKILLed and restarted mid-run. The tables must end identical, with zero echo.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bridge.demo.emulator import moto_server
from bridge.demo.workload import create_table
from bridge.envelope import keygen
from tests.helpers import start, wait_identical

KEYS = ("tenant", "user_id")


def writer(client: Any, table: str, seed: int, ops: int, keys: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        for i in range(ops):
            key = {"tenant": {"S": "shared"}, "user_id": {"N": str(rng.randrange(keys))}}
            roll = rng.random()
            if roll < 0.2:
                client.delete_item(TableName=table, Key=key)
            elif roll < 0.45:
                client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET #w = :w, n = :n",
                    ExpressionAttributeNames={"#w": "writer"},
                    ExpressionAttributeValues={":w": {"S": f"w{seed}-upd-{i}"}, ":n": {"N": str(i)}},
                )
            else:
                client.put_item(
                    TableName=table,
                    Item={**key, "writer": {"S": f"w{seed}-{i}"}, "blob": {"B": rng.randbytes(16)}, "n": {"N": str(i)}},
                )
            time.sleep(rng.uniform(0, 0.03))
    except BaseException as exc:
        errors.append(exc)


def last_json(log: Path, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith(f'{{"{key}"')]


@pytest.mark.rabbitmq
@pytest.mark.aws
def wait_for_checkpoint(path: Path, proc: Any, timeout: float) -> None:
    """Until the SQLite checkpoint file holds a saved position (read-only: the publisher owns it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the publisher exited"
        if path.exists():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                if any(db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables):
                    return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint in {path} after {timeout} s")


def test_two_regions_converge_with_no_echo(amqp_url: str, unique: str, tmp_path: Path) -> None:
    with moto_server() as ep_a, moto_server() as ep_b:
        regions = {"a": ("cn-north-1", ep_a), "b": ("us-west-2", ep_b)}
        clients = {n: boto3.client("dynamodb", endpoint_url=ep, region_name=r) for n, (r, ep) in regions.items()}
        for client in clients.values():
            create_table(client, unique)
        keys = {n: keygen(tmp_path / f"keys-{n}") for n in regions}
        queue = {"a": f"{amqp_url}?queue={unique}-a-to-b", "b": f"{amqp_url}?queue={unique}-b-to-a"}
        other = {"a": "b", "b": "a"}
        log = {n: tmp_path / f"{n}.log" for n in regions}
        pub_args = {
            n: [
                "--source-table",
                unique,
                "--source-region",
                r,
                "--source-endpoint",
                ep,
                "--active-active",
                "--transport",
                queue[n],
                "--signing-key",
                str(keys[n][0]),
                "--checkpoint",
                str(tmp_path / f"cp-{n}.sqlite"),
                "--quarantine-dir",
                str(tmp_path / "q"),
            ]
            for n, (r, ep) in regions.items()
        }
        app_args = {
            n: [
                "--target-table",
                unique,
                "--target-region",
                r,
                "--target-endpoint",
                ep,
                "--transport",
                queue[other[n]],
                "--trusted-keys",
                str(keys[other[n]][1]),
                "--quarantine-dir",
                str(tmp_path / "q"),
            ]
            for n, (r, ep) in regions.items()
        }
        procs = {f"pub-{n}": start("bridge.cli.publish", pub_args[n], log[n]) for n in regions}
        procs.update({f"app-{n}": start("bridge.cli.apply", app_args[n], log[n]) for n in regions})
        errors: list[BaseException] = []
        writers = [
            threading.Thread(target=writer, args=(clients[n], unique, seed, 150, 12, errors))
            for seed, n in enumerate(regions)
        ]
        try:
            for w in writers:
                w.start()
            # Kill on observed progress: once pub-a has shipped and checkpointed something.
            wait_for_checkpoint(tmp_path / "cp-a.sqlite", procs["pub-a"], timeout=60)
            procs["pub-a"].send_signal(signal.SIGKILL)
            procs["pub-a"].wait()
            procs["pub-a"] = start("bridge.cli.publish", pub_args["a"], log["a"])
            for w in writers:
                w.join()
            assert not errors, errors
            diff = wait_identical(clients["a"], clients["b"], unique, KEYS, timeout=120)
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            codes = {name: p.wait(60) for name, p in procs.items()}
        output = "\n".join(f.read_text()[-2500:] for f in log.values())
        example = diff.different or diff.only_in_source or diff.only_in_target
        assert diff.identical, f"{diff.count} keys differ: {example}\n{output}"
        assert set(codes.values()) == {0}, output
        applied = [s for n in regions for s in last_json(log[n], "apply")]
        published = [s for n in regions for s in last_json(log[n], "publish")]
        assert applied and published
        assert sum(s["echo_received"] for s in applied) == 0, output  # echo traffic, measured at the receivers
        assert sum(s["active_active"]["own_writes_suppressed"] for s in published) > 0
        assert sum(s["apply"]["applied"] for s in applied) > 0
