"""ddb-bridge's transport conformance kit against the real NATS server (JetStream) at 127.0.0.1:4222.

Run from this directory: ``python -m pytest`` (NATS_URL overrides the server). The wrong-credentials
case starts its own nats-server with a password on a free loopback port (``nats-server`` on PATH or
/usr/sbin, NATS_SERVER overrides), and is skipped without one unless CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import nats
import pytest

from bridge.testing import TransportContract

NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin(action: Callable[[nats.NATS], object]) -> None:
    async def run() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
        try:
            await action(nc)  # type: ignore[misc]
        finally:
            await nc.close()

    asyncio.run(run())


async def delete_streams(nc: nats.NATS, *names: str) -> None:
    js = nc.jetstream()
    for name in names:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(name)


@pytest.fixture(scope="module")
def server() -> str:
    try:
        admin(lambda nc: nc.jetstream().account_info())
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"no NATS server with JetStream at {NATS_URL}: {exc}")
    return NATS_URL


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A second nats-server that wants user `bridge`, password `s3cret`."""
    binary = os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(binary):
        if IN_CI:
            pytest.fail(f"no nats-server binary at {binary}")
        pytest.skip(f"no nats-server binary at {binary}")
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store, "--user", "bridge", "--pass", "s3cret"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            yield f"nats://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(10)


class TestNatsTransport(TransportContract):
    # transport_url sets ack_wait=2: a killed consumer's deliveries come back after 2 s.
    redelivery_timeout = 10.0
    quiet_period = 1.0

    @pytest.fixture
    def transport_url(self, server: str, unique_destination: str) -> Iterator[str]:
        yield f"{server}/{unique_destination}?ack_wait=2"
        admin(lambda nc: delete_streams(nc, *(f"{unique_destination}{s}" for s in ("", "-dlq", "-dlq-parked"))))

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        return f"nats://127.0.0.1:{free_port()}/{unique_destination}"

    @pytest.fixture
    def wrong_credentials_url(self, password_server: str, unique_destination: str) -> str:
        return password_server.replace("nats://", "nats://bridge:wrong@") + f"/{unique_destination}"

    @pytest.fixture
    def delete_destination(self) -> Callable[[str], None]:
        def delete(url: str) -> None:
            stream = url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
            admin(lambda nc: delete_streams(nc, stream))

        return delete
