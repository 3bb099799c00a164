"""The RabbitMQ transport against a real broker: no mocks.

Needs RabbitMQ (fixture ``amqp_url``); the connection-drop test also needs ``rabbitmqctl``
on the broker's machine. Every test uses its own queue and deletes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu.connection import Connection

from bridge.errors import ConfigError, MessageTooLargeError, RecoverableTransportError, TransportError
from bridge.plugin.manager import build_plugin_set
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.reliable import ReliableTransport
from bridge_amqp import AmqpTransport
from bridge_amqp.settings import AmqpSettings
from tests import services
from tests.certificates import make_certificates

pytestmark = pytest.mark.rabbitmq


# -- helpers --------------------------------------------------------------------


@contextlib.contextmanager
def admin_channel(amqp_url: str) -> Iterator[Any]:
    """A side connection, independent of the transport under test."""
    with Connection(amqp_url, transport="pyamqp") as conn:  # type: ignore[no-untyped-call]
        yield conn.channel()


def depth(amqp_url: str, queue: str) -> int:
    """Ready messages in the queue (declared like the transport does, so it may not exist yet)."""
    with admin_channel(amqp_url) as ch:
        return int(ch.queue_declare(queue, durable=True, auto_delete=False).message_count)


def open_transport(url: str) -> AmqpTransport:
    return AmqpTransport(TransportURL.parse(url))


def messages(prefix: str, count: int, size: int = 16) -> list[OutgoingMessage]:
    return [OutgoingMessage(os.urandom(size), f"{prefix}-{i}", "pk") for i in range(count)]


def receive_all(transport: Transport, count: int, ack: bool = True) -> list[Delivery]:
    """Receive until ``count`` deliveries arrived (the wait is a bound, not an assertion)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        batch = transport.receive(count - len(got), timeout=1)
        got.extend(batch)
        if ack:
            for d in batch:
                transport.ack(d)
    return got


@pytest.fixture
def queue_url(amqp_url: str, unique: str) -> Iterator[str]:
    yield f"{amqp_url}?queue={unique}"
    with admin_channel(amqp_url) as ch:
        for name in (unique, f"{unique}.dlq"):
            ch.queue_delete(name)


@pytest.fixture
def transport(queue_url: str) -> Iterator[AmqpTransport]:
    t = open_transport(queue_url)
    try:
        yield t
    finally:
        t.close()


# -- the data path --------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1024, 1024 * 1024, 5 * 1024 * 1024 + 3])
def test_round_trip_keeps_body_and_message_id(transport: AmqpTransport, size: int) -> None:
    body = os.urandom(size)
    transport.publish([OutgoingMessage(body, f"id-{size}", "pk")])

    [delivery] = receive_all(transport, 1)

    assert delivery.body == body
    assert delivery.message_id == f"id-{size}"
    assert delivery.redelivered is False


def test_order_is_preserved(transport: AmqpTransport) -> None:
    sent = messages("o", 200)
    transport.publish(sent[:50])
    transport.publish(sent[50:])

    got = receive_all(transport, 200)

    assert [d.message_id for d in got] == [m.message_id for m in sent]


def test_batch_of_500_is_confirmed_and_enqueued(transport: AmqpTransport, amqp_url: str) -> None:
    sent = messages("b", 500, size=4096)
    transport.publish(sent)

    # publish() returned: every message is confirmed, so already in the queue.
    assert depth(amqp_url, transport.queue) == 500
    assert {d.message_id for d in receive_all(transport, 500)} == {m.message_id for m in sent}


def test_oversize_body_is_refused_before_anything_is_sent(transport: AmqpTransport, amqp_url: str) -> None:
    too_big = OutgoingMessage(b"\0" * (AmqpTransport.max_message_bytes + 1), "big", "pk")

    with pytest.raises(MessageTooLargeError, match="big"):  # checked once, in core
        ReliableTransport(transport).publish([*messages("ok", 3), too_big])

    assert depth(amqp_url, transport.queue) == 0


def test_empty_publish_is_a_no_op(transport: AmqpTransport) -> None:
    transport.publish([])
    assert transport.receive(10, timeout=0) == []


