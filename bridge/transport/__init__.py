"""What a transport is: a handful of primitives. Everything else is core's job.

Like kombu's virtual transports, a backend implements only ``publish`` (returning once
the broker has confirmed every message), ``receive``, ``ack``, ``release`` and
``close``, and declares which of its exceptions are recoverable. Retrying, reconnecting,
batching, dead-lettering and ack ordering are written once, in :mod:`bridge.transport.reliable`
and the publish/apply loops.

May import: ``bridge.errors`` only. Plugins (``plugins/``) build on this package.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.errors import ConfigError


@dataclass(frozen=True)
class TransportURL:
    """A transport URL: the scheme picks the plugin, the rest names the destination."""

    raw: str
    scheme: str
    netloc: str
    path: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> TransportURL:
        parts = urlsplit(raw)
        if not parts.scheme:
            raise ConfigError(f"transport URL {raw!r} has no scheme (like amqp:// or memory://)")
        return cls(raw, parts.scheme.lower(), parts.netloc, parts.path, dict(parse_qsl(parts.query)))

    def replace(self, **params: str) -> TransportURL:
        """The same URL with some query parameters changed (e.g. the dead-letter queue)."""
        merged = {**self.params, **params}
        raw = urlunsplit((self.scheme, self.netloc, self.path, urlencode(merged), ""))
        return TransportURL(raw, self.scheme, self.netloc, self.path, merged)

    def redacted(self) -> str:
        """The URL with any password hidden, safe to log: in its own netloc and in URL-valued
        query parameters (``proxy=http://user:secret@host``)."""
        return redact(self.raw)


def redact(url: str) -> str:
    """``url`` with the password of it, and of any URL inside its query, replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, redact(v) if "://" in v else v) for k, v in pairs], safe=":/*@")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: bytes
    message_id: str
    # Messages with one partition key are delivered in publish order.
    partition_key: str


@dataclass(slots=True)
class Delivery:
    """A received message; ``handle`` is the transport's own token for ack/release."""

    body: bytes
    message_id: str | None
    redelivered: bool
    handle: Any = None


class Transport(abc.ABC):
    """Base class of every transport plugin. See docs/plugins.md."""

    #: URL schemes this class serves, e.g. ``("amqp", "amqps")``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Largest message body the broker accepts, in bytes.
    max_message_bytes: ClassVar[int] = 1024 * 1024
    #: Exceptions after which reconnecting and retrying may succeed.
    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, url: TransportURL) -> None:
        self.url = url

    @abc.abstractmethod
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send every message; return only when the broker has confirmed all of them."""

    @abc.abstractmethod
    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages``, waiting at most ``timeout`` seconds for the first."""

    @abc.abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """The delivery was applied or safely parked: the broker may forget it."""

    def release(self, delivery: Delivery) -> None:  # noqa: B027 - optional primitive
        """Give a delivery back for redelivery (on shutdown). Default: rely on close()."""

    def close(self) -> None:  # noqa: B027 - optional primitive
        """Drop connections. Unacked deliveries are redelivered later."""

    def dead_letter_url(self) -> TransportURL:
        """Where failures go by default: the same broker, ``<name>.dlq``."""
        queue = self.url.params.get("queue")
        if queue:
            return self.url.replace(queue=f"{queue}.dlq")
        # Destinations named in the host part: memory://NAME, kinesis://STREAM, ...
        raw = urlunsplit((self.url.scheme, f"{self.url.netloc}.dlq", self.url.path, urlencode(self.url.params), ""))
        return TransportURL.parse(raw)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
