"""The kit's failure cases fail on transports that are broken on purpose, with a message that
says what to fix. Without this, a case that cannot fail would look like a passing transport.

Each broken transport is the in-process memory transport with one real-world bug added (named in
its docstring, after bugs found in plugins); nothing is mocked. The cases are called directly,
with the fixtures they need, exactly as pytest would call them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

import pytest

import bridge_memory
from bridge.errors import TransportError
from bridge.testing import TransportContract
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge_memory import MemoryTransport


class Kit(TransportContract):
    receive_timeout = 2.0
    quiet_period = 0.3


def opener(cls: type[Transport]) -> Callable[..., Transport]:
    return lambda url, role="consume": cls(TransportURL.parse(url))


def fresh_url() -> str:
    return f"memory://broken-{uuid.uuid4().hex[:10]}"


class SlowConnect(MemoryTransport):
    """A client library that retries its own connect for many seconds before giving up
    (the declared bound is shortened so the test stays fast)."""

    fail_within = 0.2
    recoverable_errors = (ConnectionRefusedError,)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        time.sleep(self.fail_within + 2.5)
        raise ConnectionRefusedError("connection refused (after retrying)")


class RetriesWrongCredentials(MemoryTransport):
    """Reports a refused password as a connection error, which it declares recoverable."""

    recoverable_errors = (ConnectionError,)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise ConnectionResetError("server closed the connection: authentication failed")


class SilentAfterDelete(MemoryTransport):
    """Keeps reading the destination it first opened: once that is deleted, receive() answers
    nothing forever while publishes go to a new one (a pull consumer whose stream vanished)."""

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        self.reading = bridge_memory._queue(self.name)

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with bridge_memory._lock:
            if bridge_memory._queues.get(self.name) is self.reading:
                return super().receive(max_messages, timeout)
        time.sleep(timeout)
        return []


def delete(url: str) -> None:
    with bridge_memory._lock:
        bridge_memory._queues.pop(TransportURL.parse(url).netloc, None)


class SwallowsLongIds(MemoryTransport):
    """Deduplicates on the first 64 characters of the message id, for good (a broker field
    shorter than the ids, truncated instead of hashed)."""

    seen: set[str] = set()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        fresh = [m for m in messages if m.message_id[:64] not in self.seen]
        self.seen.update(m.message_id[:64] for m in messages)
        super().publish(fresh)


class NoRoomForHeaders(MemoryTransport):
    """Declares the broker's whole limit as the body limit, forgetting the id it sends along."""

    max_message_bytes = 4096

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if any(len(m.body) + len(m.message_id) > self.max_message_bytes for m in messages):
            raise TransportError("broker refused a message over 4096 bytes")
        super().publish(messages)


def test_slow_connect_fails_the_unreachable_case() -> None:
    with pytest.raises(AssertionError, match=r"took \d+\.\d s, over fail_within=0\.2 s: turn off the client"):
        Kit().test_unreachable_broker_fails_fast_with_a_recoverable_error(opener(SlowConnect), fresh_url())


def test_retried_wrong_credentials_fail_the_credentials_case() -> None:
    with pytest.raises(AssertionError, match="is recoverable: core would retry forever"):
        Kit().test_wrong_credentials_are_not_recoverable(opener(RetriesWrongCredentials), fresh_url())


def test_silent_empty_receive_after_delete_fails_the_deleted_destination_case() -> None:
    url = fresh_url()
    with pytest.raises(AssertionError, match="kept answering nothing: an empty receive must not hide"):
        Kit().test_destination_deleted_under_a_running_consumer(SilentAfterDelete(TransportURL.parse(url)), url, delete)


def test_the_memory_transport_itself_passes_the_deleted_destination_case() -> None:
    """The same case on the unbroken transport: it fails above because of the bug, not by itself."""
    url = fresh_url()
    Kit().test_destination_deleted_under_a_running_consumer(MemoryTransport(TransportURL.parse(url)), url, delete)


def test_swallowed_duplicate_ids_fail_the_message_id_case() -> None:
    with pytest.raises(AssertionError, match=r"dropped it as a repeat\. Deduplicate on the whole message id"):
        Kit().test_changed_bodies_under_new_ids_are_never_swallowed(SwallowsLongIds(TransportURL.parse(fresh_url())))


def test_a_limit_without_room_for_headers_fails_the_round_trip_case() -> None:
    transport = NoRoomForHeaders(TransportURL.parse(fresh_url()))
    with pytest.raises(AssertionError, match="leaves room for ids, keys and headers"):
        Kit().test_round_trip(transport, "max_message_bytes")


def test_a_missing_fixture_fails_and_says_what_to_write_or_declare() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"needs a `wrong_credentials_url` fixture .* untestable = "):
        Kit().test_wrong_credentials_are_not_recoverable(opener(MemoryTransport), None)

    class Declared(Kit):
        untestable = {"wrong_credentials": "no credentials in process"}

    with pytest.raises(pytest.skip.Exception, match="no credentials in process"):
        Declared().test_wrong_credentials_are_not_recoverable(opener(MemoryTransport), None)
