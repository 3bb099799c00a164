"""``memory://NAME``: an in-process transport for the demo and for tests.

Messages live in this process only; publisher and applier must share it (the demo runs
both in threads). Unacked deliveries go back to the queue on ``release`` or ``close``,
as a broker would redeliver them.

``?dedup_window=SECONDS`` makes the queue behave like a deduplicating broker (SQS FIFO keeps
a deduplication id for 300 s, JetStream for its duplicate window): a message whose id was
published within that time is accepted and silently dropped, even if the first was consumed.
Tests use it to show that core never re-publishes a changed body under an old id.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

from bridge import hookimpl
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.params import UrlParams

_queues: dict[str, deque[tuple[bytes, str, bool]]] = {}
_lock = threading.Condition()
_tags = itertools.count()
_seen_ids: dict[str, dict[str, float]] = {}  # per queue: message id -> when first published


def _queue(name: str) -> deque[tuple[bytes, str, bool]]:
    return _queues.setdefault(name, deque())


class MemoryTransport(Transport):
    schemes = ("memory",)
    max_message_bytes = 16 * 1024 * 1024

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        self.name = url.netloc or url.path.strip("/") or "default"
        self.dedup_window = UrlParams(url, {"dedup_window"}).number("dedup_window", 0.0, float, minimum=0)
        self._unacked: dict[int, tuple[bytes, str]] = {}

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        with _lock:
            q = _queue(self.name)
            q.extend((m.body, m.message_id, False) for m in messages if self._first(m.message_id))
            _lock.notify_all()

    def _first(self, message_id: str) -> bool:
        if not self.dedup_window:
            return True
        now, seen = time.monotonic(), _seen_ids.setdefault(self.name, {})
        if now - seen.get(message_id, -self.dedup_window) < self.dedup_window:
            return False
        seen[message_id] = now
        return True

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with _lock:
            q = _queue(self.name)
            if not q:
                _lock.wait_for(lambda: bool(q), timeout)
            out: list[Delivery] = []
            while q and len(out) < max_messages:
                body, message_id, redelivered = q.popleft()
                tag = next(_tags)
                self._unacked[tag] = (body, message_id)
                out.append(Delivery(body, message_id, redelivered, tag))
            return out

    def ack(self, delivery: Delivery) -> None:
        with _lock:
            self._unacked.pop(delivery.handle, None)

    def release(self, delivery: Delivery) -> None:
        with _lock:
            item = self._unacked.pop(delivery.handle, None)
            if item is not None:
                _queue(self.name).appendleft((item[0], item[1], True))
                _lock.notify_all()

    def close(self) -> None:
        with _lock:
            q = _queue(self.name)
            for tag in sorted(self._unacked, reverse=True):
                body, message_id = self._unacked.pop(tag)
                q.appendleft((body, message_id, True))
            _lock.notify_all()

    def depth(self) -> int:
        with _lock:
            return len(_queue(self.name))


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [MemoryTransport]
