"""Turning an ``amqp://`` / ``amqps://`` transport URL into kombu connection settings.

The query string carries bridge-only options (``queue``, ``prefetch``, TLS files, ...).
None of it reaches kombu: kombu gets the URL without its query plus explicit keyword
arguments, so a typo in an option can never turn into a surprising kombu setting.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from kombu.connection import Connection

from bridge.errors import ConfigError
from bridge.transport import TransportURL

log = logging.getLogger(__name__)

_SSL_KEYS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify")
KNOWN_PARAMS = frozenset({"queue", "prefetch", "heartbeat", "connect_timeout", "confirm_timeout", *_SSL_KEYS})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

N = TypeVar("N", int, float)
DEFAULT_HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class AmqpSettings:
    """Everything an :class:`AmqpTransport` needs, validated once at construction."""

    # Both hold the password: keep them out of repr() so a logged object never leaks it.
    url: TransportURL = field(repr=False)
    broker_url: str = field(repr=False)
    queue: str
    ssl: dict[str, Any] | bool
    prefetch: int = 64
    # On by default: a link that dies silently (a middlebox or TLS terminator whose far side
    # is gone) carries nothing and closes nothing, and only heartbeats notice. A consumer
    # notices within 2 x heartbeat (+ heartbeat/4 between checks); the caller must come back
    # (publish/receive/ack) within about 2 x heartbeat or the broker drops us (a harmless
    # reconnect + redelivery). 0 turns them off.
    heartbeat: float = DEFAULT_HEARTBEAT_S
    connect_timeout: float = 10.0
    # Longest wait for publisher confirms; also bounds every blocking socket read/write.
    confirm_timeout: float = 30.0

    @classmethod
    def from_url(cls, url: TransportURL) -> AmqpSettings:
        params = url.params
        where = url.redacted()
        queue = params.get("queue", "").strip()
        if not queue:
            raise ConfigError(f"transport URL {where!r} has no queue: add ?queue=NAME")
        unknown = sorted(set(params) - KNOWN_PARAMS)
        if unknown:
            # Warn rather than fail: core may add generic parameters of its own.
            log.warning("ignoring unknown parameters %s in %s", ", ".join(unknown), where)
        return cls(
            url=url,
            broker_url=urlunsplit((url.scheme, url.netloc, url.path, "", "")),
            queue=queue,
            ssl=_ssl_options(url),
            prefetch=_number(url, "prefetch", 64, int, minimum=1),
            heartbeat=_number(url, "heartbeat", DEFAULT_HEARTBEAT_S, float, minimum=0),
            connect_timeout=_number(url, "connect_timeout", 10.0, float, minimum=0.001),
            confirm_timeout=_number(url, "confirm_timeout", 30.0, float, minimum=0.001),
        )

    @property
    def where(self) -> str:
        """The URL without its password, for log lines and error messages."""
        return self.url.redacted()

    def connection(self, role: str) -> Connection:
        """A new, not yet connected kombu connection; ``role`` names it in the broker's UI."""
        return Connection(  # type: ignore[no-untyped-call]
            self.broker_url,
            # pyamqp explicitly: plain "amqp" would silently pick librabbitmq if installed,
            # which has no publisher-confirm events.
            transport="pyamqp",
            ssl=self.ssl,
            heartbeat=self.heartbeat,
            connect_timeout=self.connect_timeout,
            transport_options={
                # Shown by `rabbitmqctl list_connections client_properties` and the
                # management UI: lets operators (and our tests) find this connection.
                "client_properties": {"connection_name": f"ddb-bridge {role} queue={self.queue}"},
                # OS-level socket timeouts for waits that take no timeout of their own
                # (queue.declare, channel/connection close): a half-dead TCP peer cannot
                # hang us forever.
                "read_timeout": self.confirm_timeout,
                "write_timeout": self.confirm_timeout,
            },
        )


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


def _ssl_options(url: TransportURL) -> dict[str, Any] | bool:
    """kombu's ``ssl=`` argument, passed by py-amqp to its socket wrapper."""
    given = [k for k in _SSL_KEYS if k in url.params]
    if url.scheme != "amqps":
        if given:
            # Catch "I set a CA file so I'm on TLS" mistakes: plain amqp ignores them.
            raise ConfigError(f"{', '.join(given)} in {url.redacted()!r} need the amqps:// scheme")
        return False
    options: dict[str, Any] = {}
    if _flag(url, "ssl_verify", True):
        options["cert_reqs"] = ssl.CERT_REQUIRED
        # py-amqp checks the certificate's hostname (and sends SNI) only when
        # server_hostname is given.
        options["server_hostname"] = urlsplit(url.raw).hostname or "localhost"
    else:
        # No server_hostname here: py-amqp would enable hostname checking, and Python
        # refuses CERT_NONE while that is on. The price is no SNI without verification.
        options["cert_reqs"] = ssl.CERT_NONE
    for key, option in (("ssl_ca", "ca_certs"), ("ssl_cert", "certfile"), ("ssl_key", "keyfile")):
        path = url.params.get(key)
        if path:
            # A missing file would surface as OSError at connect time, which looks
            # recoverable and would be retried forever: fail now instead.
            if not os.path.isfile(path):
                raise ConfigError(f"{key}={path!r} in {url.redacted()!r} is not a readable file")
            options[option] = path
    if "keyfile" in options and "certfile" not in options:
        raise ConfigError(f"ssl_key without ssl_cert in {url.redacted()!r}")
    return options
