"""What a transport is: a handful of primitives. Everything else is core's job.

Like kombu's virtual transports, a backend implements only ``publish`` (returning once
the broker has confirmed every message), ``receive``, ``ack``, ``release`` and
``close``, and declares what the broker is: its size limit, its ordering, how it names a
destination's siblings (dead-letter, parked), how fast it fails, and which of its exceptions
are recoverable. Retrying, reconnecting, size checks, batching, dead-lettering and ack
ordering are written once, in :mod:`bridge.transport.reliable` and the publish/apply loops.
URL parameters and TLS settings are read with :mod:`bridge.transport.params`.

Message ids: an id names one message's content. Two messages published under one id must
be interchangeable for the consumer (a retried publish, the same changes re-sent after a
crash), because a broker may keep only the first of them (SQS FIFO and JetStream drop a
repeated id for minutes, even after the first was consumed). Whatever changes what the
consumer should do is published under a new id: :func:`content_id` derives one.

May import: ``bridge.errors``, ``bridge.observe``. Plugins (``plugins/``) build on this package.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.errors import ConfigError, MessageTooLargeError

#: Longest message id core publishes; a transport must carry ids up to this length.
MAX_MESSAGE_ID = 200


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

    def with_netloc(self, netloc: str) -> TransportURL:
        """The same URL on another host part (destinations named there: ``memory://NAME``)."""
        return TransportURL.parse(urlunsplit((self.scheme, netloc, self.path, urlencode(self.params), "")))

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


def content_id(base: str, body: bytes) -> str:
    """A message id for ``body`` published on behalf of ``base`` (a record id): a changed body
    gets a changed id, so no broker-side deduplication can drop it as a repeat."""
    return f"{base}.{hashlib.blake2b(body, digest_size=8).hexdigest()}"


def check_sizes(messages: Sequence[OutgoingMessage], limit: int, where: str) -> None:
    """Raise :class:`MessageTooLargeError` naming the first message over ``limit``; core calls
    it before handing a batch to a transport, so a refused batch leaves nothing behind."""
    for m in messages:
        if len(m.body) > limit:
            raise MessageTooLargeError(f"message {m.message_id} is {len(m.body)} bytes; {where} takes at most {limit}")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: bytes
    # See "Message ids" above: at most MAX_MESSAGE_ID characters, one id per content.
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
    #: Largest message body the broker accepts, in bytes, with room left for the message id,
    #: partition key and any headers the transport adds. Per object: a transport that learns
    #: the broker's limit on connecting (SQS per queue, NATS from the server) sets
    #: ``self.max_message_bytes`` then; it may shrink, never grow. Core checks every body
    #: against it before calling ``publish``.
    max_message_bytes: int = 1024 * 1024
    #: Messages sharing a partition key are delivered in publish order.
    ordered: bool = True
    #: Upper bound (s) for a call to raise when the broker is unreachable or the destination
    #: vanished. Bound your client library's connect timeout and its own retries by it.
    fail_within: float = 5.0
    #: Joins a destination name and a suffix in :meth:`sibling` (``users`` -> ``users.dlq``).
    name_separator: ClassVar[str] = "."
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

    def connect(self) -> None:  # noqa: B027 - optional primitive
        """Connect now if not connected (idempotent). Core calls it before it reads
        ``max_message_bytes`` for a publish. Default: connect lazily on first use instead."""

    def release(self, delivery: Delivery) -> None:  # noqa: B027 - optional primitive
        """Give a delivery back for redelivery (on shutdown). Default: rely on close()."""

    def close(self) -> None:  # noqa: B027 - optional primitive
        """Drop connections. Unacked deliveries are redelivered later."""

    def sibling(self, suffix: str) -> TransportURL:
        """The destination beside this one on the same broker, named ``NAME<separator><suffix>``:
        core asks for ``"dlq"`` (failures) and, on the dead-letter queue, ``"parked"``.

        Default: NAME is the ``queue=`` parameter if the URL has one, else the path
        (``myq://HOST/NAME``), else the host part (``memory://NAME``, ``kinesis://STREAM``).
        Override it if your destination is named elsewhere, or set :attr:`name_separator` if
        your broker forbids ``.`` in names.
        """

        def named(name: str) -> str:
            return f"{name}{self.name_separator}{suffix}"

        url = self.url
        if url.params.get("queue"):
            return url.replace(queue=named(url.params["queue"]))
        if url.path.strip("/"):
            path = named(url.path.rstrip("/"))
            return TransportURL.parse(urlunsplit((url.scheme, url.netloc, path, urlencode(url.params), "")))
        return url.with_netloc(named(url.netloc))

    def dead_letter_url(self) -> TransportURL:
        """Where failures go unless configured otherwise."""
        return self.sibling("dlq")

    def holding(self, count: int) -> TransportURL:
        """The URL of a consumer that can hold ``count`` unacked deliveries at once (``bridge dlq``
        reads a queue whole before acting). Default: this URL; override if a prefetch limits it."""
        return self.url

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def depth(self) -> int | None:
        """Messages waiting to be received (``bridge status``); ``None``: this transport cannot say."""
        return None


Opener = Callable[["TransportURL", str], Transport]
"""Opens a transport for a URL in a role (``publish``, ``consume``, ``dlq``): the plugin set's
:meth:`~bridge.plugin.manager.PluginSet.open`, handed down by whoever built the plugin set, so no
module below the CLI reaches for a process-wide plugin manager."""
