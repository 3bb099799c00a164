"""Finding the real Redis the redis:// tests run against (127.0.0.1:6379, BRIDGE_REDIS_URL overrides)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from tests import services

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """The base URL (no query) of a Redis that answers; missing() otherwise."""
    url = os.environ.get("BRIDGE_REDIS_URL", DEFAULT_REDIS_URL)
    parts = urlsplit(url)
    if not services.port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        services.missing(f"Redis at {url} (set BRIDGE_REDIS_URL, start one with `redis-server --daemonize yes`)")
    yield url


def delete_streams(base_url: str, *streams: str) -> None:
    import redis

    client = redis.Redis.from_url(base_url)
    try:
        client.delete(*streams)
    finally:
        client.close()