# -- redelivery -----------------------------------------------------------------


def test_unacked_messages_are_redelivered_after_close(queue_url: str) -> None:
    sent = messages("u", 3)
    with open_transport(queue_url) as first:
        first.publish(sent)
        assert len(receive_all(first, 3, ack=False)) == 3
    with open_transport(queue_url) as second:
        again = receive_all(second, 3)
    assert [d.message_id for d in again] == [m.message_id for m in sent]
    assert all(d.redelivered for d in again)


def test_release_requeues_the_delivery(transport: AmqpTransport) -> None:
    transport.publish(messages("r", 1))
    [first] = receive_all(transport, 1, ack=False)
    transport.release(first)

    [second] = receive_all(transport, 1)

    assert second.message_id == first.message_id
    assert second.redelivered is True
    assert transport.receive(1, timeout=0.2) == []


CHILD = """
import sys
from bridge.transport import TransportURL
from bridge_amqp import AmqpTransport

transport = AmqpTransport(TransportURL.parse(sys.argv[1]))
got = transport.receive(1, timeout=30)
print(got[0].message_id if got else "nothing", flush=True)
sys.stdin.read()  # hold the delivery, unacked, until killed
"""


def test_message_comes_back_when_a_consumer_is_killed(transport: AmqpTransport, queue_url: str) -> None:
    transport.publish(messages("k", 1))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, queue_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "k-0"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    [delivery] = receive_all(transport, 1)
    assert delivery.message_id == "k-0"
    assert delivery.redelivered is True


# -- losing the connection --------------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def connections_of(queue: str) -> dict[str, str]:
    """Broker-side id -> state of the transport's connections, found by connection_name."""
    listing = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "state", "client_properties")
    rows = [line.split("\t") for line in listing.splitlines() if f'queue={queue}"' in line]
    return {row[0]: row[1] for row in rows}


def test_broker_dropping_the_connection_loses_nothing_confirmed(transport: AmqpTransport) -> None:
    if shutil.which("rabbitmqctl") is None:
        services.missing("rabbitmqctl (to make the broker drop connections)")
    before, after = messages("before", 20), messages("after", 20)
    transport.publish(before)
    held = receive_all(transport, 5, ack=False)
    pids = connections_of(transport.queue)
    assert len(pids) == 2  # publisher and consumer

    for pid in pids:
        rabbitmqctl("close_connection", pid, "test")
    # Not "running" any more means the broker has sent its Connection.Close; it then
    # waits for our answer, which the transport gives on its next call.
    deadline = time.monotonic() + 30
    while "running" in connections_of(transport.queue).values() and time.monotonic() < deadline:
        time.sleep(0.2)

    transport.publish(after)  # reconnects by itself: the drop happened while idle
    transport.ack(held[0])  # its channel is gone: skipped, the broker redelivers it
    got = receive_all(transport, 40)

    assert {d.message_id for d in got} == {m.message_id for m in before + after}
    redelivered = {d.message_id for d in got if d.redelivered}
    assert {d.message_id for d in held} <= redelivered


def test_usable_again_after_a_recoverable_error(transport: AmqpTransport, amqp_url: str) -> None:
    transport.publish(messages("first", 1))
    with admin_channel(amqp_url) as ch:
        ch.queue_delete(transport.queue)  # the broker now drops what we route to it

    # mandatory publishes come back instead of being acked into the void
    with pytest.raises(RecoverableTransportError, match="unroutable"):
        transport.publish(messages("lost", 2))

    transport.publish(messages("again", 2))  # the new call re-declares the queue
    assert {d.message_id for d in receive_all(transport, 2)} == {"again-0", "again-1"}


# -- a proxy in front of the broker: TLS termination, cutting connections on demand -----


