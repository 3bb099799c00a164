"""The SQS transport against moto's SQS server: standard and FIFO queues, no mocks.

Only the per-entry failures of SendMessageBatch cannot be produced on moto; that path runs through
a wrapper around the real moto client that fails chosen entries, and says so. Round trips up to the
limit, oversize refusal, release, close/reopen and a SIGKILLed consumer are the conformance kit's
(tests/integration/end_to_end/test_conformance.py runs it on a standard and a FIFO queue); this file covers the rest.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bridge.errors import ConfigError, MessageTooLargeError, RecoverableTransportError, TransportError
from bridge.plugin.manager import open_transport
from bridge.transport import Delivery, OutgoingMessage, Transport
from bridge.transport.reliable import Backoff, ReliableTransport
from bridge_sqs import SqsTransport
from bridge_sqs.settings import payload_limit

pytestmark = pytest.mark.aws

VT = 2  # visibility timeout of the test queues, seconds


@pytest.fixture
def sqs(moto_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-west-2")


@pytest.fixture(params=["standard", "fifo"])
def url(request: pytest.FixtureRequest, moto_endpoint: str, unique: str) -> str:
    name = f"{unique}.fifo" if request.param == "fifo" else unique
    return f"sqs://{name}?region=us-west-2&endpoint_url={moto_endpoint}&visibility_timeout={VT}"


@pytest.fixture
def transport(url: str) -> Iterator[SqsTransport]:
    t = open_transport(url, "consume")
    assert isinstance(t, SqsTransport)
    yield t
    t.close()


def messages(prefix: str, count: int, size: int = 32, key: str = "pk") -> list[OutgoingMessage]:
    return [OutgoingMessage(f"{prefix}-{i}:".encode().ljust(size, b"."), f"{prefix}-{i}", key) for i in range(count)]


def receive(t: Transport, count: int, *, ack: bool = True, timeout: float = 20) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        new = t.receive(count - len(got), timeout=1)
        got += new
        if ack:
            for d in new:
                t.ack(d)
    return got


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


def record_calls(t: SqsTransport, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call the transport's real client makes from now on."""
    seen: list[dict[str, Any]] = []
    t._sqs().meta.events.register(
        f"provide-client-params.sqs.{operation}", lambda params, **_: seen.append(dict(params))
    )
    return seen


# -- the data path ---------------------------------------------------------------------------


def test_bodies_travel_as_base64_text_with_the_id_attribute(moto_endpoint: str, unique: str, sqs: Any) -> None:
    t = open_transport(f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}", "publish")
    t.publish([OutgoingMessage(b"\x00\xff binary", "envelope-1", "pk")])
    t.close()
    queue = sqs.get_queue_url(QueueName=unique)["QueueUrl"]
    [raw] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
    assert base64.b64decode(raw["Body"]) == b"\x00\xff binary"
    assert raw["MessageAttributes"]["bridge-message-id"]["StringValue"] == "envelope-1"
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["MaximumMessageSize"], attributes["MessageRetentionPeriod"]) == ("1048576", "1209600")


def test_batches_hold_at_most_10_entries_and_the_byte_limit(transport: SqsTransport) -> None:
    calls = record_calls(transport, "SendMessageBatch")
    small = messages("s", 25)
    big = [OutgoingMessage(bytes([i]) * 300_000, f"b-{i}", "pk") for i in range(5)]  # 400 KB as base64
    transport.publish(small + big)
    assert [len(c["Entries"]) for c in calls] == [10, 10, 7, 2, 1]  # 5 small + 2 big, then 2 big, 1 big
    assert all(sum(len(e["MessageBody"]) for e in c["Entries"]) <= 1024 * 1024 for c in calls)
    got = receive(transport, 30, timeout=30)
    assert sorted(bodies(got)) == sorted(m.body for m in small + big)


