"""Turning a ``redis://`` / ``rediss://`` transport URL into redis-py client settings.

The query string carries bridge-only options (``stream``, ``group``, ``claim_idle_ms``,
TLS files, ...). None of it reaches redis-py as a URL: the client is built from explicit
keyword arguments, so a typo in an option can never become a surprising client setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.errors import ConfigError
from bridge.transport import TransportURL
from bridge.transport.params import TLS_PARAMS, Tls, UrlParams

KNOWN_PARAMS = frozenset({"stream", "group", "claim_idle_ms", "connect_timeout", "socket_timeout", *TLS_PARAMS})


@dataclass(frozen=True)
class RedisSettings:
    """Everything a :class:`~bridge_redis.transport.RedisTransport` needs, validated once."""

    url: TransportURL = field(repr=False)  # may hold the password
    stream: str
    group: str = "bridge"
    # A delivery unacked for this long is taken over by another consumer: the redelivery
    # after a consumer crash. Longer than the slowest batch apply, or batches that are
    # merely slow get applied twice (harmless, the applier dedupes, but wasted work).
    claim_idle_ms: int = 60_000
    connect_timeout: float = 10.0
    # Bounds every reply, including a blocking XREADGROUP (which waits at most half of it).
    socket_timeout: float = 30.0
    client_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_url(cls, url: TransportURL) -> RedisSettings:
        params = UrlParams(url, KNOWN_PARAMS)
        connect_timeout = params.number("connect_timeout", 10.0, float, minimum=0.001)
        socket_timeout = params.number("socket_timeout", 30.0, float, minimum=0.1)
        return cls(
            url=url,
            stream=params.text("stream", required="add ?stream=NAME"),
            group=params.text("group", "bridge"),
            claim_idle_ms=params.number("claim_idle_ms", 60_000, int, minimum=1),
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            client_options=_client_options(params, connect_timeout, socket_timeout),
        )

    @property
    def where(self) -> str:
        """The URL without its password, for log lines and error messages."""
        return self.url.redacted()

    def client(self, name: str) -> redis.Redis:
        """A new client; it connects on its first command. ``name`` shows in CLIENT LIST."""
        return redis.Redis(**self.client_options, client_name=name)


def _client_options(params: UrlParams, connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
    host, port = params.host_port(6379)
    db_text = params.url.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"database {db_text!r} in transport URL {params.where!r} must be a number (/0)")
    username, password = params.credentials()
    return {
        "host": host,
        "port": port,
        "db": int(db_text),
        "username": username,
        "password": password,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        # No retries inside redis-py: core's retry loop owns retrying, and a silently
        # re-sent MULTI/EXEC could double a batch without us knowing.
        "retry": Retry(NoBackoff(), 0),
        **_ssl_options(params.tls(("rediss",))),
    }


def _ssl_options(tls: Tls | None) -> dict[str, Any]:
    if tls is None:
        return {}
    options: dict[str, Any] = {
        "ssl": True,
        "ssl_cert_reqs": "required" if tls.verify else "none",
        "ssl_check_hostname": tls.verify,
    }
    for value, option in ((tls.ca, "ssl_ca_certs"), (tls.cert, "ssl_certfile"), (tls.key, "ssl_keyfile")):
        if value:
            options[option] = value
    return options
