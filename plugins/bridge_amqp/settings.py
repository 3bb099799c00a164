"""Turning an ``amqp://`` / ``amqps://`` transport URL into kombu connection settings.

The query string carries bridge-only options (``queue``, ``prefetch``, TLS files, ...).
None of it reaches kombu: kombu gets the URL without its query plus explicit keyword
arguments, so a typo in an option can never turn into a surprising kombu setting.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlunsplit

from kombu.connection import Connection

from bridge.transport import TransportURL
from bridge.transport.params import TLS_PARAMS, Tls, UrlParams

KNOWN_PARAMS = frozenset({"queue", "prefetch", "heartbeat", "connect_timeout", "confirm_timeout", *TLS_PARAMS})
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
        params = UrlParams(url, KNOWN_PARAMS)
        return cls(
            url=url,
            broker_url=urlunsplit((url.scheme, url.netloc, url.path, "", "")),
            queue=params.text("queue", required="add ?queue=NAME"),
            ssl=_ssl_options(params.tls(("amqps",))),
            prefetch=params.number("prefetch", 64, int, minimum=1),
            heartbeat=params.number("heartbeat", DEFAULT_HEARTBEAT_S, float, minimum=0),
            connect_timeout=params.number("connect_timeout", 10.0, float, minimum=0.001),
            confirm_timeout=params.number("confirm_timeout", 30.0, float, minimum=0.001),
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


def _ssl_options(tls: Tls | None) -> dict[str, Any] | bool:
    """kombu's ``ssl=`` argument, passed by py-amqp to its socket wrapper."""
    if tls is None:
        return False
    options: dict[str, Any] = {}
    if tls.verify:
        options["cert_reqs"] = ssl.CERT_REQUIRED
        # py-amqp checks the certificate's hostname (and sends SNI) only when
        # server_hostname is given.
        options["server_hostname"] = tls.hostname
    else:
        # No server_hostname here: py-amqp would enable hostname checking, and Python
        # refuses CERT_NONE while that is on. The price is no SNI without verification.
        options["cert_reqs"] = ssl.CERT_NONE
    for value, option in ((tls.ca, "ca_certs"), (tls.cert, "certfile"), (tls.key, "keyfile")):
        if value:
            options[option] = value
    return options
