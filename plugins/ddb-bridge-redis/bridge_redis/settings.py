"""Turning a ``redis://`` / ``rediss://`` transport URL into redis-py client settings.

The query string carries bridge-only options (``stream``, ``group``, ``claim_idle_ms``,
TLS files, ...). None of it reaches redis-py as a URL: the client is built from explicit
keyword arguments, so a typo in an option can never become a surprising client setting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.errors import ConfigError
from bridge.transport import TransportURL

log = logging.getLogger(__name__)

_SSL_KEYS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify")
KNOWN_PARAMS = frozenset({"stream", "group", "claim_idle_ms", "connect_timeout", "socket_timeout", *_SSL_KEYS})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

N = TypeVar("N", int, float)


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
        where = url.redacted()
        stream = url.params.get("stream", "").strip()
        if not stream:
            raise ConfigError(f"transport URL {where!r} has no stream: add ?stream=NAME")
        unknown = sorted(set(url.params) - KNOWN_PARAMS)
        if unknown:
            # Warn rather than fail: core may add generic parameters of its own.
            log.warning("ignoring unknown parameters %s in %s", ", ".join(unknown), where)
        group = url.params.get("group", "bridge").strip()
        if not group:
            raise ConfigError(f"group= in transport URL {where!r} must not be empty")
        connect_timeout = _number(url, "connect_timeout", 10.0, float, minimum=0.001)
        socket_timeout = _number(url, "socket_timeout", 30.0, float, minimum=0.1)
        return cls(
            url=url,
            stream=stream,
            group=group,
            claim_idle_ms=_number(url, "claim_idle_ms", 60_000, int, minimum=1),
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            client_options=_client_options(url, connect_timeout, socket_timeout),
        )

    @property
    def where(self) -> str:
        """The URL without its password, for log lines and error messages."""
        return self.url.redacted()

    def client(self, name: str) -> redis.Redis:
        """A new client; it connects on its first command. ``name`` shows in CLIENT LIST."""
        return redis.Redis(**self.client_options, client_name=name)


def _client_options(url: TransportURL, connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
    parts = urlsplit(url.raw)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"bad port in transport URL {url.redacted()!r}") from exc
    db_text = url.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"database {db_text!r} in transport URL {url.redacted()!r} must be a number (/0)")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": port,
        "db": int(db_text),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        # No retries inside redis-py: core's retry loop owns retrying, and a silently
        # re-sent MULTI/EXEC could double a batch without us knowing.
        "retry": Retry(NoBackoff(), 0),
        **_ssl_options(url),
    }


def _number(url: TransportURL, key: str, default: N, cast: Callable[[str], N], minimum: float) -> N:
    raw = url.params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{key}={raw!r} in transport URL {url.redacted()!r} must be a number >= {minimum}")
    return value


def _flag(url: TransportURL, key: str, default: bool) -> bool:
    raw = url.params.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ConfigError(f"{key}={raw!r} in transport URL {url.redacted()!r} must be true or false")


def _ssl_options(url: TransportURL) -> dict[str, Any]:
    given = [k for k in _SSL_KEYS if k in url.params]
    if url.scheme != "rediss":
        if given:
            # Catch "I set a CA file so I'm on TLS" mistakes: plain redis:// ignores them.
            raise ConfigError(f"{', '.join(given)} in {url.redacted()!r} need the rediss:// scheme")
        return {}
    verify = _flag(url, "ssl_verify", True)
    options: dict[str, Any] = {
        "ssl": True,
        "ssl_cert_reqs": "required" if verify else "none",
        "ssl_check_hostname": verify,
    }
    for key, option in (("ssl_ca", "ssl_ca_certs"), ("ssl_cert", "ssl_certfile"), ("ssl_key", "ssl_keyfile")):
        path = url.params.get(key)
        if path:
            # A missing file would surface as a connection error at connect time, which
            # looks recoverable and would be retried forever: fail now instead.
            if not os.path.isfile(path):
                raise ConfigError(f"{key}={path!r} in {url.redacted()!r} is not a readable file")
            options[option] = path
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ConfigError(f"ssl_key without ssl_cert in {url.redacted()!r}")
    return options