def test_a_smaller_queue_limit_from_the_url(moto_endpoint: str, unique: str, sqs: Any) -> None:
    base = f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}"
    small = open_transport(f"{base}&max_message_bytes=262144", "publish")
    assert small.max_message_bytes == payload_limit(262144) < SqsTransport.max_message_bytes
    small.publish([OutgoingMessage(b"x" * small.max_message_bytes, "fits", "pk")])
    with pytest.raises(MessageTooLargeError):  # core's check, against this object's limit
        ReliableTransport(small).publish([OutgoingMessage(b"x" * (small.max_message_bytes + 1), "does-not", "pk")])
    small.close()
    # The queue was created with that limit; a transport assuming more is told so, naming both.
    default = open_transport(base, "publish")
    with pytest.raises(ConfigError, match=r"at most 262144 bytes .* add max_message_bytes=262144"):
        default.publish(messages("x", 1))


def test_receive_long_polls_only_as_long_as_the_caller_waits(moto_endpoint: str, unique: str) -> None:
    t = open_transport(
        f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&visibility_timeout={VT}&wait_time=1", "consume"
    )
    assert isinstance(t, SqsTransport)
    calls = record_calls(t, "ReceiveMessage")
    waits = {}
    try:
        for timeout in (0, 0.5, 2.5):
            del calls[:]
            t.receive(10, timeout=timeout)
            waits[timeout] = [c["WaitTimeSeconds"] for c in calls]
    finally:
        t.close()
    assert waits[0] == waits[0.5] == [0]  # under a second: one short poll, then wait out the rest
    assert waits[2.5][0] == 1  # whole seconds, capped by wait_time
    assert all(w <= 1 for w in waits[2.5])
    assert all(c["VisibilityTimeout"] == VT and c["MaxNumberOfMessages"] == 10 for c in calls)


def test_fifo_keeps_each_groups_order_and_drops_a_resent_envelope(moto_endpoint: str, unique: str) -> None:
    t = open_transport(f"sqs://{unique}.fifo?region=us-west-2&endpoint_url={moto_endpoint}", "consume")
    try:
        keys = ("cn-north-1/users", "us-west-2/users", "x" * 200)  # the long one becomes a digest
        sent = [m for r in range(4) for k in keys for m in messages(f"{k[:4]}{r}", 5, key=k)]
        t.publish(sent[:30])
        t.publish(sent[30:])
        t.publish(sent[:5])  # re-sent after a publisher crash: same ids, deduplicated by SQS
        got = receive(t, len(sent), timeout=30)
        got += t.receive(10, timeout=1)
    finally:
        t.close()
    assert sorted(bodies(got)) == sorted(m.body for m in sent)  # each exactly once
    for key in keys:
        mine = [m.body for m in sent if m.partition_key == key]
        assert [b for b in bodies(got) if b in set(mine)] == mine


