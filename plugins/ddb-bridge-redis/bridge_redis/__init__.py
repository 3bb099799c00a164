"""``redis://`` and ``rediss://``: a ddb-bridge transport over Redis Streams.

URL::

    redis://[[USER]:PASS@]HOST[:PORT]/DB?stream=NAME[&group=bridge][&claim_idle_ms=60000]
        [&connect_timeout=10][&socket_timeout=30]
    rediss://...?stream=NAME[&ssl_ca=FILE][&ssl_cert=FILE][&ssl_key=FILE][&ssl_verify=true|false]

``stream`` (required) is the stream key; ``group`` the consumer group every
bridge-apply of this stream joins. A delivery left unacked for ``claim_idle_ms`` by a
consumer that crashed is delivered again to another. ``rediss://`` is TLS: the server
certificate is checked against the system CAs or ``ssl_ca`` and must match HOST;
``ssl_cert`` + ``ssl_key`` present a client certificate; ``ssl_verify=false`` is for
tests only. The dead-letter queue is the stream ``NAME.dlq`` on the same server.

See :class:`bridge_redis.transport.RedisTransport`.
"""

from __future__ import annotations

from bridge import hookimpl
from bridge.transport import Transport
from bridge_redis.transport import RedisTransport

__all__ = ["RedisTransport", "bridge_transports"]


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [RedisTransport]
