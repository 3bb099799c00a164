"""``amqp://`` and ``amqps://``: the built-in RabbitMQ transport (kombu + py-amqp).

URL::

    amqp://USER:PASS@HOST:PORT/VHOST?queue=NAME[&prefetch=64][&heartbeat=0]
        [&connect_timeout=10][&confirm_timeout=30]
    amqps://USER:PASS@HOST:5671/VHOST?queue=NAME[&ssl_ca=FILE][&ssl_cert=FILE]
        [&ssl_key=FILE][&ssl_verify=true|false]

The default vhost ``/`` is written ``//`` (or ``/%2F``). ``queue`` is required; the
queue is declared durable on first use by publisher and consumer alike, messages are
persistent, and ``publish()`` returns only once the broker confirmed the whole batch.

TLS: use ``amqps://`` and the broker's TLS port (5671 unless given). The server
certificate is verified against the system CAs, or against ``ssl_ca`` (a PEM file)
when given, and must match HOST. ``ssl_cert`` + ``ssl_key`` present a client
certificate (for brokers with ``ssl_options.fail_if_no_peer_cert``). ``ssl_verify=false``
turns verification off; only for tests.

See :class:`bridge_amqp.transport.AmqpTransport` for behaviour on errors.
"""

from __future__ import annotations

from bridge import hookimpl
from bridge.transport import Transport
from bridge_amqp.transport import AmqpTransport

__all__ = ["AmqpTransport", "bridge_transports"]


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [AmqpTransport]