def test_refused_entries_raise_and_failed_ones_are_resent_alone_by_core(
    transport: SqsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = transport._sqs()

    class FailingEntries:
        """moto never fails one entry of a batch: this wrapper fails chosen ones the way SQS reports it."""

        def __init__(self, plans: list[dict[int, tuple[str, bool]]]) -> None:
            self.plans = plans
            self.sizes: list[int] = []

        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            plan = self.plans.pop(0) if self.plans else {}
            self.sizes.append(len(Entries))
            ok = [e for i, e in enumerate(Entries) if i not in plan]
            response = real.send_message_batch(QueueUrl=QueueUrl, Entries=ok) if ok else {"Successful": []}
            response["Failed"] = [
                {"Id": Entries[i]["Id"], "Code": code, "SenderFault": sender, "Message": "x"}
                for i, (code, sender) in plan.items()
            ]
            return response

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    # Two failures on SQS' side, then none: the first publish raises (no retry loop inside the
    # transport), core's retry sends only the two that failed.
    flaky = FailingEntries([{1: ("InternalError", False), 4: ("ServiceUnavailable", False)}])
    monkeypatch.setattr(transport, "_sqs", lambda: flaky)  # survives core's close() between attempts
    sent = messages("f", 6)
    with pytest.raises(RecoverableTransportError, match="2 of 6"):
        transport.publish(sent)
    ReliableTransport(transport, Backoff(0.01, 0.01), sleep=lambda _: None).publish(sent)
    assert flaky.sizes == [6, 2]
    assert sorted(bodies(receive(transport, 6))) == sorted(m.body for m in sent)

    monkeypatch.setattr(transport, "_sqs", lambda: FailingEntries([{0: ("InvalidParameterValue", True)}]))
    with pytest.raises(TransportError, match=r"refused 1 of 2 messages.*InvalidParameterValue") as info:
        transport.publish(messages("g", 2))
    assert not isinstance(info.value, RecoverableTransportError)


# -- holding, acking, releasing --------------------------------------------------------------


def test_a_held_delivery_stays_invisible_past_the_visibility_timeout(moto_endpoint: str, unique: str) -> None:
    url = f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&visibility_timeout={VT}"
    holder, other = open_transport(url, "consume"), open_transport(url, "consume")
    assert isinstance(holder, SqsTransport)
    try:
        holder.publish(messages("h", 1))
        [held] = receive(holder, 1, ack=False)
        seen = []
        deadline = time.monotonic() + 2.5 * VT
        while time.monotonic() < deadline:  # well past the 2 s timeout, while `holder` works on it
            seen += other.receive(10, timeout=1)
        assert seen == []
        assert holder._keeper is not None and holder._keeper.extensions >= 2
        holder.ack(held)
        holder.receive(1, timeout=0)  # flushes the delete
        # Were it not deleted it would be visible again within VT: watch the whole window.
        deadline = time.monotonic() + VT + 1.5
        while time.monotonic() < deadline:
            assert other.receive(10, timeout=0.5) == []
    finally:
        holder.close()
        other.close()


def test_close_deletes_the_acked_and_releases_the_rest(url: str) -> None:
    sent = messages("c", 4)
    first = open_transport(url, "consume")
    first.publish(sent)
    held = receive(first, 4, ack=False)
    first.ack(held[0])
    first.ack(held[1])
    first.close()
    second = open_transport(url, "consume")
    try:
        again = receive(second, 2, timeout=5)  # at once, not after the visibility timeout
        again += second.receive(10, timeout=1)
        assert sorted(bodies(again)) == sorted(bodies(held[2:]))
        assert all(d.redelivered for d in again)
    finally:
        second.close()


# -- queues: creation, redrive, names ----------------------------------------------------------


def test_redrive_policy_is_the_broker_side_safety_net(moto_endpoint: str, unique: str, sqs: Any) -> None:
    url = (
        f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&redrive_queue={unique}-redrive"
        "&max_receive_count=2"
    )
    t = open_transport(url, "consume")
    try:
        t.publish(messages("poison", 1))
        for _ in range(2):  # e.g. an applier that crashes on it, twice
            [d] = receive(t, 1, ack=False)
            t.release(d)
        assert t.receive(10, timeout=1) == []
    finally:
        t.close()
    queue = sqs.get_queue_url(QueueName=unique)["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert f"{unique}-redrive" in policy["RedrivePolicy"]
    redrive = sqs.get_queue_url(QueueName=f"{unique}-redrive")["QueueUrl"]
    [moved] = sqs.receive_message(QueueUrl=redrive)["Messages"]
    assert base64.b64decode(moved["Body"]).startswith(b"poison-0:")


def test_dead_letter_queue_names() -> None:
    for name, dlq in (("users", "users-dlq"), ("users.fifo", "users-dlq.fifo")):
        t = open_transport(
            f"sqs://{name}?region=us-west-2&redrive_queue=x{'.fifo' if 'fifo' in name else ''}", "publish"
        )
        url = t.dead_letter_url()
        assert (url.netloc, url.params) == (dlq, {"region": "us-west-2"})


def test_create_false_and_bad_urls(moto_endpoint: str, unique: str) -> None:
    t = open_transport(f"sqs://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&create=false", "publish")
    with pytest.raises(ConfigError, match=f"SQS queue '{unique}' does not exist"):
        t.publish(messages("x", 1))
    with pytest.raises(ConfigError, match="must be 1-80 characters"):
        open_transport("sqs://has.dots?region=us-west-2", "publish")
    with pytest.raises(ConfigError, match="redrive_queue must be a FIFO queue"):
        open_transport("sqs://q.fifo?region=us-west-2&redrive_queue=plain", "publish")
    with pytest.raises(ConfigError, match="visibility_timeout must be within"):
        open_transport("sqs://q?region=us-west-2&visibility_timeout=0", "publish")
    with pytest.raises(ConfigError, match="needs read_timeout above 21 s"):
        open_transport("sqs://q?region=us-west-2&read_timeout=10", "publish")
