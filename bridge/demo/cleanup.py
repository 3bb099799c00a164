"""The demo's broker queues are its own: delete them when it ends, so runs leave nothing behind.

RabbitMQ queues the bridge declares are durable (they must survive a broker restart in production),
so a demo that did not delete them would leave three per run on the user's broker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

log = logging.getLogger(__name__)


def demo_queue_names(url: str) -> list[str]:
    """The queue of an ``amqp://...?queue=NAME`` URL and its dead-letter queues (retry, parked)."""
    queue = dict(parse_qsl(urlsplit(url).query)).get("queue")
    return [queue, f"{queue}.dlq", f"{queue}.dlq.parked"] if queue else []


def delete_queues(url: str) -> list[str]:
    """Delete the demo's queues on an AMQP broker; other transports keep nothing (memory) or are the user's."""
    if urlsplit(url).scheme not in ("amqp", "amqps"):
        return []
    from kombu.connection import Connection  # only here: the demo's own cleanup, never the data path

    parts = urlsplit(url)
    conn: Any = Connection(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), connect_timeout=5)  # type: ignore[no-untyped-call]
    deleted = []
    try:
        channel = conn.channel()
        for name in demo_queue_names(url):
            with contextlib.suppress(Exception):  # never declared (no failures): nothing to delete
                channel.queue_delete(name)
                deleted.append(name)
    except OSError as exc:
        log.warning("could not delete the demo's queues (%s); delete %s by hand", exc, demo_queue_names(url))
    finally:
        conn.release()
    return deleted


@contextlib.contextmanager
def deleting_queues(*urls: str | None) -> Iterator[None]:
    """Deletes the queues of ``urls`` (``None``: the user's own, kept) when the block ends, however it ends."""
    try:
        yield
    finally:
        for url in urls:
            if url is not None:
                delete_queues(url)


def describe_queue(transport: str, owned: bool) -> str:
    """``(queue NAME, deleted at the end)`` for the banner, so a user can find it on the broker."""
    names = demo_queue_names(transport)
    if not names or urlsplit(transport).scheme not in ("amqp", "amqps"):
        return ""
    return f"(queue {names[0]}{', deleted at the end' if owned else ''})"