class BrokerProxy:
    """Listens on a free local port and pipes each connection to the broker."""

    def __init__(self, amqp_url: str, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(amqp_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._armed: str | None = None  # what the next client send triggers: "cut" or "stall"
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, queue_url: str, scheme: str = "amqp", host: str = "127.0.0.1") -> str:
        """``queue_url`` pointed at this proxy."""
        parts = urlsplit(queue_url)
        credentials = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(scheme=scheme, netloc=f"{credentials}@{host}:{self.port}"))

    def cut_on_next_send(self) -> None:
        """Sever every connection as soon as a client sends anything, forwarding none of it."""
        self._armed = "cut"

    def stall_on_next_send(self) -> None:
        """From the next client send on, that connection forwards nothing, either way."""
        self._armed = "stall"

    def __enter__(self) -> BrokerProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sever(self._listener, *self._sockets)

    @staticmethod
    def _sever(*sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it; close() alone does not
            s.close()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # listener closed: the test is over
            try:
                client = self._tls.wrap_socket(raw, server_side=True) if self._tls else raw
                broker = socket.create_connection(self._upstream)
            except OSError:
                raw.close()  # e.g. the client rejected our certificate
                continue
            self._sockets += [client, broker]
            threading.Thread(target=self._pipe, args=(client, broker), daemon=True).start()

    def _pipe(self, client: socket.socket, broker: socket.socket) -> None:
        # One thread per connection, both directions: an SSL socket must not be read and
        # written from two threads at once.
        peer = {client: broker, broker: client}
        stalled = False
        # ValueError: select() on a socket another thread already closed (after a cut).
        with contextlib.suppress(OSError, ValueError):
            while True:
                # TLS may hold decrypted bytes that select() cannot see.
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                for src in [client] if pending else select.select(list(peer), [], [])[0]:
                    data = src.recv(65536)
                    if not data:
                        raise ConnectionAbortedError
                    if src is client and self._armed:
                        armed, self._armed = self._armed, None
                        if armed == "cut":
                            self._sever(*self._sockets)
                            return
                        stalled = True
                    if not stalled:
                        peer[src].sendall(data)
        self._sever(client, broker)


def test_connection_lost_while_awaiting_confirms_is_recoverable(amqp_url: str, queue_url: str) -> None:
    with BrokerProxy(amqp_url) as proxy, open_transport(proxy.url(queue_url)) as t:
        t.publish(messages("ok", 5))
        proxy.cut_on_next_send()  # the next publish reaches the proxy, never the broker
        with pytest.raises(RecoverableTransportError):
            t.publish(messages("cut", 5))

        t.publish(messages("again", 5))  # a new call reconnects
        got = {d.message_id for d in receive_all(t, 10)}
    assert got == {m.message_id for m in messages("ok", 5) + messages("again", 5)}


def test_confirm_timeout_is_recoverable(amqp_url: str, queue_url: str) -> None:
    with BrokerProxy(amqp_url) as proxy, open_transport(proxy.url(queue_url) + "&confirm_timeout=0.5") as t:
        t.publish(messages("ok", 2))
        proxy.stall_on_next_send()  # the broker never hears of the next batch
        with pytest.raises(RecoverableTransportError, match="did not confirm 3 of 3"):
            t.publish(messages("stalled", 3))

        t.publish(messages("again", 2))
        got = {d.message_id for d in receive_all(t, 4)}
    assert got == {"ok-0", "ok-1", "again-0", "again-1"}


def test_existing_queue_with_other_arguments_is_used_as_is(queue_url: str, amqp_url: str) -> None:
    queue = TransportURL.parse(queue_url).params["queue"]
    with admin_channel(amqp_url) as ch:
        ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-max-length": 1000})
    with open_transport(queue_url) as t:
        t.publish(messages("q", 2))
        assert len(receive_all(t, 2)) == 2


def test_recoverable_errors_cover_dropped_connections() -> None:
    import amqp.exceptions

    errors = AmqpTransport.recoverable_errors
    assert issubclass(amqp.exceptions.ConnectionForced, errors)  # broker restart, close_connection
    assert issubclass(ConnectionResetError, errors)
    assert issubclass(socket.timeout, errors)


def test_unreachable_broker_is_a_recoverable_error(monkeypatch: pytest.MonkeyPatch, unique: str) -> None:
    # Keep kombu's backoff short: this is about the error type, not the waiting.
    monkeypatch.setattr("bridge_amqp.link.CONNECT_RETRIES", 0)
    port = services.free_port()  # nothing listens there
    with (
        open_transport(f"amqp://guest:guest@127.0.0.1:{port}//?queue={unique}") as t,
        pytest.raises(RecoverableTransportError, match="guest:\\*\\*\\*@"),
    ):
        t.publish(messages("x", 1))


# -- configuration and plugin loading ----------------------------------------------


def test_missing_queue_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="queue") as info:
        open_transport("amqp://user:s3cret@broker:5672//")
    assert "s3cret" not in str(info.value)
    assert "user:***@broker" in str(info.value)


