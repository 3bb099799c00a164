"""Finding the real services tests run against: RabbitMQ and moto's server.

Under ``CI=true`` a missing service fails the test run; elsewhere the test is skipped
with the reason. testcontainers starts a RabbitMQ only where a Docker engine answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {what}", pytrace=False)
    pytest.skip(f"service not available: {what}")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_engine_reachable() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def rabbitmq_url() -> Iterator[str]:
    url = os.environ.get("BRIDGE_AMQP_URL", DEFAULT_AMQP_URL)
    parts = urlsplit(url)
    if port_open(parts.hostname or "127.0.0.1", parts.port or 5672):
        yield url
        return
    if docker_engine_reachable():
        from testcontainers.rabbitmq import RabbitMqContainer  # only where Docker answers

        with RabbitMqContainer("rabbitmq:3.13") as rabbit:
            host = rabbit.get_container_host_ip()
            yield f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//"
        return
    missing(f"RabbitMQ at {url} (set BRIDGE_AMQP_URL, start one with `rabbitmq-server -detached`)")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    from bridge.demo.emulator import moto_server as start_moto
    from bridge.errors import BridgeError

    try:
        with start_moto() as url:
            yield url
    except BridgeError as exc:
        missing(str(exc))
