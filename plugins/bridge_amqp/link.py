"""One broker connection with one channel on it: opened lazily, thrown away on any error.

Reconnecting is always "drop everything, open anew on the next call": after a lost
connection no channel state (delivery tags, confirm mode, consumers) is worth saving.
Errors from kombu/py-amqp are mapped to :mod:`bridge.errors` in :func:`boundary`.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import amqp.exceptions
import kombu.exceptions
from kombu.connection import Connection

from bridge.errors import BridgeError, RecoverableTransportError, TransportError
from bridge_amqp.settings import AmqpSettings

log = logging.getLogger(__name__)

# kombu's ensure_connection tries once: core's ReliableTransport is the one retry loop (with the
# one backoff, a shutdown that interrupts its waits, and one WARNING per outage). Retrying here as
# well stacked 4 attempts and up to 9 s of sleep that SIGTERM could not cut short under every one
# of core's attempts.
CONNECT_RETRIES = 0
INTERVAL_START = 1.0
INTERVAL_STEP = 2.0
INTERVAL_MAX = 10.0


def _recoverable_errors() -> tuple[type[BaseException], ...]:
    # Ask kombu's pyamqp transport rather than hard-coding: RecoverableConnectionError
    # (ConnectionForced on broker restart / close_connection, ConsumerCancelled when the
    # queue is deleted), OSError (refused, reset, EOF, socket timeouts), MessageNacked,
    # RecoverableChannelError. kombu's OperationalError is what ensure_connection raises
    # when it gives up.
    probe = Connection(transport="pyamqp")  # type: ignore[no-untyped-call]
    errors = (
        *probe.recoverable_connection_errors,
        *probe.recoverable_channel_errors,
        kombu.exceptions.OperationalError,
    )
    return tuple(dict.fromkeys(errors))  # drop duplicates, keep order


RECOVERABLE = _recoverable_errors()
# OSError subclasses that reconnecting will not fix: a certificate the CA does not sign.
FATAL: tuple[type[BaseException], ...] = (ssl.SSLCertVerificationError,)
# TLS failures that a link cut mid-handshake also causes: the only ones worth retrying forever.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError)
LIBRARY_ERRORS = (amqp.exceptions.AMQPError, kombu.exceptions.KombuError)


class Link:
    """A lazily opened connection + channel; ``setup`` declares what the channel needs."""

    def __init__(self, settings: AmqpSettings, role: str, setup: Callable[[Any], Any]) -> None:
        self.settings = settings
        self.role = role
        self._setup = setup
        # kombu's Connection methods are untyped: hold it as Any rather than ignore each call.
        self._conn: Any = None
        self._channel: Any = None
        #: Bumped at every (re)connect, so stale delivery tags can be recognised.
        self.generation = 0

    @property
    def is_open(self) -> bool:
        return self._channel is not None

    @property
    def current_channel(self) -> Any:
        """The channel as it is (None if closed), without probing the connection."""
        return self._channel

    def channel(self) -> Any:
        """The open channel, reconnecting first if the broker dropped us while idle."""
        if not self.check():
            self._open()
        return self._channel

    def check(self) -> bool:
        """True if open and still connected; a connection found dead is dropped."""
        if self._channel is not None and not self._still_connected():
            self.reset()
        return self._channel is not None

    def drain(self, timeout: float) -> bool:
        """Handle incoming frames for up to ``timeout`` s; False if nothing arrived."""
        conn = self._conn
        if conn is None:
            raise RecoverableTransportError(f"{self.role} connection to {self.settings.where} is closed")
        if self.settings.heartbeat:
            conn.heartbeat_check()  # sends ours when due; raises if the broker went quiet
            timeout = min(timeout, self.settings.heartbeat / 4)
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:  # py-amqp raises socket.timeout, an alias
            return False
        return True

    def reset(self) -> None:
        """Forget the connection without talking to the broker (it may be gone)."""
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()

    def close(self) -> None:
        """Close politely; the broker requeues anything delivered but not acked."""
        conn, channel = self._conn, self._channel
        self._conn = self._channel = None
        if conn is None:
            return
        try:
            channel.close()
            conn.release()
        except Exception as exc:  # closing a dead connection: nothing left to save
            log.debug("closing %s connection to %s: %s", self.role, self.settings.where, exc)
        with contextlib.suppress(Exception):
            conn.collect()

    def _still_connected(self) -> bool:
        # A broker restart or `rabbitmqctl close_connection` leaves a Connection.Close
        # frame (or EOF) waiting in our socket. Reading it now, before sending anything,
        # turns a drop that happened while we were idle into a transparent reconnect
        # instead of an error on the next publish.
        try:
            while self.drain(0):
                pass
        except RECOVERABLE as exc:
            log.info("%s connection to %s was lost (%s); reconnecting", self.role, self.settings.where, exc)
            return False
        return bool(self._conn is not None and self._conn.connected)

    def _open(self) -> None:
        conn: Any = self.settings.connection(self.role)
        try:
            conn.ensure_connection(
                errback=self._retrying,
                max_retries=CONNECT_RETRIES,
                interval_start=INTERVAL_START,
                interval_step=INTERVAL_STEP,
                interval_max=INTERVAL_MAX,
                # Keep py-amqp's own exceptions so boundary() can tell them apart.
                reraise_as_library_errors=False,
            )
            channel = self._setup(conn)
        except ssl.SSLError as exc:
            with contextlib.suppress(Exception):
                conn.collect()
            if isinstance(exc, (*FATAL, *_TLS_CUT)):
                raise
            # A protocol mismatch (amqps:// at a plaintext port, no common TLS version) fails the
            # same way on every attempt: after kombu's short retry, stop instead of retrying forever.
            raise TransportError(
                f"{self.role} cannot connect to {self.settings.where}: TLS handshake failed "
                f"{CONNECT_RETRIES + 1} times ({exc}); does that port speak TLS (RabbitMQ's TLS listener is "
                "usually 5671, plain AMQP 5672) and do both sides allow a common TLS version?"
            ) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                conn.collect()
            raise
        self._conn, self._channel = conn, channel
        self.generation += 1
        log.info("%s connection to %s open (queue %s)", self.role, self.settings.where, self.settings.queue)

    def _retrying(self, exc: BaseException, interval: float) -> None:
        if isinstance(exc, FATAL):
            raise exc  # kombu retries every OSError; stop retrying a rejected certificate
        log.debug(
            "cannot connect to %s (%s: %s); retrying in %.1f s",
            self.settings.where,
            type(exc).__name__,
            exc,
            interval,
        )


@contextlib.contextmanager
def boundary(link: Link, action: str) -> Iterator[None]:
    """Map kombu/py-amqp errors to bridge errors; any failure drops the connection."""
    where = link.settings.where
    try:
        yield
    except BridgeError:
        raise
    except FATAL as exc:
        link.reset()
        raise TransportError(f"{action} on {where} failed: {exc}") from exc
    except RECOVERABLE as exc:
        link.reset()
        raise RecoverableTransportError(
            f"{action} on {where}: connection lost ({type(exc).__name__}: {exc}); will reconnect"
        ) from exc
    except LIBRARY_ERRORS as exc:
        link.reset()
        raise TransportError(f"{action} on {where} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        # Interrupted mid-operation (KeyboardInterrupt, a bug): channel state is unknown.
        link.reset()
        raise
