"""Retry, reconnect and backoff, written once for every transport.

A transport says which of its errors are recoverable; this wrapper closes the
connection, waits with exponential backoff and full jitter, and tries again. Anything
else is mapped to :class:`~bridge.errors.TransportError` at this boundary. Bodies are
checked against the transport's declared size limit here, so no transport repeats it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from bridge.errors import BridgeError, MessageTooLargeError, RecoverableTransportError, TransportError
from bridge.observe import Health, metrics
from bridge.transport import Delivery, OutgoingMessage, Transport, check_sizes
from bridge.transport.backoff import Backoff

__all__ = ["Backoff", "ReliableTransport"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Outages in progress, by broker (scheme and host part of the URL): the main queue, the retry
# queue and the parked queue of one broker go down together and are reported as one outage.
_outages: dict[str, float] = {}
_outages_lock = threading.Lock()


class ReliableTransport:
    """Wraps a :class:`Transport`: retries recoverable errors, maps the rest."""

    #: Told when the link goes down and comes back (readiness); set by :mod:`bridge.wiring`.
    health: Health | None = None

    def __init__(
        self,
        transport: Transport,
        backoff: Backoff = Backoff(),
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        health: Health | None = None,
        link: str | None = None,
    ) -> None:
        self.transport = transport
        self.backoff = backoff
        self.stop = stop or threading.Event()
        # Waiting on the stop event: a shutdown cuts the wait short (the loop then sees stop set).
        self._sleep = sleep or self.stop.wait
        self.reconnects = 0
        self.unreachable_since: float | None = None  # wall clock of the first failure of an outage
        self._outage_started = 0.0
        # Readiness: down from the first failed call until one succeeds again.
        self.health = health
        self.link = link or transport.url.redacted()
        self._down = False

    @property
    def max_message_bytes(self) -> int:
        """The transport's limit, once it has connected (a broker may tell it a smaller one)."""
        self._call("connect", self.transport.connect)
        return self.transport.max_message_bytes

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        recoverable: tuple[type[BaseException], ...] = (RecoverableTransportError, *self.transport.recoverable_errors)
        while True:
            attempt += 1
            try:
                result = fn()
            except recoverable as exc:
                metrics.transport_error(self.transport.url.scheme, exc, reconnecting=not self.stop.is_set())
                self._outage(what, exc)
                self._link_down(f"{what} failed: {type(exc).__name__}: {exc}")
                if self.backoff.exhausted(attempt):
                    raise RecoverableTransportError(
                        f"{what} on {self.transport.url.redacted()} failed {attempt} times: {exc}"
                    ) from exc
                if self.stop.is_set():
                    raise RecoverableTransportError(f"{what} interrupted by shutdown: {exc}") from exc
                delay = self.backoff.delay(attempt)
                log.debug("%s on %s failed (%r); again in %.1fs", what, self.transport.url.redacted(), exc, delay)
                self._safe_close()
                self.reconnects += 1
                self._sleep(delay)
            except BridgeError as exc:
                if isinstance(exc, TransportError) and not isinstance(exc, MessageTooLargeError):
                    self._link_down(str(exc))
                raise
            except Exception as exc:
                self._link_down(f"{what} failed: {type(exc).__name__}: {exc}")
                metrics.transport_error(self.transport.url.scheme, exc, reconnecting=False)
                raise TransportError(
                    f"{what} on {self.transport.url.redacted()} failed: {type(exc).__name__}: {exc}"
                ) from exc
            else:
                if self._down:
                    self._down = False
                    if self.health is not None:
                        self.health.link_up(self.link)
                self._reachable()
                return result

    def _link_down(self, reason: str) -> None:
        self._down = True
        if self.health is not None:
            self.health.link_down(self.link, reason)

    @property
    def _broker(self) -> str:
        url = self.transport.url
        return f"{url.scheme}://{url.netloc}"

    def _outage(self, what: str, exc: BaseException) -> None:
        """One WARNING when an outage of the broker starts; the attempts under it log at DEBUG."""
        if self.unreachable_since is not None:
            return
        self.unreachable_since = time.time()
        self._outage_started = time.monotonic()
        with _outages_lock:
            known = self._broker in _outages
            _outages.setdefault(self._broker, self._outage_started)
        if known:
            return
        log.warning(
            "%s unreachable since %s (%s failed: %s: %s); retrying until it answers",
            self.transport.url.redacted(),
            time.strftime("%H:%M:%S", time.localtime(self.unreachable_since)),
            what,
            type(exc).__name__,
            exc,
        )

    def _reachable(self) -> None:
        if self.unreachable_since is None:
            return
        self.unreachable_since = None
        with _outages_lock:
            started = _outages.pop(self._broker, None)
        if started is not None:
            log.warning(
                "%s reachable again after %.0f s unreachable", self.transport.url.redacted(), time.monotonic() - started
            )

    def _safe_close(self) -> None:
        try:
            self.transport.close()
        except Exception as exc:  # closing a broken connection often fails; that is fine
            log.debug("close after failure raised %r", exc)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        # Once, here, for every transport; checked again on each attempt, since a transport
        # may learn a smaller limit from the broker when it (re)connects.
        def checked() -> None:
            self.transport.connect()
            check_sizes(messages, self.transport.max_message_bytes, self.transport.url.redacted())
            self.transport.publish(messages)

        self._call("publish", checked)
        metrics.broker_confirmed(self.transport.url.scheme, len(messages))

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        return self._call("receive", lambda: self.transport.receive(max_messages, timeout))

    def ack(self, delivery: Delivery) -> None:
        # No retry: after a reconnect the delivery tag is void and the broker will
        # redeliver; the applier's dedupe makes the redelivery harmless.
        recoverable: tuple[type[BaseException], ...] = (RecoverableTransportError, *self.transport.recoverable_errors)
        try:
            self.transport.ack(delivery)
        except recoverable as exc:
            log.warning("ack lost with the connection (%s); the message will be redelivered", exc)
            self._safe_close()

    def release(self, delivery: Delivery) -> None:
        try:
            self.transport.release(delivery)
        except Exception as exc:
            log.debug("release failed (%r); the broker redelivers on close", exc)

    def close(self) -> None:
        self._safe_close()