@pytest.mark.parametrize(
    "query",
    [
        "queue=q&prefetch=0",
        "queue=q&heartbeat=soon",
        "queue=q&ssl_ca=/etc/hosts",
        "queue=q&confirm_timeout=-1",
    ],
)
def test_bad_parameters_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        open_transport(f"amqp://u:p@h//?{query}")


def test_bridge_only_parameters_never_reach_kombu() -> None:
    url = "amqp://u:s3cret@h:1234/vh?queue=q&prefetch=7&heartbeat=15"
    settings = AmqpSettings.from_url(TransportURL.parse(url))
    conn = settings.connection("test")
    assert (settings.prefetch, settings.heartbeat) == (7, 15.0)
    assert "?" not in settings.broker_url
    assert (conn.hostname, conn.port, conn.virtual_host, conn.userid) == ("h", 1234, "vh", "u")
    assert conn.heartbeat == 15.0
    assert conn.password == "s3cret"
    assert "s3cret" not in repr(settings)


def test_dead_letter_url_names_the_dlq() -> None:
    t = open_transport("amqp://u:p@h//?queue=orders&prefetch=5")
    assert t.dead_letter_url().params == {"queue": "orders.dlq", "prefetch": "5"}


def test_plugin_manager_serves_both_schemes() -> None:
    plugins = build_plugin_set()
    for scheme in ("amqp", "amqps"):
        assert plugins.transport_class(TransportURL.parse(f"{scheme}://h//?queue=q")) is AmqpTransport
    [info] = [i for i in plugins.infos if i.name == "amqp"]
    assert info.error is None
    assert sorted(info.schemes) == ["amqp", "amqps"]


def test_amqps_url_becomes_kombu_ssl_options(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not read until connecting")
    url = (
        f"amqps://u:p@rabbit.example:5671/vh?queue=q&ssl_ca={tmp_path}/ca.pem"
        f"&ssl_cert={tmp_path}/cert.pem&ssl_key={tmp_path}/key.pem"
    )
    conn = AmqpSettings.from_url(TransportURL.parse(url)).connection("test")
    assert conn.transport_cls == "pyamqp"
    assert conn.ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "rabbit.example",
        "ca_certs": f"{tmp_path}/ca.pem",
        "certfile": f"{tmp_path}/cert.pem",
        "keyfile": f"{tmp_path}/key.pem",
    }
    # Without a port, amqps means the TLS port.
    plain_port = AmqpSettings.from_url(TransportURL.parse("amqps://u:p@h//?queue=q")).connection("test")
    assert plain_port.transport.default_connection_params["port"] == 5671

    unverified = AmqpSettings.from_url(TransportURL.parse("amqps://h//?queue=q&ssl_verify=false"))
    assert unverified.ssl == {"cert_reqs": ssl.CERT_NONE}


# -- TLS end to end, through a local TLS-terminating proxy in front of the broker ----


def test_amqps_round_trip_verifies_the_broker_certificate(amqp_url: str, queue_url: str, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with BrokerProxy(amqp_url, tls) as proxy:
        base = proxy.url(queue_url, scheme="amqps", host="localhost")  # the name in the certificate
        with open_transport(f"{base}&ssl_ca={ca}") as t:
            t.publish(messages("tls", 3))
            assert [d.message_id for d in receive_all(t, 3)] == ["tls-0", "tls-1", "tls-2"]

        # The system CAs do not know our test CA: a fatal error, not retried.
        with open_transport(base) as untrusted, pytest.raises(TransportError) as info:
            untrusted.publish(messages("no", 1))
        assert not isinstance(info.value, RecoverableTransportError)
