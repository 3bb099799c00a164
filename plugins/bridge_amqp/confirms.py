"""Bookkeeping for RabbitMQ publisher confirms on one channel.

In confirm mode the broker numbers the channel's publishes 1, 2, 3, ... and answers
each with basic.ack or basic.nack; ``multiple=True`` settles every tag up to the one
given. Publishing a whole batch and then waiting for the answers costs one round trip
per batch instead of one per message (what kombu's ``confirm_publish`` option does).
"""

from __future__ import annotations

from typing import Any


class Confirms:
    """Tracks one channel's unconfirmed delivery tags. Create a new one per channel."""

    def __init__(self) -> None:
        self._next_tag = 1
        self.pending: set[int] = set()
        self.nacked = 0
        self.returned = 0

    def attach(self, channel: Any) -> None:
        """Register for the channel's confirm events (py-amqp calls ``(tag, multiple)``)."""
        channel.events["basic_ack"].add(self.on_ack)
        channel.events["basic_nack"].add(self.on_nack)
        # mandatory=True publishes come back here when no queue took them.
        channel.events["basic_return"].add(self.on_return)

    def start_batch(self) -> None:
        self.nacked = 0
        self.returned = 0

    def sent(self) -> None:
        """Call once per basic_publish, in publish order."""
        self.pending.add(self._next_tag)
        self._next_tag += 1

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked += self._settle(delivery_tag, multiple)

    def on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        # The broker still acks a returned message (it was "handled": dropped), and
        # sends the return first, so by the time all acks are in this count is final.
        self.returned += 1

    def _settle(self, delivery_tag: int, multiple: bool) -> int:
        if multiple:
            done = {tag for tag in self.pending if tag <= delivery_tag}
            self.pending -= done
            return len(done)
        if delivery_tag in self.pending:
            self.pending.remove(delivery_tag)
            return 1
        return 0  # a late answer for a batch we already gave up on
