"""The RabbitMQ transport: durable queue, persistent messages, batched publisher confirms."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import amqp
import amqp.exceptions

from bridge.errors import RecoverableTransportError, TransportError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge_amqp.confirms import Confirms
from bridge_amqp.link import RECOVERABLE, Link, boundary
from bridge_amqp.settings import AmqpSettings

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"
PERSISTENT = 2  # AMQP delivery_mode: written to disk on a durable queue
MAX_PREFETCH = 65_535  # basic.qos prefetch-count is a short


@dataclass(frozen=True, slots=True)
class _Handle:
    """Delivery.handle: a delivery tag is only meaningful on the channel that issued it."""

    generation: int
    delivery_tag: int


class AmqpTransport(Transport):
    """RabbitMQ through kombu/py-amqp: ``amqp[s]://user:pass@host:port/vhost?queue=NAME``.

    Publishing and consuming use separate connections, opened on first use, so flow
    control on a blocked publisher never stalls consumption. Both declare the durable
    queue. Errors: a lost connection, a confirm timeout or an unroutable message raise
    RecoverableTransportError; a nack or any other broker refusal raises TransportError.
    After any error the connection is dropped and reopened (with backoff) on the next
    call; a connection the broker closed while we were idle is replaced transparently.

    Not thread-safe: use one object from one thread (py-amqp channels are not
    thread-safe either); open one transport per thread instead.
    """

    schemes = ("amqp", "amqps")
    # RabbitMQ 4.0 lowered the default max_message_size from 128 MiB to 16 MiB; larger
    # messages make the broker close the channel. Refusing them up front gives a clear
    # error instead of a channel error mid-batch.
    max_message_bytes = 16 * 1024 * 1024
    recoverable_errors = RECOVERABLE

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        self.settings = AmqpSettings.from_url(url)
        self.queue = self.settings.queue
        # One connect attempt (core's loop does the retrying), plus the queue declare.
        self.fail_within = self.settings.connect_timeout + 2.0
        self._confirms = Confirms()
        self._inbox: deque[amqp.Message] = deque()
        self._pub = Link(self.settings, "publisher", self._open_publisher)
        self._sub = Link(self.settings, "consumer", self._open_consumer)

    # -- publishing ---------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with boundary(self._pub, "publish"):
            channel = self._pub.channel()
            confirms = self._confirms
            confirms.start_batch()
            for m in messages:
                body = amqp.Message(
                    m.body, delivery_mode=PERSISTENT, message_id=m.message_id, content_type=CONTENT_TYPE
                )
                # mandatory: if the queue vanished, the broker returns the message
                # instead of acking a silent drop.
                channel.basic_publish(body, exchange="", routing_key=self.queue, mandatory=True)
                confirms.sent()
            self._await_confirms(len(messages))

    def _await_confirms(self, count: int) -> None:
        confirms, timeout = self._confirms, self.settings.confirm_timeout
        deadline = time.monotonic() + timeout
        while confirms.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                unconfirmed = len(confirms.pending)
                # A silent broker (dead link, disk/memory alarm blocking publishers) is a
                # connection problem: drop the connection, let core retry the batch.
                self._pub.reset()
                raise RecoverableTransportError(
                    f"broker did not confirm {unconfirmed} of {count} messages within"
                    f" {timeout:g} s on {self.settings.where}"
                )
            self._pub.drain(remaining)
        if confirms.returned:
            self._pub.reset()  # the next attempt re-declares the queue
            raise RecoverableTransportError(
                f"{confirms.returned} of {count} messages were unroutable: queue {self.queue!r}"
                f" disappeared on {self.settings.where}"
            )
        if confirms.nacked:
            raise TransportError(
                f"broker refused (nacked) {confirms.nacked} of {count} messages on {self.settings.where}"
            )

    def _open_publisher(self, conn: Any) -> Any:
        channel = self._declare(conn)
        channel.confirm_select()
        self._confirms = Confirms()  # delivery tags restart at 1 on a new channel
        self._confirms.attach(channel)
        return channel

    def depth(self) -> int | None:
        """Messages ready in the queue (delivered but unacked ones not counted), by a passive declare."""
        with boundary(self._pub, "depth"):
            declared = self._pub.channel().queue_declare(self.queue, passive=True)
        return int(declared.message_count)

    # -- consuming ----------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with boundary(self._sub, "receive"):
            self._sub.channel()
            inbox = self._inbox
            deadline = time.monotonic() + timeout
            while not inbox:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._sub.drain(remaining)
            # Then take whatever else already arrived, without waiting for more.
            while len(inbox) < max_messages and self._sub.drain(0):
                pass
            count = min(max_messages, len(inbox))
            return [self._delivery(inbox.popleft()) for _ in range(count)]

    def ack(self, delivery: Delivery) -> None:
        with boundary(self._sub, "ack"):
            channel = self._channel_for(delivery, "ack")
            if channel is not None:
                channel.basic_ack(delivery.handle.delivery_tag)

    def release(self, delivery: Delivery) -> None:
        with boundary(self._sub, "release"):
            channel = self._channel_for(delivery, "release")
            if channel is not None:
                channel.basic_reject(delivery.handle.delivery_tag, requeue=True)

    def _channel_for(self, delivery: Delivery, action: str) -> Any:
        """The channel that issued the delivery, or None if that connection is gone."""
        handle = delivery.handle
        if not isinstance(handle, _Handle):
            raise TransportError(f"{action}: delivery {delivery.message_id} did not come from this transport")
        # check(), not channel(): reconnecting would not help, the tag belongs to the old channel.
        if handle.generation == self._sub.generation and self._sub.check():
            return self._sub.current_channel
        # The broker requeued it when the connection dropped: acking is impossible
        # now, and the redelivery is a harmless duplicate.
        log.warning(
            "%s of delivery %s skipped: its connection to %s was lost; the broker redelivers it",
            action,
            delivery.message_id,
            self.settings.where,
        )
        return None

    def _open_consumer(self, conn: Any) -> Any:
        channel = self._declare(conn)
        # Per-consumer limit of unacked deliveries: the broker stops pushing at
        # `prefetch`, so one receive() returns at most that many.
        channel.basic_qos(prefetch_size=0, prefetch_count=self.settings.prefetch, a_global=False)
        self._inbox.clear()  # anything buffered came from the old, dead channel
        channel.basic_consume(self.queue, no_ack=False, callback=self._inbox.append)
        return channel

    def _delivery(self, message: amqp.Message) -> Delivery:
        info = message.delivery_info
        body = message.body
        # py-amqp leaves a bodyless message's body as its default, the empty *str*.
        return Delivery(
            body=body.encode() if isinstance(body, str) else bytes(body),
            message_id=message.properties.get("message_id"),
            redelivered=bool(info.get("redelivered")),
            handle=_Handle(self._sub.generation, info["delivery_tag"]),
        )

    # -- shared -------------------------------------------------------------------

    def _declare(self, conn: Any) -> Any:
        """Declare the durable queue (idempotent) and return a channel to use."""
        channel = conn.channel()
        try:
            channel.queue_declare(self.queue, durable=True, auto_delete=False)
        except amqp.exceptions.PreconditionFailed as exc:
            # The queue exists with other arguments (e.g. an operator created it as a
            # quorum queue or with a length limit): use it as it is. The failed declare
            # closed that channel, so check on a fresh one.
            log.warning("queue %r exists with different arguments; using it as is: %s", self.queue, exc)
            channel = conn.channel()
            channel.queue_declare(self.queue, passive=True)
        return channel

    def close(self) -> None:
        """Close both connections; unacked deliveries go back to the queue."""
        self._inbox.clear()
        self._sub.close()
        self._pub.close()

    def holding(self, count: int) -> TransportURL:
        """A prefetch as large as ``count`` (AMQP caps it at 65535), so a reader can hold them all."""
        return self.url.replace(prefetch=str(min(count, MAX_PREFETCH)))

    def __repr__(self) -> str:
        return f"AmqpTransport({self.settings.where!r})"
