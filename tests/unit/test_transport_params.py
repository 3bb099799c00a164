"""bridge.transport.params and the naming/size declarations of bridge.transport (no services needed)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.errors import ConfigError, MessageTooLargeError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL, content_id
from bridge.transport.params import UrlParams
from bridge.transport.reliable import ReliableTransport


def params(url: str, *known: str) -> UrlParams:
    return UrlParams(TransportURL.parse(url), known)


def test_unknown_parameters_are_warned_about_once_and_known_ones_read(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        p = params("myq://u:s3cret@h:7001/q?size=3&typo=1&ratio=0.5&on=yes", "size", "ratio", "on")
    assert caplog.text.count("ignoring unknown parameters typo") == 1 and "s3cret" not in caplog.text
    assert (p.number("size", 1, int, minimum=1), p.number("ratio", 1.0, float, minimum=0)) == (3, 0.5)
    assert p.number("absent", 7, int, minimum=1) == 7 and p.flag("on", False) and p.text("missing", "d") == "d"
    assert p.credentials() == ("u", "s3cret") and p.host_port(7000) == ("h", 7001)


@pytest.mark.parametrize(
    "url, call, complaint",
    [
        ("myq://h/q?size=0", lambda p: p.number("size", 1, int, minimum=1), "size='0' .* must be a number >= 1"),
        ("myq://h/q?size=lots", lambda p: p.number("size", 1, int, minimum=1), "size='lots'"),
        ("myq://h/q?on=perhaps", lambda p: p.flag("on", False), "on='perhaps' .* true or false"),
        ("myq://h/q", lambda p: p.text("queue", required="add ?queue=NAME"), "has no queue: add \\?queue=NAME"),
        ("myq://h/q?ca=/no/such", lambda p: p.file("ca"), "ca='/no/such' .* not a readable file"),
        ("myq://h/q?ssl_ca=/etc/hosts", lambda p: p.tls(("myqs",)), "ssl_ca .* need a TLS scheme \\(myqs\\)"),
        ("myqs://h/q?ssl_key=/etc/hosts", lambda p: p.tls(("myqs",)), "ssl_key without ssl_cert"),
        ("myq://u:s3cret@h:port/q", lambda p: p.host_port(1), "bad port"),
    ],
)
def test_bad_values_are_one_line_config_errors_without_the_password(url: str, call, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as info:
        call(params(url.replace("myq://h", "myq://u:s3cret@h"), "size", "on", "queue", "ca", *TLS_KEYS))
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


TLS_KEYS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify")


def test_tls_settings_become_an_ssl_context(tmp_path: Path) -> None:
    assert params("myq://h/q", *TLS_KEYS).ssl_context(("myqs",)) is None
    verified = params("myqs://broker.example/q", *TLS_KEYS).ssl_context(("myqs",))
    assert verified is not None and verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    loose = params("myqs://h/q?ssl_verify=false", *TLS_KEYS).ssl_context(("myqs",))
    assert loose is not None and loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    tls = params(f"myqs://broker.example/q?ssl_ca={__file__}", *TLS_KEYS).tls(("myqs",))
    assert tls is not None and (tls.hostname, tls.ca) == ("broker.example", __file__)


class Recording(Transport):
    schemes = ("rec",)
    max_message_bytes = 10

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        self.sent: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.sent += messages

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        return []

    def ack(self, delivery: Delivery) -> None:
        pass


def test_core_refuses_an_oversize_batch_before_the_transport_sees_any_of_it() -> None:
    transport = Recording(TransportURL.parse("rec://q"))
    with pytest.raises(MessageTooLargeError, match="message big is 11 bytes; rec://q takes at most 10"):
        ReliableTransport(transport).publish(
            [OutgoingMessage(b"ok", "ok", "p"), OutgoingMessage(b"x" * 11, "big", "p")]
        )
    assert transport.sent == []
    transport.max_message_bytes = 20  # per object: learned from the broker, say
    ReliableTransport(transport).publish([OutgoingMessage(b"x" * 11, "big", "p")])
    assert [m.message_id for m in transport.sent] == ["big"]


@pytest.mark.parametrize(
    "url, dlq, parked",
    [
        ("rec://h//?queue=users", "rec://h//?queue=users.dlq", "rec://h//?queue=users.dlq.parked"),
        ("rec://h:1/users?x=1", "rec://h:1/users.dlq?x=1", "rec://h:1/users.dlq.parked?x=1"),
        ("rec://users?x=1", "rec://users.dlq?x=1", "rec://users.dlq.parked?x=1"),
    ],
)
def test_default_sibling_names_follow_where_the_url_names_its_destination(url: str, dlq: str, parked: str) -> None:
    transport = Recording(TransportURL.parse(url))
    assert transport.dead_letter_url().raw == dlq
    assert Recording(transport.dead_letter_url()).sibling("parked").raw == parked


def test_content_ids_change_with_the_body_and_only_with_it() -> None:
    assert content_id("rec1", b"a") == content_id("rec1", b"a") != content_id("rec1", b"b")
    assert content_id("rec1", b"a").startswith("rec1.")
