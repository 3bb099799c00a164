"""The hooks a ddb-bridge plugin may implement.

A plugin is a module (or object) registered under the ``bridge.transports`` entry-point
group. Built-in transports are registered through that same group, so they load exactly
as a third-party plugin does. Implement a hook with :data:`bridge.hookimpl`::

    from bridge import hookimpl

    @hookimpl
    def bridge_transports():
        return [MyTransport]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from bridge.transport import Transport

PROJECT_NAME = "bridge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def bridge_transports() -> list[type[Transport]]:  # type: ignore[empty-body]
    """Return the transport classes this plugin provides.

    Each class subclasses :class:`bridge.transport.Transport` and lists the URL schemes
    it serves in ``schemes``. Two plugins claiming one scheme is an error reported by
    ``bridge plugins``; the first loaded wins.
    """


@hookspec
def bridge_transport_opened(transport: Transport, role: str) -> None:
    """Called after core opened a transport; ``role`` is ``"publish"``, ``"consume"`` or ``"dlq"``.

    For observability plugins (metrics, tracing). Must not raise; must not block.
    """
