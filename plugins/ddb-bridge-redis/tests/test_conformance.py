"""ddb-bridge's transport conformance kit against the real Redis at 127.0.0.1:6379.

Run from this directory: ``python -m pytest`` (REDIS_URL overrides the server).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import redis

from bridge.testing import TransportContract

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    client.close()


class TestRedisTransport(TransportContract):
    # transport_url sets claim_idle_ms=1000: a killed consumer's deliveries come back after 1 s.
    redelivery_timeout = 10.0

    @pytest.fixture
    def transport_url(self, server: redis.Redis, unique_destination: str) -> Iterator[str]:
        yield f"{REDIS_URL}?stream={unique_destination}&claim_idle_ms=1000"
        server.delete(unique_destination, f"{unique_destination}.dlq")

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        with socket.socket() as s:  # a free port: nothing listens there
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"redis://127.0.0.1:{port}/0?stream={unique_destination}"
