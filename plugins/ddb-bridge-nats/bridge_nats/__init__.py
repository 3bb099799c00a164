"""``nats://`` and ``tls://``: a ddb-bridge transport over NATS JetStream.

URL::

    nats://[USER:PASS@|TOKEN@]HOST[:4222]/STREAM[?consumer=bridge][&ack_wait=60]
        [&connect_timeout=2][&creds=FILE][&nkey=FILE]
    tls://...same...[&ssl_ca=FILE][&ssl_cert=FILE][&ssl_key=FILE][&ssl_verify=true|false]

``STREAM`` is a JetStream stream (created on first use) holding the one subject ``STREAM``;
every bridge-apply of it pulls from the durable consumer ``consumer``. A delivery not acked
within ``ack_wait`` seconds (its consumer crashed) is delivered again. Credentials: user and
password or a token in the URL, or a ``.creds`` file (``creds=``), or an NKEY seed file
(``nkey=``). The dead-letter stream is ``STREAM-dlq`` (JetStream names cannot hold ``.``).
"""

from bridge import hookimpl
from bridge.transport import Transport
from bridge_nats.transport import NatsTransport


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [NatsTransport]
