"""ddb-bridge's transport conformance kit against the real Redis at 127.0.0.1:6379.

Run from this directory: ``python -m pytest`` (REDIS_URL overrides the server). ddb-bridge's
own suite runs this directory too (it is in setup.cfg's testpaths).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
import redis_support as support
from redis_support import REDIS_URL

from bridge.testing import TransportContract


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        support.missing(f"Redis at {REDIS_URL} ({exc})")
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
        return f"redis://127.0.0.1:{support.free_port()}/0?stream={unique_destination}"

    @pytest.fixture
    def wrong_credentials_url(self, server: redis.Redis, unique_destination: str) -> str:
        # No such ACL user: Redis refuses AUTH whether or not the default user has a password.
        return REDIS_URL.replace("redis://", "redis://nobody:wrong@", 1) + f"?stream={unique_destination}"

    @pytest.fixture
    def delete_destination(self, server: redis.Redis) -> Callable[[str], None]:
        return lambda url: server.delete(url.split("stream=")[1].split("&")[0])
