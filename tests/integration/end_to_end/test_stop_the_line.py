"""A failure that concerns every change stops the line instead of draining the queue (issue 11).

Real parts: a ``bridge-apply`` process, the real RabbitMQ, moto's server. Signed envelopes are put on
the queue directly (what bridge-publish would send), so the expected final table is known exactly.
Queue depth is read with ``rabbitmqctl`` (ready + unacknowledged), because a paused applier's
consumer may hold some messages unacked while it probes.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from bridge.demo.workload import create_table
from tests.deadletter_support import envelope, put, send, stored, trusted_dir
from tests.helpers import no_failures_anywhere, start, wait_until


def queue_messages(amqp_url: str, queue: str) -> int:
    """Messages on a queue, ready plus unacknowledged, as the broker counts them."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to count unacknowledged messages")
    vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


def apply_args(endpoint: str, table: str, url: str, trusted: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--target-table",
        table,
        "--target-region",
        "us-west-2",
        "--target-endpoint",
        endpoint,
        "--transport",
        url,
        "--trusted-keys",
        str(trusted),
        "--quarantine-dir",
        str(tmp_path / "q"),
        "--transient-retries",
        "0",
        "--accept-tables",  # the envelopes name the source table 'users'
        "users",
        *extra,
    ]


def wrong_key_schema_table(endpoint: str, table: str) -> Any:
    """A target keyed by ``id`` (S), while the test envelopes carry ``tenant`` + ``user_id``: every write
    fails. Returns its DynamoDB client."""
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-west-2")
    create_table(
        client,
        table,
        stream=False,
        key_schema=[{"AttributeName": "id", "KeyType": "HASH"}],
        attributes=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    return client


def expected(users: range, name: str) -> dict[int, str]:
    return {i: name for i in users}


def names(client: Any, table: str) -> dict[int, str]:
    return {i: item["name"]["S"] for i, item in stored(client, table).items()}


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_target_table_deleted_mid_run_pauses_keeps_the_queue_and_resumes(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    url = f"{amqp_url}?queue={unique}"
    log = tmp_path / "apply.log"
    proc = start("bridge.cli.apply", apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path), log)
    try:
        send(
            url,
            [envelope([put(i, name={"S": "first"}) for i in range(n, n + 5)], eid=f"a{n}") for n in range(0, 20, 5)],
        )
        wait_until("the first changes", lambda: names(client, unique) == expected(range(20), "first"), 60, log)

        client.delete_table(TableName=unique)
        client.get_waiter("table_not_exists").wait(TableName=unique)
        second = [
            envelope([put(i, ts=2_000_000, name={"S": "second"}) for i in range(n, n + 5)], eid=f"b{n}")
            for n in range(0, 40, 5)
        ]
        send(url, second)
        wait_until("the pause", lambda: "apply paused" in log.read_text(), 60, log)
        assert "ResourceNotFoundException" in log.read_text()
        assert queue_messages(amqp_url, unique) == len(second)
        # The first probe (5 s later) meets the cause in DescribeTable and says so in a second line;
        # after it, still nothing left the queue and the process is up.
        wait_until("a probe", lambda: "apply paused for" in log.read_text(), 30, log)
        assert queue_messages(amqp_url, unique) == len(second)
        assert proc.poll() is None, log.read_text()[-3000:]

        create_table(client, unique, stream=False)
        wait_until("the second changes", lambda: names(client, unique) == expected(range(40), "second"), 90, log)
        wait_until("the queue to drain", lambda: queue_messages(amqp_url, unique) == 0, 30, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "apply resumed" in output
    assert output.count("apply paused:") == 1, output[-3000:]  # one ERROR when it starts, not one per probe
    assert no_failures_anywhere(f"{url}.dlq") == []  # nothing parked, nothing left to retry
    assert not (tmp_path / "q").exists()


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_wrong_key_schema_pauses_and_until_idle_does_not_exit_0(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = wrong_key_schema_table(moto_endpoint, unique)
    url = f"{amqp_url}?queue={unique}"
    bodies = [envelope([put(i, name={"S": "x"}) for i in range(n, n + 5)], eid=f"k{n}") for n in range(0, 30, 5)]
    send(url, bodies)
    log = tmp_path / "apply.log"
    args = apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path, "--until-idle", "1")
    proc = start("bridge.cli.apply", [*args, "--max-paused", "4"], log)
    code = proc.wait(60)
    output = log.read_text()
    assert code == 9, output[-3000:]  # paused longer than --max-paused: the supervisor's turn
    assert "key schema mismatch" in output and "apply paused" in output
    assert queue_messages(amqp_url, unique) == len(bodies)
    assert no_failures_anywhere(f"{url}.dlq") == []
    assert client.scan(TableName=unique)["Count"] == 0


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_until_idle_exits_10_when_the_run_parked_or_quarantined_something(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    url = f"{amqp_url}?queue={unique}"
    trusted = trusted_dir(tmp_path)
    args = apply_args(moto_endpoint, unique, url, trusted, tmp_path, "--until-idle", "1")
    log = tmp_path / "apply.log"

    send(url, [envelope([put(1, name={"S": "ok"})], eid="clean")])
    assert start("bridge.cli.apply", args, log).wait(60) == 0, log.read_text()[-3000:]

    too_big = put(2, blob={"S": "x" * 420_000})  # over DynamoDB's 400 KB item limit: parked
    send(url, [envelope([put(3, name={"S": "ok"}), too_big], eid="poison")])
    assert start("bridge.cli.apply", args, log).wait(60) == 10, log.read_text()[-3000:]
    assert "1 change(s) parked and 0 envelope(s) quarantined" in log.read_text()
    assert set(names(client, unique)) == {1, 3}
    (parked,) = no_failures_anywhere(f"{url}.dlq")
    assert parked.changes == (1,)


@pytest.mark.aws
def test_sigterm_while_the_broker_is_unreachable_exits_0_within_seconds(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    with socket.socket() as s:  # a port nothing listens on: the broker is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}//?queue={unique}"
    log = tmp_path / "apply.log"
    proc = start("bridge.cli.apply", apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path), log)
    try:
        wait_until("the outage to be noticed", lambda: "unreachable since" in log.read_text(), 60, log)
        # several of core's attempts (0.2 s doubling up to 10 s) go by before the signal
        wait_until("a few attempts", lambda: time.monotonic() > _noticed(log) + 3, 30, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(60)
    took = time.monotonic() - sent
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert took < 5, f"took {took:.1f} s to stop\n{output[-3000:]}"
    # one WARNING for the outage, not one per attempt (of core's loop or of kombu's under it)
    assert output.count("unreachable since") == 1, output[-3000:]
    assert "Traceback" not in output


_NOTICED: dict[Path, float] = {}


def _noticed(log: Path) -> float:
    return _NOTICED.setdefault(log, time.monotonic())


class Forwarder:
    """A TCP relay from a local port to the real RabbitMQ: closed, the broker is unreachable; open,
    it is back. Nothing else on the machine shares the broker's fate."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.server: socket.socket | None = None

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        self.server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_a_broker_outage_logs_one_warning_when_it_starts_and_one_when_it_ends(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    broker = urlsplit(amqp_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = Forwarder(port, (broker.hostname or "127.0.0.1", broker.port or 5672))
    via_relay = f"amqp://{broker.username}:{broker.password}@127.0.0.1:{port}{broker.path}?queue={unique}"
    log = tmp_path / "apply.log"
    proc = start("bridge.cli.apply", apply_args(moto_endpoint, unique, via_relay, trusted_dir(tmp_path), tmp_path), log)
    try:
        wait_until("the outage to be noticed", lambda: "unreachable since" in log.read_text(), 60, log)
        relay.open()
        wait_until("the end of the outage", lambda: "reachable again" in log.read_text(), 60, log)
        send(f"{amqp_url}?queue={unique}", [envelope([put(1, name={"S": "after"})], eid="after")])
        wait_until("the change", lambda: names(client, unique) == {1: "after"}, 60, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        relay.close()
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert output.count("unreachable since") == 1 and output.count("reachable again") == 1, output[-3000:]
    assert output.count("WARNING") == 2, output[-3000:]  # nothing else warned about it
