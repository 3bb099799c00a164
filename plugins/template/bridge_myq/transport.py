"""The myq transport. Every TODO names the section of docs/plugins.md that explains it."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.errors import ConfigError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.params import TLS_PARAMS, UrlParams

# TODO (docs: "Parse the URL"): every query parameter you read; others are warned about.
KNOWN_PARAMS = frozenset({"connect_timeout", *TLS_PARAMS})


class MyQTransport(Transport):
    # TODO (docs: "Declare what the broker is"): the schemes you serve, e.g. ("myq", "myqs").
    schemes = ("myq",)
    # TODO: the broker's per-message limit in bytes, minus what you send beside the body
    # (id, partition key, headers). Learn it in connect() if the broker says it.
    max_message_bytes = 1024 * 1024
    # TODO: your client library's exceptions after which reconnecting helps
    # (connection lost, timeout, throttled). Never wrong credentials. Everything else is fatal.
    recoverable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        # TODO (docs: "Parse the URL"): validate here; errors name the parameter and use
        # url.redacted() (url.raw may hold a password).
        params = UrlParams(url, KNOWN_PARAMS)
        self.name = url.path.strip("/")
        if not self.name:
            raise ConfigError(f"transport URL {params.where!r} names no destination: use myq://HOST/NAME")
        self.host, self.port = params.host_port(7000)
        self.user, self.password = params.credentials()
        self.tls = params.tls(("myqs",))  # None for myq://; .context() gives an ssl.SSLContext
        # Fail within fail_within seconds when no broker answers: one connect attempt, bounded.
        self.fail_within = params.number("connect_timeout", 3.0, float, minimum=0.1) + 1.0
        self._client = None  # connect lazily, on first use, and again after close()

    def connect(self) -> None:
        # TODO (docs: "connect"): open the connection if it is not open; set
        # self.max_message_bytes here if the broker tells its limit. Create the destination.
        raise NotImplementedError("connect")

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        # TODO (docs: "publish"): send all, in order; return only once the broker confirmed
        # every one. Sizes were checked by core. Deduplicate (if at all) on the whole message_id.
        raise NotImplementedError("publish")

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        # TODO (docs: "receive"): at most max_messages; wait at most timeout s for the first
        # (timeout=0: do not wait). Put whatever ack() needs into Delivery.handle. If the
        # destination was deleted, raise a recoverable error: an empty list must not hide it.
        raise NotImplementedError("receive")

    def ack(self, delivery: Delivery) -> None:
        # TODO (docs: "ack"): the broker may forget this delivery.
        raise NotImplementedError("ack")

    def release(self, delivery: Delivery) -> None:
        # TODO (docs: "release"): give it back for redelivery now; delete this method if the
        # broker cannot, and close() giving deliveries back is then enough.
        raise NotImplementedError("release")

    def close(self) -> None:
        # TODO (docs: "close"): drop connections; must be harmless twice, and the object
        # must work again afterwards (core closes after an error, then retries).
        self._client = None

    # Dead-letter and parked destinations are siblings: myq://HOST/NAME.dlq by default. Set
    # name_separator if your broker forbids "." in names, or override sibling() (docs: "sibling").
