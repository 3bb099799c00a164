"""The Amazon SQS transport: standard and FIFO queues, batched sends, held messages kept invisible."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlunsplit

from botocore.exceptions import ClientError

from bridge.aws import CONNECTION_ERRORS, RETRYABLE_CODES, AwsTransportURL, aws_boundary, error_code
from bridge.errors import ConfigError, RecoverableTransportError, TransportError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge_sqs.settings import MAX_SQS_BYTES, REDRIVE_PARAMS, SqsSettings, payload_limit
from bridge_sqs.visibility import VisibilityKeeper

log = logging.getLogger(__name__)

BATCH_ENTRIES = 10  # SendMessageBatch / DeleteMessageBatch / ReceiveMessage
ID_ATTRIBUTE = "bridge-message-id"
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_QUEUE_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})
# MessageGroupId / MessageDeduplicationId: up to 128 of these characters.
_FIFO_TOKEN = re.compile(r"^[A-Za-z0-9!-/:-@\[-`{-~]{1,128}$")


@dataclass(frozen=True, slots=True)
class SqsHandle:
    """``Delivery.handle``: the receipt handle, and which open session received it."""

    generation: int
    receipt_handle: str


def _entry_id(entry: dict[str, Any]) -> str:
    return str(entry["MessageAttributes"][ID_ATTRIBUTE]["StringValue"])


def fifo_token(value: str) -> str:
    """``value`` if SQS takes it as a group or deduplication id, else a stable digest of it."""
    return value if _FIFO_TOKEN.match(value) else hashlib.sha256(value.encode()).hexdigest()


class SqsTransport(Transport):
    """``sqs://QUEUE?region=REGION[&...]`` (parameters: see :mod:`bridge_sqs`).

    Bodies travel as base64 text (SQS bodies must be XML-safe text) with the message id in the
    ``bridge-message-id`` attribute. FIFO queues (names ending in ``.fifo``) get MessageGroupId =
    partition key (per-key order) and MessageDeduplicationId = message id (a re-sent envelope
    within SQS' 5-minute window is dropped by SQS). Standard queues do not keep order; the applier
    orders changes by version, so the final state is the same.

    ``ack`` deletes (batched: at 10 acks, at the next ``receive()`` and at ``close()``); ``release``
    makes the message visible at once; ``close()`` deletes what was acked and releases the rest.
    """

    schemes = ("sqs",)
    max_message_bytes = payload_limit(MAX_SQS_BYTES)
    recoverable_errors = CONNECTION_ERRORS

    def __init__(self, url: TransportURL) -> None:
        super().__init__(AwsTransportURL.wrap(url))
        self.settings = SqsSettings.from_url(self.url)
        self.where = self.url.redacted()
        # botocore makes max_attempts attempts, each bounded by connect_timeout and followed by
        # at most 20 s of its backoff; core adds no retry inside that.
        side = self.settings.side
        self.fail_within = side.max_attempts * (side.connect_timeout + 20.0)
        #: Whether messages sharing a partition key arrive in publish order (FIFO queues only).
        self.ordered = self.settings.fifo
        if self.settings.max_message_bytes != MAX_SQS_BYTES:
            # A per-queue limit from the URL; the class attribute stays the default's.
            setattr(self, "max_message_bytes", payload_limit(self.settings.max_message_bytes))  # noqa: B010
        self._lock = threading.Lock()
        self._client: Any = None
        self._announced = False
        self._queue_url: str | None = None
        self._keeper: VisibilityKeeper | None = None
        self._generation = 0
        self._acked: list[str] = []  # receipt handles to delete
        self._confirmed: set[str] = set()  # message ids SQS took in a publish that then failed

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with aws_boundary("publish", self.where), self._queue_gone("publish"):
            queue_url = self._queue()
            entries = [self._entry(m) for m in messages]
            # Core retries a batch whose entries SQS partly failed; send only what it did not take.
            for batch in self._batches([e for e in entries if _entry_id(e) not in self._confirmed]):
                self._send(queue_url, batch)
            self._confirmed.clear()

    def _entry(self, message: OutgoingMessage) -> dict[str, Any]:
        # The whole id (core's are at most MAX_MESSAGE_ID characters, which ATTRIBUTE_RESERVE allows).
        message_id = message.message_id
        entry: dict[str, Any] = {
            "MessageBody": base64.b64encode(message.body).decode("ascii"),
            "MessageAttributes": {ID_ATTRIBUTE: {"DataType": "String", "StringValue": message_id}},
        }
        if self.settings.fifo:
            entry["MessageGroupId"] = fifo_token(message.partition_key or "-")
            entry["MessageDeduplicationId"] = fifo_token(message.message_id)
        return entry

    def _batches(self, entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Runs of at most 10 entries whose sizes (as SQS counts them) sum to at most the limit."""
        limit = self.settings.max_message_bytes
        batch: list[dict[str, Any]] = []
        size = 0
        for entry in entries:
            attribute = entry["MessageAttributes"][ID_ATTRIBUTE]["StringValue"]
            entry_size = len(entry["MessageBody"]) + len(ID_ATTRIBUTE) + len("String") + len(attribute.encode())
            if batch and (len(batch) == BATCH_ENTRIES or size + entry_size > limit):
                yield batch
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            yield batch

    def _send(self, queue_url: str, batch: list[dict[str, Any]]) -> None:
        """SendMessageBatch. Entries SQS failed on its side make the call recoverable: core's
        retry loop calls publish again, which sends only those (no second retry loop here)."""
        entries = [{"Id": str(i), **entry} for i, entry in enumerate(batch)]
        failed = self._sqs().send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed") or []
        if not failed:
            return
        refused = [f for f in failed if f.get("SenderFault") and f.get("Code") not in RETRYABLE_CODES]
        first = (refused or failed)[0]
        summary = f"{len(refused or failed)} of {len(entries)} messages on {self.where}: {first.get('Code')}"
        if refused:
            raise TransportError(f"SQS refused {summary}: {first.get('Message')}")
        failed_ids = {str(f["Id"]) for f in failed}
        self._confirmed.update(_entry_id(e) for e in entries if e["Id"] not in failed_ids)
        raise RecoverableTransportError(f"SendMessageBatch failed for {summary}; core sends them again")

    # -- consuming -------------------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with aws_boundary("receive", self.where), self._queue_gone("receive"):
            queue_url = self._queue()
            self._delete_acked()
            deadline = time.monotonic() + timeout
            out: list[Delivery] = []
            first = True
            while len(out) < max_messages:
                remaining = deadline - time.monotonic()
                # Long-poll only as long as the caller may wait (whole seconds), and only for the first.
                wait = 0 if out else max(0, min(self.settings.wait_time, int(timeout if first else remaining)))
                first = False
                want = min(BATCH_ENTRIES, max_messages - len(out))
                response = self._sqs().receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=want,
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=self.settings.visibility_timeout,
                    MessageAttributeNames=[ID_ATTRIBUTE],
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
                got = [self._delivery(m) for m in response.get("Messages") or []]
                if got:
                    self._keeper_for(queue_url).hold([d.handle.receipt_handle for d in got])
                out.extend(got)
                if len(got) < want and out:
                    break
                if not out:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if wait == 0:  # under a second left: wait it out rather than poll in a loop
                        time.sleep(remaining)
                        break
            return out

    def _delivery(self, message: dict[str, Any]) -> Delivery:
        text = str(message.get("Body", ""))
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            body = text.encode()  # not ours: the applier quarantines it, as it was
        attribute = (message.get("MessageAttributes") or {}).get(ID_ATTRIBUTE) or {}
        receives = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        return Delivery(
            body,
            attribute.get("StringValue") or message.get("MessageId"),
            receives > 1,
            SqsHandle(self._generation, str(message["ReceiptHandle"])),
        )

    def ack(self, delivery: Delivery) -> None:
        handle = self._handle(delivery, "ack")
        if handle.generation != self._generation:
            # Released by close() already; deleting may still work if nobody received it since.
            with aws_boundary("ack", self.where):
                self._delete([handle.receipt_handle])
            return
        with self._lock:
            self._acked.append(handle.receipt_handle)
            full = len(self._acked) >= BATCH_ENTRIES
        if full:
            with aws_boundary("ack", self.where):
                self._delete_acked()

    def release(self, delivery: Delivery) -> None:
        handle = self._handle(delivery, "release")
        if self._keeper is not None:
            self._keeper.drop([handle.receipt_handle])
        with aws_boundary("release", self.where):
            self._change_visibility([handle.receipt_handle], 0)

    def _handle(self, delivery: Delivery, action: str) -> SqsHandle:
        if not isinstance(delivery.handle, SqsHandle):
            raise TransportError(f"{action}: the delivery did not come from {self.where}")
        return delivery.handle

    def _delete_acked(self) -> None:
        with self._lock:
            handles, self._acked = self._acked, []
        try:
            self._delete(handles)
        except BaseException:
            with self._lock:  # try again at the next flush
                self._acked[:0] = handles
            raise

    def _delete(self, handles: list[str]) -> None:
        if not handles:
            return
        queue_url = self._queue()
        for start in range(0, len(handles), BATCH_ENTRIES):
            chunk = handles[start : start + BATCH_ENTRIES]
            response = self._sqs().delete_message_batch(
                QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            )
            for failure in response.get("Failed") or []:
                # Typically an expired receipt handle: the message was (or will be) received again.
                log.warning(
                    "%s: a message could not be deleted (%s: %s); it will be redelivered",
                    self.where,
                    failure.get("Code"),
                    failure.get("Message"),
                )
            if self._keeper is not None:
                self._keeper.drop(chunk)

    def _change_visibility(self, handles: list[str], timeout: int) -> None:
        if not handles:
            return
        queue_url = self._queue()
        for start in range(0, len(handles), BATCH_ENTRIES):
            chunk = handles[start : start + BATCH_ENTRIES]
            self._sqs().change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout} for i, h in enumerate(chunk)],
            )

    def _keeper_for(self, queue_url: str) -> VisibilityKeeper:
        if self._keeper is None:
            self._keeper = VisibilityKeeper(self._sqs(), queue_url, self.settings.visibility_timeout, self.where)
        return self._keeper

    def depth(self) -> int | None:
        """SQS's ``ApproximateNumberOfMessages``: visible messages, an estimate (eventually consistent)."""
        with aws_boundary("depth", self.where):
            attributes = self._sqs().get_queue_attributes(
                QueueUrl=self._queue(), AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    # -- the queue -------------------------------------------------------------------------------

    def _sqs(self) -> Any:
        if self._client is None:
            side = self.settings.side
            if not self._announced:  # once, not at every reconnect
                log.info("%s: AWS credentials from %s", self.where, side.credential_source)
                self._announced = True
            self._client = side.client("sqs")
        return self._client

    @contextlib.contextmanager
    def _queue_gone(self, action: str) -> Iterator[None]:
        """The queue was deleted under us: recoverable, and looked up (or created, with
        create=true) again after core's reconnect."""
        try:
            yield
        except ClientError as exc:
            if error_code(exc) not in _NO_QUEUE:
                raise
            self._queue_url = None
            raise RecoverableTransportError(f"{action} on {self.where}: the queue was deleted ({exc})") from exc

    def _queue(self) -> str:
        if self._queue_url is None:
            self._queue_url = self._find_or_create()
        return self._queue_url

    def _find_or_create(self) -> str:
        settings = self.settings
        url = self._lookup(settings.queue)
        if url is None:
            if not settings.create:
                raise ConfigError(
                    f"SQS queue {settings.queue!r} does not exist ({self.where}); create it, or leave"
                    " create=true to have it created"
                )
            return self._create()
        limit = self._sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])
        queue_limit = int(limit.get("Attributes", {}).get("MaximumMessageSize", MAX_SQS_BYTES))
        if queue_limit < settings.max_message_bytes:
            raise ConfigError(
                f"SQS queue {settings.queue!r} takes messages of at most {queue_limit} bytes (MaximumMessageSize)"
                f" but {self.where} assumes {settings.max_message_bytes}: add max_message_bytes={queue_limit}"
                " to the URL, or raise the queue's limit"
            )
        return url

    def _lookup(self, name: str) -> str | None:
        kwargs: dict[str, Any] = {"QueueName": name}
        if self.settings.account:
            kwargs["QueueOwnerAWSAccountId"] = self.settings.account
        try:
            return str(self._sqs().get_queue_url(**kwargs)["QueueUrl"])
        except ClientError as exc:
            if error_code(exc) in _NO_QUEUE:
                return None
            raise

    def _create(self) -> str:
        settings = self.settings
        attributes = {
            "MaximumMessageSize": str(settings.max_message_bytes),
            "MessageRetentionPeriod": str(settings.retention_seconds),
            "VisibilityTimeout": str(settings.visibility_timeout),
        }
        if settings.fifo:
            attributes["FifoQueue"] = "true"
        if settings.redrive_queue:
            target = self._create_queue(
                settings.redrive_queue,
                {
                    "MessageRetentionPeriod": str(settings.retention_seconds),
                    **({"FifoQueue": "true"} if settings.fifo else {}),
                },
            )
            found = self._sqs().get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])
            arn = found["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": str(settings.max_receive_count)}
            )
        url = self._create_queue(settings.queue, attributes)
        log.info(
            "created SQS queue %s in %s%s",
            settings.queue,
            settings.side.region,
            f" (redrive to {settings.redrive_queue} after {settings.max_receive_count} receives)"
            if settings.redrive_queue
            else "",
        )
        return url

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        try:
            return str(self._sqs().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        except ClientError as exc:
            if error_code(exc) not in _QUEUE_EXISTS:
                raise
        # Created meanwhile by the other side with other attributes: use it as it is.
        url = self._lookup(name)
        if url is None:
            raise TransportError(f"SQS queue {name!r} exists and does not: retry")
        return url

    # -- lifecycle -------------------------------------------------------------------------------

    def sibling(self, suffix: str) -> TransportURL:
        """``QUEUE-SUFFIX`` (``NAME-SUFFIX.fifo`` for a FIFO queue), same account, region and credentials."""
        queue = self.settings.queue
        name = f"{queue.removesuffix('.fifo')}-{suffix}" + (".fifo" if self.settings.fifo else "")
        params = {k: v for k, v in self.url.params.items() if k not in REDRIVE_PARAMS}
        return TransportURL.parse(urlunsplit(("sqs", name, "", urlencode(params), "")))

    def close(self) -> None:
        """Delete what was acked, make every other held message visible again, drop the client."""
        keeper, self._keeper = self._keeper, None
        held = keeper.stop() if keeper is not None else []
        try:
            if self._client is not None and self._queue_url is not None:
                with self._lock:
                    acked = set(self._acked)
                self._delete_acked()
                self._change_visibility([h for h in held if h not in acked], 0)
        except Exception as exc:  # SQS hands them out again once their visibility timeout runs out
            log.warning(
                "%s: could not settle held messages on close (%s); they return within %d s",
                self.where,
                exc,
                self.settings.visibility_timeout,
            )
        finally:
            with self._lock:
                self._acked = []
            self._generation += 1
            self._client = None
            self._queue_url = None

    def __repr__(self) -> str:
        return f"SqsTransport({self.where!r})"
