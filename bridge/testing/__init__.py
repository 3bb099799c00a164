"""The transport conformance kit: a pytest plugin and a contract test class.

Installing ddb-bridge registers this module as a pytest plugin (entry point
``pytest11: bridge_testing``), which adds the fixtures below to every pytest run.
It is loaded in every project where ddb-bridge is installed, so importing it must
stay cheap and do nothing: it defines fixtures and classes, nothing else.

A plugin's test module::

    import pytest
    from bridge.testing import TransportContract

    class TestMyQ(TransportContract):
        @pytest.fixture
        def transport_url(self, unique_destination):
            yield f"myq://127.0.0.1:7000/{unique_destination}"
            ...  # delete the destination and its siblings (.dlq, .dlq.parked)

        # The failure cases also need unreachable_transport_url, wrong_credentials_url and
        # delete_destination fixtures, or `untestable` saying why one cannot run here.

See docs/plugins.md.

May import: ``bridge.errors``, ``bridge.transport``, ``bridge.plugin``: the kit tests transports alone.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from bridge.testing.contract import TransportContract
from bridge.testing.support import (
    Child,
    digest,
    make_messages,
    missing,
    receive_bodies,
    receive_for,
    receive_until,
)
from bridge.transport import Transport

__all__ = [
    "Child",
    "TransportContract",
    "digest",
    "make_messages",
    "make_transport",
    "missing",
    "receive_bodies",
    "receive_for",
    "receive_until",
    "unique_destination",
]


@pytest.fixture
def make_transport() -> Iterator[Callable[..., Transport]]:
    """``make_transport(url, role="consume")``: a transport opened through the installed
    plugins, exactly as bridge-publish and bridge-apply open one; closed after the test."""
    from bridge.plugin.manager import plugin_set  # reads entry points: only when a test asks

    opened: list[Transport] = []

    def open_transport(url: str, role: str = "consume") -> Transport:
        transport = plugin_set().open(url, role)
        opened.append(transport)
        return transport

    yield open_transport
    for transport in opened:
        with contextlib.suppress(Exception):  # the test's own outcome matters, not this
            transport.close()


@pytest.fixture
def unique_destination() -> str:
    """A fresh name for a queue, stream or topic, so tests never share state."""
    return f"bridge-kit-{uuid.uuid4().hex[:12]}"
