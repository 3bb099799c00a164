"""The Redis Streams plugin beyond the conformance kit: URL, trimming, failures, TLS.

Against the real Redis at 127.0.0.1:6379 (REDIS_URL or BRIDGE_REDIS_URL overrides); the TLS test
starts its own redis-server with a throwaway CA. The kit itself runs in test_redis_kit.py.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import redis_support as support
from bridge_redis import RedisTransport
from bridge_redis.settings import RedisSettings

from bridge.errors import ConfigError, RecoverableTransportError, TransportError
from bridge.testing import make_messages, missing, receive_bodies, receive_until
from bridge.transport import TransportURL
from bridge.transport.reliable import Backoff, ReliableTransport


@pytest.fixture
def base_url() -> str:
    parts = urlsplit(support.REDIS_URL)
    if not support.port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        support.missing(f"Redis at {support.REDIS_URL} (start one with `redis-server --daemonize yes`)")
    return support.REDIS_URL


@pytest.fixture
def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def delete_streams(base_url: str, *streams: str) -> None:
    client = redis.Redis.from_url(base_url)
    try:
        client.delete(*streams)
    finally:
        client.close()


@pytest.fixture
def admin(base_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(base_url)
    yield client
    client.close()


@pytest.fixture
def stream_url(base_url: str, unique: str) -> Iterator[str]:
    yield f"{base_url}?stream={unique}&claim_idle_ms=1000"
    delete_streams(base_url, unique, f"{unique}.dlq")


@pytest.fixture
def transport(stream_url: str) -> Iterator[RedisTransport]:
    t = RedisTransport(TransportURL.parse(stream_url))
    yield t
    t.close()


def settings(url: str) -> RedisSettings:
    return RedisSettings.from_url(TransportURL.parse(url))


# -- configuration ------------------------------------------------------------------


def test_url_becomes_explicit_client_options() -> None:
    s = settings("redis://app:p%40ss@cache.example:6380/3?stream=users&group=g1&claim_idle_ms=5000&socket_timeout=7")
    options = s.client_options
    assert (options["host"], options["port"], options["db"]) == ("cache.example", 6380, 3)
    assert (options["username"], options["password"]) == ("app", "p@ss")
    assert (s.stream, s.group, s.claim_idle_ms, s.socket_timeout) == ("users", "g1", 5000, 7.0)
    assert options["retry"].get_retries() == 0  # core retries, redis-py must not
    assert "ssl" not in options
    assert "p@ss" not in repr(s) and "p%40ss" not in repr(s)


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("redis://u:s3cret@h/0", "stream"),
        ("redis://u:s3cret@h/0?stream=s&claim_idle_ms=0", "claim_idle_ms"),
        ("redis://u:s3cret@h/zero?stream=s", "database"),
        ("redis://u:s3cret@h/0?stream=s&ssl_ca=/etc/hosts", "rediss"),
        ("rediss://u:s3cret@h/0?stream=s&ssl_ca=/no/such/ca.pem", "ssl_ca"),
        ("rediss://u:s3cret@h/0?stream=s&ssl_verify=maybe", "ssl_verify"),
    ],
)
def test_bad_urls_are_config_errors_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as info:
        RedisTransport(TransportURL.parse(url))
    assert "s3cret" not in str(info.value)


def test_rediss_options_and_dead_letter_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("read when connecting")
    options = settings(f"rediss://h:6390/0?stream=s&ssl_ca={ca}").client_options
    assert (options["ssl"], options["ssl_cert_reqs"], options["ssl_check_hostname"]) == (True, "required", True)
    assert options["ssl_ca_certs"] == str(ca)
    unverified = settings("rediss://h/0?stream=s&ssl_verify=false").client_options
    assert (unverified["ssl_cert_reqs"], unverified["ssl_check_hostname"]) == ("none", False)

    t = RedisTransport(TransportURL.parse("redis://u:pw@h:6379/2?stream=orders&claim_idle_ms=9"))
    dlq = t.dead_letter_url()
    assert (dlq.scheme, dlq.netloc, dlq.path) == ("redis", "u:pw@h:6379", "/2")
    assert dlq.params == {"stream": "orders.dlq", "claim_idle_ms": "9"}


# -- behaviour on the real server -----------------------------------------------------


def test_trim_drops_only_what_every_group_acknowledged(transport: RedisTransport, admin: redis.Redis) -> None:
    sent = make_messages("trim", 10)
    transport.publish(sent)
    got = receive_until(transport, lambda g: len(g) >= 10, 30, ack=False)
    for delivery in got[:6]:
        transport.ack(delivery)

    transport.trim(approximate=False)
    assert admin.xlen(transport.stream) == 4  # the 4 unacked entries stay

    # A second group that has read nothing yet holds everything that is left.
    admin.xgroup_create(transport.stream, "audit", id="0")
    for delivery in got[6:]:
        transport.ack(delivery)
    transport.trim(approximate=False)
    assert admin.xlen(transport.stream) == 4


def test_close_gives_back_at_once_and_removes_the_idle_consumer(stream_url: str, admin: redis.Redis) -> None:
    slow = stream_url.replace("claim_idle_ms=1000", "claim_idle_ms=600000")  # no claim by idleness
    first = RedisTransport(TransportURL.parse(slow))
    first.publish(make_messages("giveback", 3))
    held = receive_until(first, lambda g: len(g) >= 3, 30, ack=False)
    first.ack(held[0])
    first.close()

    second = RedisTransport(TransportURL.parse(slow))
    try:
        again = receive_bodies(second, [d.body for d in held[1:]], 10)
        assert {d.message_id for d in again} == {held[1].message_id, held[2].message_id}
        assert all(d.redelivered for d in again)
    finally:
        second.close()

    def consumers() -> set[str]:
        return {c["name"].decode() for c in admin.xinfo_consumers(first.stream, first.group)}

    # second held nothing when it closed; first gave entries back, so its name stays
    # until some consumer's housekeeping finds it empty and idle for claim_idle_ms.
    assert consumers() == {first.consumer}
    with RedisTransport(TransportURL.parse(stream_url.replace("claim_idle_ms=1000", "claim_idle_ms=1"))) as third:
        third.trim()
    assert consumers() == set()


def test_deleted_stream_is_recoverable_and_recreated(transport: RedisTransport, admin: redis.Redis) -> None:
    transport.publish(make_messages("before", 1))
    admin.delete(transport.stream)

    with pytest.raises(RecoverableTransportError, match="NOGROUP"):
        transport.receive(10, timeout=0)
    after = make_messages("after", 2)
    transport.publish(after)
    assert missing(after, receive_bodies(transport, [m.body for m in after], 10)) == []


def test_killed_connection_is_recovered_by_core_without_loss(transport: RedisTransport, admin: redis.Redis) -> None:
    reliable = ReliableTransport(transport, Backoff(initial_s=0.01, max_s=0.05))
    first, second = make_messages("first", 5), make_messages("second", 5)
    reliable.publish(first)
    name = f"ddb-bridge:{transport.consumer}"
    [client_id] = [c["id"] for c in admin.client_list() if c["name"] == name]
    admin.client_kill_filter(_id=client_id)

    reliable.publish(second)  # the dead connection fails once; core reconnects and retries
    got = receive_bodies(transport, [m.body for m in first + second], 10)
    assert missing(first + second, got) == []


def test_wrong_credentials_are_fatal(base_url: str, unique: str) -> None:
    url = base_url.replace("redis://", "redis://nobody:wrong@") + f"?stream={unique}"
    with RedisTransport(TransportURL.parse(url)) as t, pytest.raises(TransportError) as info:
        t.publish(make_messages("x", 1))
    assert not isinstance(info.value, RecoverableTransportError)
    assert "wrong" not in str(info.value)


# -- TLS, against a redis-server started with a throwaway CA --------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    from tests.certificates import make_certificates

    if shutil.which("redis-server") is None:
        support.missing("redis-server (to start a TLS Redis)")
    ca, cert, key = make_certificates(tmp_path)
    port = support.free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not support.port_open("127.0.0.1", port) and time.monotonic() < deadline:
            if server.poll() is not None:
                support.missing("a redis-server built with TLS")
            time.sleep(0.1)
        yield port, ca
    finally:
        server.terminate()
        server.wait(20)


def test_rediss_round_trip_verifies_the_server_certificate(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    base = f"rediss://localhost:{port}/0?stream=tls"  # localhost: the name in the certificate
    with RedisTransport(TransportURL.parse(f"{base}&ssl_ca={ca}")) as t:
        sent = make_messages("tls", 3)
        t.publish(sent)
        assert missing(sent, receive_bodies(t, [m.body for m in sent], 10)) == []

    # The system CAs do not know the test CA: fatal, never retried.
    with RedisTransport(TransportURL.parse(base)) as untrusted, pytest.raises(TransportError) as info:
        untrusted.publish(make_messages("no", 1))
    assert not isinstance(info.value, RecoverableTransportError)
    assert "certificate" in str(info.value)
    assert ssl.OPENSSL_VERSION  # the TLS stack that was exercised
