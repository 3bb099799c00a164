"""The myq transport. Every TODO names the section of docs/plugins.md that explains it."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.errors import ConfigError, MessageTooLargeError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL


class MyQTransport(Transport):
    # TODO (docs: "Declare what the broker is"): the schemes you serve, e.g. ("myq", "myqs").
    schemes = ("myq",)
    # TODO: the broker's per-message limit in bytes; core splits envelopes to fit.
    max_message_bytes = 1024 * 1024
    # TODO: your client library's exceptions after which reconnecting helps
    # (connection lost, timeout, throttled). Everything else is fatal.
    recoverable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        # TODO (docs: "Parse the URL"): validate here, raise ConfigError naming the
        # parameter; never put url.raw (it may hold a password) in a message: use url.redacted().
        self.name = url.path.strip("/")
        if not self.name:
            raise ConfigError(f"transport URL {url.redacted()!r} names no destination: use myq://HOST/NAME")
        self._client = None  # connect lazily, on first use, and again after close()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        # Check every size before sending anything: a refused batch must leave nothing behind.
        for m in messages:
            if len(m.body) > self.max_message_bytes:
                raise MessageTooLargeError(
                    f"message {m.message_id} is {len(m.body)} bytes; {self.url.redacted()} takes"
                    f" at most {self.max_message_bytes}"
                )
        # TODO (docs: "publish"): send all; return only once the broker confirmed every one.
        raise NotImplementedError("publish")

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        # TODO (docs: "receive"): at most max_messages; wait at most timeout s for the first
        # (timeout=0: do not wait). Put whatever ack() needs into Delivery.handle.
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

    # TODO (docs: "dead_letter_url"): override dead_letter_url() if your destination is
    # neither ?queue=NAME nor the host part of the URL.
