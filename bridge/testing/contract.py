"""The transport contract: what core relies on, as tests a plugin's test module inherits.

Every case runs against the real broker behind ``transport_url``; nothing is mocked.
The cases are written against the primitives only (publish, receive, ack, release,
close), exactly as core drives them. See docs/plugins.md, "Run the conformance kit".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest

from bridge.errors import MessageTooLargeError
from bridge.testing.failures import FailureCases
from bridge.testing.support import (
    Child,
    digest,
    make_messages,
    missing,
    receive_bodies,
    receive_for,
    receive_until,
)
from bridge.transport import MAX_MESSAGE_ID, Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.reliable import ReliableTransport

MakeTransport = Callable[..., Transport]
LONG_PARTITION_KEY = 200  # origin/table: core's partition keys stay below this


def digests(deliveries: Sequence[Delivery]) -> set[str]:
    return {digest(d.body) for d in deliveries}


class TransportContract(FailureCases):
    """Subclass it as ``class TestMyTransport(TransportContract)`` and give it a
    ``transport_url`` fixture that returns a fresh destination for every test.

    Class attributes declare what the kit may not expect of a transport:
    """

    #: Messages live in this process only (``memory://``): a second process can neither
    #: see them nor crash holding them, so the cross-process cases are skipped.
    in_process_only: ClassVar[bool] = False
    #: Messages sharing a partition key arrive in publish order. The transport declares it
    #: (``Transport.ordered``); set this False only to skip the order case for all its URLs.
    ordered: ClassVar[bool] = True
    #: Upper bound (s) for an unacked message of a crashed or closed consumer to come
    #: back: the claim idle time, visibility timeout, ... that ``transport_url`` sets.
    redelivery_timeout: ClassVar[float] = 60.0
    #: How long (s) the kit listens to conclude that nothing more arrives.
    quiet_period: ClassVar[float] = 2.0
    #: Upper bound (s) for a published message to arrive.
    receive_timeout: ClassVar[float] = 30.0

    # -- fixtures a subclass provides ---------------------------------------------------

    @pytest.fixture
    def transport_url(self) -> str:
        pytest.fail(
            f"{type(self).__name__} must define a `transport_url` fixture returning a fresh,"
            " unique destination for each test (and delete it and its .dlq afterwards)",
            pytrace=False,
        )

    @pytest.fixture
    def transport(self, make_transport: MakeTransport, transport_url: str) -> Transport:
        return make_transport(transport_url)

    def _needs_processes(self) -> None:
        if self.in_process_only:
            pytest.skip(
                f"{type(self).__name__}.in_process_only: messages live in one process,"
                " so no second process can hold or see them"
            )

    # -- declarations ------------------------------------------------------------------

    def test_scheme_is_served_by_an_installed_plugin(self, transport_url: str) -> None:
        from bridge.plugin.manager import plugin_set

        url = TransportURL.parse(transport_url)
        cls = plugin_set().transport_class(url)  # UnknownTransportError names what is installed
        assert url.scheme in cls.schemes

    def test_declares_its_limit_and_recoverable_errors(self, transport: Transport) -> None:
        cls = type(transport)
        assert cls.schemes and all(s == s.lower() for s in cls.schemes), f"schemes={cls.schemes!r}"
        transport.connect()
        limit = transport.max_message_bytes
        assert isinstance(limit, int) and limit > 0, f"max_message_bytes={limit!r}: declare the broker's limit"
        assert 0 < transport.fail_within <= 600, f"fail_within={transport.fail_within!r}: seconds, not forever"
        sibling = transport.sibling("dlq")
        assert sibling.raw != transport.url.raw and sibling.scheme == transport.url.scheme, (
            f"sibling('dlq') gave {sibling.redacted()}: it must name another destination on the same broker"
        )
        assert isinstance(cls.recoverable_errors, tuple)
        for error in cls.recoverable_errors:
            assert isinstance(error, type) and issubclass(error, BaseException), f"{error!r} is not an exception"

    # -- the data path -----------------------------------------------------------------

    @pytest.mark.parametrize("size", ["1 byte", "1 KiB", "max_message_bytes"])
    def test_round_trip(self, transport: Transport, size: str) -> None:
        transport.connect()  # the limit may be known only now
        length = {"1 byte": 1, "1 KiB": 1024, "max_message_bytes": transport.max_message_bytes}[size]
        [sent] = make_messages("round-trip", 1, size=length)
        # The longest id and a long partition key: the limit must leave room for what the
        # transport sends beside the body (headers, attributes, base64).
        sent = OutgoingMessage(sent.body, sent.message_id.ljust(MAX_MESSAGE_ID, "i"), "k" * LONG_PARTITION_KEY)
        try:
            transport.publish([sent])
        except Exception as exc:
            raise AssertionError(
                f"a {length}-byte body with a {MAX_MESSAGE_ID}-character id was refused ({type(exc).__name__}:"
                f" {exc}): declare a max_message_bytes that leaves room for ids, keys and headers"
            ) from exc

        got = receive_bodies(transport, [sent.body], self.receive_timeout)

        assert got, f"a {length}-byte message did not arrive within {self.receive_timeout} s"
        delivery = got[0]
        assert isinstance(delivery.body, bytes), f"body is {type(delivery.body).__name__}, not bytes"
        # Compared by digest: a failing 64 MiB comparison must not print 64 MiB.
        assert (len(delivery.body), digest(delivery.body)) == (length, digest(sent.body))
        assert delivery.message_id in (None, sent.message_id), "message_id must be kept (or None)"
        assert isinstance(delivery.redelivered, bool)

    def test_batch_arrives_whole_and_receive_respects_max_messages(self, transport: Transport) -> None:
        transport.connect()
        limit = transport.max_message_bytes
        sizes = [min(limit, s) for s in (1, 2, 100, 1000, 10_000, 100_000)]
        sent = [m for i, size in enumerate(sizes * 5) for m in make_messages(f"batch{i}", 1, size=size)]
        transport.publish(sent)

        first = transport.receive(2, timeout=self.receive_timeout)
        assert 0 < len(first) <= 2, f"receive(2, ...) returned {len(first)} deliveries"
        for delivery in first:
            transport.ack(delivery)
        rest = receive_bodies(
            transport, [m.body for m in sent if digest(m.body) not in digests(first)], self.receive_timeout
        )

        assert missing(sent, first + rest) == []

    def test_empty_publish_and_empty_receive(self, transport: Transport) -> None:
        transport.publish([])
        assert transport.receive(10, timeout=0) == []
        assert transport.receive(10, timeout=0.5) == []

    def test_per_partition_order(self, transport: Transport) -> None:
        if not (self.ordered and transport.ordered):
            pytest.skip(f"{type(transport).__name__}.ordered is False: the broker does not keep order")
        keys = ("alpha", "beta", "gamma")
        sent: list[OutgoingMessage] = []
        for round_ in range(4):  # order within one publish() and across several
            batch = [make_messages(f"order{round_}.{i}", 1, partition_key=keys[i % 3])[0] for i in range(15)]
            transport.publish(batch)
            sent += batch

        got = receive_bodies(transport, [m.body for m in sent], self.receive_timeout)

        assert missing(sent, got) == []
        arrival = list(dict.fromkeys(digest(d.body) for d in got))  # first arrivals, in order
        for key in keys:
            published = [digest(m.body) for m in sent if m.partition_key == key]
            assert [d for d in arrival if d in published] == published, f"partition {key!r} out of order"

    def test_oversize_is_refused_before_anything_is_sent(self, transport: Transport) -> None:
        transport.connect()
        limit = transport.max_message_bytes
        fitting = make_messages("before-oversize", 2)
        too_big = OutgoingMessage(b"\0" * (limit + 1), "too-big", "p0")

        with pytest.raises(MessageTooLargeError) as info:  # core checks, against this object's limit
            ReliableTransport(transport).publish([*fitting, too_big])
        assert "too-big" in str(info.value), f"the error should name the message: {info.value}"

        marker = make_messages("marker", 1)
        transport.publish(marker)
        got = receive_bodies(transport, [marker[0].body], self.receive_timeout)
        got += receive_for(transport, self.quiet_period)
        assert missing(marker, got) == []
        assert missing(fitting, got) == [m.message_id for m in fitting], "part of a refused batch was sent"

    # -- crashes, reconnects and redelivery --------------------------------------------

    def test_unacked_messages_come_back_after_a_consumer_is_killed(
        self, transport: Transport, transport_url: str
    ) -> None:
        self._needs_processes()
        sent = make_messages("crash", 6)
        transport.publish(sent)
        with Child("consume", transport_url, "3", str(self.receive_timeout)) as child:
            held = list(child.report()["held"])  # type: ignore[call-overload]
            child.kill()  # SIGKILL while holding three unacked deliveries
            assert len(held) == 3, f"the child received {len(held)} of 3 messages:\n{child.stderr()[-2000:]}"

        got = receive_bodies(transport, [m.body for m in sent], self.redelivery_timeout + self.receive_timeout)

        assert missing(sent, got) == []
        assert set(held) <= digests(got)

    def test_confirmed_publish_survives_the_publisher_being_killed(
        self, transport: Transport, transport_url: str
    ) -> None:
        self._needs_processes()
        with Child("publish", transport_url, "confirmed", "20") as child:
            confirmed = set(child.report()["confirmed"])  # type: ignore[call-overload]
            child.kill()  # right after publish() returned: no close(), no flush

        got = receive_until(transport, lambda g: confirmed <= digests(g), self.receive_timeout)

        assert len(confirmed) == 20
        assert confirmed - digests(got) == set(), "a confirmed message was lost"

    def test_confirmed_publish_survives_close_and_reopen(
        self, make_transport: MakeTransport, transport_url: str
    ) -> None:
        sent = make_messages("reopen", 20)
        publisher = make_transport(transport_url, "publish")
        publisher.publish(sent[:10])
        publisher.close()
        # Core's ReliableTransport calls close() after a recoverable error and then uses
        # the same object again: it must reconnect by itself.
        publisher.publish(sent[10:])
        publisher.close()
        publisher.close()  # closing twice is harmless

        consumer = make_transport(transport_url, "consume")
        got = receive_bodies(consumer, [m.body for m in sent], self.receive_timeout)

        assert missing(sent, got) == []

    def test_unacked_come_back_after_close_and_acked_never_do(
        self, make_transport: MakeTransport, transport_url: str
    ) -> None:
        sent = make_messages("close", 6)
        first = make_transport(transport_url)
        first.publish(sent)
        held = receive_until(first, lambda got: len(got) >= 6, self.receive_timeout, ack=False)
        assert missing(sent, held) == []
        acked, unacked = held[:3], held[3:]  # acked in receive order, as the applier does
        for delivery in acked:
            first.ack(delivery)
        first.close()

        second = make_transport(transport_url)
        again = receive_bodies(second, [d.body for d in unacked], self.redelivery_timeout + self.receive_timeout)
        again += receive_for(second, self.quiet_period)

        assert digests(unacked) <= digests(again), "an unacked delivery did not come back after close()"
        assert not digests(acked) & digests(again), "an acked delivery came back"
        # ...and the first object, used again after close(), sees nothing old either.
        assert receive_for(first, self.quiet_period) == []

    def test_release_gives_a_delivery_back(self, transport: Transport) -> None:
        if type(transport).release is Transport.release:
            pytest.skip("release() is not implemented: deliveries come back on close() (tested above)")
        sent = make_messages("release", 2)
        transport.publish(sent)
        held = receive_until(transport, lambda got: len(got) >= 2, self.receive_timeout, ack=False)
        assert len(held) == 2
        released, acked = held
        transport.release(released)
        transport.ack(acked)

        again = receive_bodies(transport, [released.body], self.redelivery_timeout + self.receive_timeout)
        again += receive_for(transport, self.quiet_period)

        assert digest(released.body) in digests(again), "a released delivery did not come back"
        assert digest(acked.body) not in digests(again), "an acked delivery came back"

    # -- around the data path ------------------------------------------------------------

    def test_dead_letter_destination_is_separate(self, transport: Transport, make_transport: MakeTransport) -> None:
        dlq_url = transport.dead_letter_url()
        assert dlq_url.raw != transport.url.raw
        dlq = make_transport(dlq_url.raw, "dlq")
        parked, marker = make_messages("parked", 1), make_messages("main", 1)
        dlq.publish(parked)
        transport.publish(marker)

        on_main = receive_bodies(transport, [marker[0].body], self.receive_timeout)
        on_main += receive_for(transport, self.quiet_period)
        on_dlq = receive_bodies(dlq, [parked[0].body], self.receive_timeout)

        assert missing(marker, on_main) == []
        assert missing(parked, on_dlq) == []
        assert digest(parked[0].body) not in digests(on_main), "the dead-letter queue is the main queue"
