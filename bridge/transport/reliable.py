"""Retry, reconnect and backoff, written once for every transport.

A transport says which of its errors are recoverable; this wrapper closes the
connection, waits with exponential backoff and full jitter, and tries again. Anything
else is mapped to :class:`~bridge.errors.TransportError` at this boundary.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bridge.errors import BridgeError, MessageTooLargeError, RecoverableTransportError, TransportError
from bridge.observe.health import Health
from bridge.transport import Delivery, OutgoingMessage, Transport

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0
    max_attempts: int = 0  # 0: keep trying until stopped

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): spreads reconnect storms out."""
        return random.uniform(0, min(self.max_s, self.initial_s * 2 ** (attempt - 1)))


class ReliableTransport:
    """Wraps a :class:`Transport`: retries recoverable errors, maps the rest."""

    def __init__(
        self,
        transport: Transport,
        backoff: Backoff = Backoff(),
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] = time.sleep,
        health: Health | None = None,
        link: str | None = None,
    ) -> None:
        self.transport = transport
        self.backoff = backoff
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self.reconnects = 0
        # Readiness: down from the first failed call until one succeeds again.
        self.health = health
        self.link = link or transport.url.redacted()
        self._down = False

    @property
    def max_message_bytes(self) -> int:
        return self.transport.max_message_bytes

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        recoverable: tuple[type[BaseException], ...] = (RecoverableTransportError, *self.transport.recoverable_errors)
        while True:
            attempt += 1
            try:
                result = fn()
            except recoverable as exc:
                self._link_down(f"{what} failed: {type(exc).__name__}: {exc}")
                if self.backoff.max_attempts and attempt >= self.backoff.max_attempts:
                    raise RecoverableTransportError(
                        f"{what} on {self.transport.url.redacted()} failed {attempt} times: {exc}"
                    ) from exc
                if self.stop.is_set():
                    raise RecoverableTransportError(f"{what} interrupted by shutdown: {exc}") from exc
                delay = self.backoff.delay(attempt)
                log.warning(
                    "%s on %s failed (%s: %s); reconnecting in %.1fs (attempt %d)",
                    what,
                    self.transport.url.redacted(),
                    type(exc).__name__,
                    exc,
                    delay,
                    attempt,
                )
                self._safe_close()
                self.reconnects += 1
                self._sleep(delay)
            except BridgeError as exc:
                if isinstance(exc, TransportError) and not isinstance(exc, MessageTooLargeError):
                    self._link_down(str(exc))
                raise
            except Exception as exc:
                self._link_down(f"{what} failed: {type(exc).__name__}: {exc}")
                raise TransportError(
                    f"{what} on {self.transport.url.redacted()} failed: {type(exc).__name__}: {exc}"
                ) from exc
            else:
                if self._down:
                    self._down = False
                    if self.health is not None:
                        self.health.link_up(self.link)
                return result

    def _link_down(self, reason: str) -> None:
        self._down = True
        if self.health is not None:
            self.health.link_down(self.link, reason)

    def _safe_close(self) -> None:
        try:
            self.transport.close()
        except Exception as exc:  # closing a broken connection often fails; that is fine
            log.debug("close after failure raised %r", exc)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._call("publish", lambda: self.transport.publish(messages))

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
