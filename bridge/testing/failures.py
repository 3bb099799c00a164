"""The kit's failure cases: what a transport must do when the broker, the destination or the
credentials are not what they should be, and what it must not do with message ids.

Each case needs something only the plugin can give (a URL where nothing listens, a way to
delete a destination, wrong credentials). A plugin that cannot give it here says so, with
the reason, in ``untestable`` — the case is then skipped with that reason on record; with
neither, the case fails and says which fixture to write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

import pytest

from bridge.errors import ConfigError, RecoverableTransportError
from bridge.testing.support import digest, make_messages, missing, receive_bodies, receive_for
from bridge.transport import MAX_MESSAGE_ID, OutgoingMessage, Transport, content_id

MakeTransport = Callable[..., Transport]
T = TypeVar("T")
# Scheduling and interpreter noise on a busy machine, on top of the declared bound.
SLACK_S = 1.5


def recoverable(transport: Transport, exc: BaseException) -> bool:
    return isinstance(exc, (RecoverableTransportError, *type(transport).recoverable_errors))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__} ({exc})"


class FailureCases:
    """Mixed into :class:`~bridge.testing.TransportContract`; see the module docstring."""

    #: Cases this broker cannot be put through here, by name, with the reason:
    #: ``"unreachable"``, ``"deleted_destination"``, ``"wrong_credentials"``.
    untestable: ClassVar[dict[str, str]] = {}
    receive_timeout: ClassVar[float] = 30.0
    quiet_period: ClassVar[float] = 2.0

    @pytest.fixture
    def unreachable_transport_url(self) -> str | None:
        """Override: a URL where no broker answers (e.g. a free local port)."""
        return None

    @pytest.fixture
    def delete_destination(self) -> Callable[[str], None] | None:
        """Override: a function deleting the destination of a URL (queue, stream, ...) on the broker."""
        return None

    @pytest.fixture
    def wrong_credentials_url(self) -> str | None:
        """Override: a URL of a reachable broker with a wrong password (or untrusted certificate)."""
        return None

    def _given(self, case: str, fixture: str, value: T | None) -> T:
        if value is not None:
            return value
        if case in self.untestable:
            pytest.skip(f"{type(self).__name__}.untestable[{case!r}]: {self.untestable[case]}")
        pytest.fail(
            f"{type(self).__name__} needs a `{fixture}` fixture for this case, or"
            f" untestable = {{{case!r}: 'why this broker cannot be tested for it here'}}",
            pytrace=False,
        )

    def test_unreachable_broker_fails_fast_with_a_recoverable_error(
        self, make_transport: MakeTransport, unreachable_transport_url: str | None
    ) -> None:
        url = self._given("unreachable", "unreachable_transport_url", unreachable_transport_url)
        transport = make_transport(url, "publish")
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            transport.publish(make_messages("unreachable", 1))
        took = time.monotonic() - started
        assert recoverable(transport, info.value), (
            f"{describe(info.value)} is not declared in recoverable_errors: core would give up instead of reconnecting"
        )
        assert took <= transport.fail_within + SLACK_S, (
            f"publish() to an unreachable broker took {took:.1f} s, over fail_within={transport.fail_within} s:"
            " turn off the client library's own connect retries and bound its connect timeout (core retries)"
        )

    def test_wrong_credentials_are_not_recoverable(
        self, make_transport: MakeTransport, wrong_credentials_url: str | None
    ) -> None:
        url = self._given("wrong_credentials", "wrong_credentials_url", wrong_credentials_url)
        transport = make_transport(url, "publish")
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            transport.publish(make_messages("credentials", 1))
        took = time.monotonic() - started
        assert not recoverable(transport, info.value), (
            f"{describe(info.value)} after wrong credentials is recoverable: core would retry forever."
            " Raise TransportError (not recoverable) for authentication and certificate failures,"
            " even when the client library reports them as connection errors"
        )
        assert took <= transport.fail_within + SLACK_S, (
            f"refusing wrong credentials took {took:.1f} s, over fail_within={transport.fail_within} s:"
            " the client library retries them; stop it"
        )

    def test_destination_deleted_under_a_running_consumer(
        self, transport: Transport, transport_url: str, delete_destination: Callable[[str], None] | None
    ) -> None:
        delete = self._given("deleted_destination", "delete_destination", delete_destination)
        before = make_messages("before-delete", 1)
        transport.publish(before)
        assert missing(before, receive_bodies(transport, [before[0].body], self.receive_timeout)) == []
        delete(transport_url)

        error: BaseException | None = None
        deadline = time.monotonic() + transport.fail_within + SLACK_S
        while error is None and time.monotonic() < deadline:
            try:
                transport.receive(10, timeout=0.5)
            except Exception as exc:
                error = exc
        if isinstance(error, ConfigError):
            return  # allowed: "the destination is gone and I cannot recreate it", said clearly
        if error is not None:
            assert recoverable(transport, error), f"{describe(error)} after a deleted destination is not recoverable"
            transport.close()  # as core does after a recoverable error; then it uses the object again
        # Without an error, the transport must have noticed and recreated it by itself.
        after = make_messages("after-delete", 1)
        try:
            transport.publish(after)
        except ConfigError:
            return  # allowed: "the destination is gone and I may not create it", said clearly
        got = receive_bodies(transport, [after[0].body], self.receive_timeout)
        assert missing(after, got) == [], (
            "after the destination was deleted, receive() "
            + ("raised, but after close() the transport did not recreate it" if error else "kept answering nothing")
            + ": an empty receive must not hide a deleted destination. Raise a recoverable error within"
            " fail_within (e.g. check that the destination exists when a receive comes back empty), then"
            " recreate it on reconnecting, or raise ConfigError saying you cannot"
        )

    def test_changed_bodies_under_new_ids_are_never_swallowed(self, transport: Transport) -> None:
        # Core's ids: one per content (see bridge.transport, "Message ids"). A record put back
        # with a new state shares all but the last characters of its id with the old copy.
        base = "r" * (MAX_MESSAGE_ID - 17)
        first, second = (f"put back {n}: ".encode() + bytes(40) for n in (1, 2))
        sent = [OutgoingMessage(body, content_id(base, body), "p0") for body in (first, second)]
        assert len(sent[0].message_id) == MAX_MESSAGE_ID and sent[0].message_id != sent[1].message_id

        transport.publish(sent[:1])
        got = receive_bodies(transport, [first], self.receive_timeout)  # consumed and acked
        transport.publish(sent[1:])
        got += receive_bodies(transport, [second], self.receive_timeout)
        got += receive_for(transport, self.quiet_period)

        assert missing(sent, got) == [], (
            f"{missing(sent, got)} never arrived: the broker dropped it as a repeat. Deduplicate on the whole"
            f" message id (up to {MAX_MESSAGE_ID} characters; hash it if the broker takes fewer), nothing else"
        )
        assert digest(first) != digest(second)
