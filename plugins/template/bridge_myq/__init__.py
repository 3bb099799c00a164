"""``myq://HOST:PORT/NAME``: TODO one line on what this transport talks to.

TODO: document the URL here: every query parameter, its default and its meaning.
"""

from __future__ import annotations

from bridge import hookimpl
from bridge.transport import Transport
from bridge_myq.transport import MyQTransport

__all__ = ["MyQTransport", "bridge_transports"]


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [MyQTransport]
