"""``bridge-apply --processes 2`` on real parts: RabbitMQ, moto's server, real child processes (issue 13).

Two consumers on one queue; one of them is SIGKILLed mid-run. Its unacked messages go back to the
queue, the parent starts it again, and the target ends exactly as last writer wins says, whichever
consumer applied which change in which order: the newer versions are sent *before* the older ones.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from bridge.demo.workload import create_table
from tests.deadletter_support import envelope, put, send, trusted_dir
from tests.helpers import no_failures_anywhere, start, wait_until
from tests.integration.end_to_end.test_stop_the_line import (
    apply_args,
    expected,
    names,
    queue_messages,
    wrong_key_schema_table,
)

PIDS = re.compile(r"process (\d+) started \(pid (\d+)\)")


def free_ports_from() -> int:
    """A port P with P + 1 and P + 2 free too: the group on P, child i on P + 1 + i."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            taken = []
            try:
                for offset in (1, 2):
                    b = socket.socket()
                    taken.append(b)
                    b.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            finally:
                for b in taken:
                    b.close()
            return port
    raise AssertionError("no three adjacent free ports")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def child_pids(log: Path) -> dict[int, int]:
    """The children's pids by index, the latest start of each."""
    return {int(i): int(pid) for i, pid in PIDS.findall(log.read_text())}


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_two_processes_survive_a_sigkilled_child_and_drain_on_sigterm(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    # A small QoS so both consumers get messages, and the killed one holds some unacked.
    url = f"{amqp_url}?queue={unique}&prefetch=4"
    users = range(120)
    newer = [
        envelope([put(i, ts=2_000_000, name={"S": "new"}) for i in range(n, n + 5)], eid=f"n{n}")
        for n in range(0, 120, 5)
    ]
    older = [envelope([put(i, name={"S": "old"}) for i in range(n, n + 5)], eid=f"o{n}") for n in range(0, 120, 5)]
    send(url, newer + older)  # the newer first: order across consumers must not matter
    log = tmp_path / "apply.log"
    args = apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path, "--batch-messages", "2")
    port = free_ports_from()
    status = tmp_path / "s.json"
    extra = ["--processes", "2", "--status-file", str(status), "--metrics-port", str(port)]
    proc = start("bridge.cli.apply", [*args, *extra], log)
    try:
        wait_until("two children", lambda: len(child_pids(log)) == 2, 30, log)
        group = f"http://127.0.0.1:{port}"
        wait_until("the group's readiness", lambda: get(f"{group}/readyz")[0] == 200, 30, log)
        assert get(f"{group}/readyz")[1] == "all 2 processes ok\n"
        wait_until("some changes", lambda: len(names(client, unique)) >= 10, 60, log)
        victim = child_pids(log)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until("the restart", lambda: child_pids(log).get(0) not in (None, victim), 30, log)
        wait_until("every change", lambda: names(client, unique) == expected(users, "new"), 90, log)
        wait_until("the queue to drain", lambda: queue_messages(amqp_url, unique) == 0, 30, log)
        children = list(child_pids(log).values())
        # the restarted child serves on its port again
        wait_until("the group's readiness again", lambda: get(f"{group}/readyz")[0] == 200, 30, log)
        for i in (0, 1):  # each child's own port: the group's port + 1 + i
            assert get(f"http://127.0.0.1:{port + 1 + i}/readyz")[0] == 200
        figures = get(f"{group}/metrics")[1]
        assert figures.count("# TYPE bridge_changes_applied_total counter") == 1, figures  # one family
        assert re.search(r'bridge_changes_applied_total\{[^}]*process="1"', figures), figures
        assert 'bridge_ready{process="0"' in figures and 'bridge_ready{process="1"' in figures, figures
        wait_until("the status file", status.exists, 15, log)  # child 0's, every 5 s
    finally:
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(60)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert time.monotonic() - sent < 15, output[-3000:]
    assert "process 0 killed by SIGKILL: starting it again" in output
    for pid in children:  # every child stopped with the parent
        assert gone(pid)
    assert no_failures_anywhere(f"{url.split('&', maxsplit=1)[0]}.dlq") == []
    assert not (tmp_path / "q").exists()


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_a_child_stopping_the_line_stops_the_group_with_its_code(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    # The wrong key schema pauses every child; past --max-paused each exits 9, and so does the group.
    client = wrong_key_schema_table(moto_endpoint, unique)
    url = f"{amqp_url}?queue={unique}&prefetch=2"
    send(url, [envelope([put(i, name={"S": "x"})], eid=f"k{i}") for i in range(6)])
    log = tmp_path / "apply.log"
    args = apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path, "--max-paused", "3")
    code = start("bridge.cli.apply", [*args, "--processes", "2", "--status-file", str(tmp_path / "s.json")], log).wait(
        60
    )
    output = log.read_text()
    assert code == 9, output[-3000:]
    assert "exited 9: stopping the others" in output
    assert client.scan(TableName=unique)["Count"] == 0


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_until_idle_exits_0_once_every_child_drained(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    url = f"{amqp_url}?queue={unique}&prefetch=2"
    send(url, [envelope([put(i, name={"S": "x"}) for i in range(n, n + 5)], eid=f"u{n}") for n in range(0, 40, 5)])
    log = tmp_path / "apply.log"
    args = apply_args(moto_endpoint, unique, url, trusted_dir(tmp_path), tmp_path, "--until-idle", "1")
    code = start("bridge.cli.apply", [*args, "--processes", "2", "--status-file", str(tmp_path / "s.json")], log).wait(
        60
    )
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "process 0 finished" in output and "process 1 finished" in output, output[-3000:]
    assert output.count('{"apply":') == 2, output[-3000:]  # one summary line per child
    assert names(client, unique) == expected(range(40), "x")


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts: it runs nothing)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return True


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_children_stop_when_the_parent_is_sigkilled(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    log = tmp_path / "apply.log"
    args = apply_args(moto_endpoint, unique, f"{amqp_url}?queue={unique}", trusted_dir(tmp_path), tmp_path)
    proc = start("bridge.cli.apply", [*args, "--processes", "2", "--status-file", str(tmp_path / "s.json")], log)
    wait_until("two children", lambda: len(child_pids(log)) == 2, 30, log)
    wait_until("the children to consume", lambda: log.read_text().count("applying to") == 2, 30, log)
    proc.kill()
    proc.wait(10)
    for pid in child_pids(log).values():  # no orphaned consumers holding messages
        wait_until(f"child {pid} to stop", lambda pid=pid: gone(pid), 20, log)
    assert "supervising process" in log.read_text()
