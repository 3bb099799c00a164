"""``memory://NAME``: an in-process transport for the demo and for tests.

Messages live in this process only; publisher and applier must share it (the demo runs
both in threads). Unacked deliveries go back to the queue on ``release`` or ``close``,
as a broker would redeliver them.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Sequence

from bridge import hookimpl
from bridge.errors import MessageTooLargeError
from bridge.transport import Delivery, OutgoingMessage, Transport

_queues: dict[str, deque[tuple[bytes, str, bool]]] = {}
_lock = threading.Condition()
_tags = itertools.count()


def _queue(name: str) -> deque[tuple[bytes, str, bool]]:
    return _queues.setdefault(name, deque())


class MemoryTransport(Transport):
    schemes = ("memory",)
    max_message_bytes = 16 * 1024 * 1024

    def __init__(self, url):  # type: ignore[no-untyped-def]
        super().__init__(url)
        self.name = url.netloc or url.path.strip("/") or "default"
        self._unacked: dict[int, tuple[bytes, str]] = {}

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:  # all or nothing: check every size before enqueuing any
            if len(m.body) > self.max_message_bytes:
                raise MessageTooLargeError(
                    f"message {m.message_id} is {len(m.body)} bytes; memory://{self.name} takes at most"
                    f" {self.max_message_bytes}"
                )
        with _lock:
            q = _queue(self.name)
            q.extend((m.body, m.message_id, False) for m in messages)
            _lock.notify_all()

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
