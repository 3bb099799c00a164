"""The NATS plugin beyond the kit: URL errors, the server's own size limit, every way to log in, TLS.

Each server case starts its own ``nats-server`` (with JetStream) on a free loopback port with the
configuration it needs: a small max_payload, a password, a token, an NKEY user, a TLS certificate
from a throwaway CA. Nothing is mocked.
"""

import datetime
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nkeys
import pytest
from bridge_nats import NatsTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.errors import ConfigError, RecoverableTransportError
from bridge.testing import make_messages, missing, receive_bodies
from bridge.transport import TransportURL

BINARY = os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
Server = Callable[[str], str]


def nats(url: str) -> NatsTransport:
    return NatsTransport(TransportURL.parse(url))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``server(config)``: a nats-server with JetStream and ``config`` added; returns host:port."""
    if not os.path.exists(BINARY):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no nats-server at {BINARY}")
        pytest.skip(f"no nats-server at {BINARY}")
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        store = tempfile.mkdtemp(dir=tmp_path)
        conf = tmp_path / f"{port}.conf"
        conf.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{store}" }}\n{config}\n')
        processes.append(subprocess.Popen([BINARY, "-c", str(conf)], stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return f"127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nats-server did not start with:\n{config}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def round_trip(url: str) -> None:
    transport = nats(url)
    try:
        sent = make_messages("login", 2)
        transport.publish(sent)
        assert missing(sent, receive_bodies(transport, [m.body for m in sent], 10)) == []
    finally:
        transport.close()


def refused(url: str) -> Exception:
    transport = nats(url)
    try:
        with pytest.raises(Exception) as info:
            transport.publish(make_messages("refused", 1))
    finally:
        transport.close()
    assert not isinstance(info.value, (RecoverableTransportError, *NatsTransport.recoverable_errors)), info.value
    return info.value


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("nats://h:4222/", "must name a stream"),
        ("nats://h:4222/users.dlq", "must name a stream"),
        ("nats://u:s3cret@h/users?ssl_ca=/etc/hosts", "need a TLS scheme"),
        ("tls://u:s3cret@h/users?ssl_ca=/no/such/ca.pem", "ssl_ca"),
        ("nats://u:s3cret@h/users?creds=/no/such.creds", "creds"),
        ("nats://u:s3cret@h/users?ack_wait=soon", "ack_wait"),
        ("nats://u:s3cret@h:port/users", "bad port"),
    ],
)
def test_bad_urls_are_refused_with_one_line_naming_the_problem(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as info:
        nats(url)
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


def test_unknown_parameters_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        nats("nats://h/users?ackwait=5")
    assert "ignoring unknown parameters ackwait" in caplog.text


def test_siblings_use_dashes_because_jetstream_names_cannot_hold_dots() -> None:
    transport = nats("nats://u:p@h:4222/users?ack_wait=2")
    assert transport.dead_letter_url().raw == "nats://u:p@h:4222/users-dlq?ack_wait=2"
    assert (
        nats(transport.dead_letter_url().raw).sibling("parked").raw == "nats://u:p@h:4222/users-dlq-parked?ack_wait=2"
    )


def test_the_limit_comes_from_the_server_after_connecting(server: Server) -> None:
    where = server("max_payload: 65536")
    transport = nats(f"nats://{where}/small")
    try:
        assert transport.max_message_bytes > 65536  # the default, before the server said anything
        transport.connect()
        assert transport.max_message_bytes == 65536 - 512  # room for the Nats-Msg-Id header
    finally:
        transport.close()


def test_user_and_password(server: Server) -> None:
    where = server('authorization { user: bridge, password: "s3 cret" }')
    round_trip(f"nats://bridge:s3%20cret@{where}/pw")  # percent-encoded in the URL
    assert "Authorization Violation" in str(refused(f"nats://bridge:wrong@{where}/pw"))


def test_token(server: Server) -> None:
    where = server("authorization { token: t0ken }")
    round_trip(f"nats://t0ken@{where}/tok")
    refused(f"nats://wrong@{where}/tok")


def test_nkey_seed_file(server: Server, tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    where = server(f"authorization {{ users: [ {{ nkey: {public} }} ] }}")
    (tmp_path / "user.nk").write_bytes(seed)
    round_trip(f"nats://{where}/nk?nkey={tmp_path / 'user.nk'}")
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    refused(f"nats://{where}/nk?nkey={other}")


def make_ca_and_server_cert(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost signed by it; returns the CA file."""
    now, hour = datetime.datetime.now(datetime.timezone.utc), datetime.timedelta(hours=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bridge test CA {uuid.uuid4().hex[:6]}")])
    ca = (
        x509.CertificateBuilder(
            ca_name, ca_name, ca_key.public_key(), x509.random_serial_number(), now - hour, now + hour
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder(ca_name, name, key.public_key(), x509.random_serial_number(), now - hour, now + hour)
        .add_extension(names, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "key.pem").write_bytes(pem)
    return directory / "ca.pem"


def test_tls_with_our_ca_works_and_an_unknown_certificate_is_not_retried(server: Server, tmp_path: Path) -> None:
    ca = make_ca_and_server_cert(tmp_path)
    where = server(f'tls {{ cert_file: "{tmp_path / "cert.pem"}", key_file: "{tmp_path / "key.pem"}" }}')
    round_trip(f"tls://{where}/secure?ssl_ca={ca}")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused(f"tls://{where}/secure"))  # the system CAs do not know it
