"""Turning an ``sqs://QUEUE?...`` URL into validated settings, once, at construction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.aws import AWS_PARAMS, AwsSide, param_flag, param_number
from bridge.errors import ConfigError
from bridge.transport import TransportURL
from bridge.transport.params import UrlParams

MAX_SQS_BYTES = 1024 * 1024  # SendMessage / SendMessageBatch, body + attributes (was 256 KiB until 2025)
MIN_SQS_BYTES = 1024
# The message id attribute (name, type, value of at most MAX_MESSAGE_ID = 200 characters) with room to spare.
ATTRIBUTE_RESERVE = 256
_QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_ACCOUNT = re.compile(r"^\d{12}$")
REDRIVE_PARAMS = frozenset({"redrive_queue", "max_receive_count"})
KNOWN_PARAMS = (
    AWS_PARAMS
    | REDRIVE_PARAMS
    | {
        "create",
        "account",
        "visibility_timeout",
        "wait_time",
        "max_message_bytes",
        "retention_seconds",
    }
)


def payload_limit(sqs_bytes: int) -> int:
    """Largest envelope that fits an SQS message of ``sqs_bytes``: bodies travel as base64 text."""
    return (sqs_bytes - ATTRIBUTE_RESERVE) // 4 * 3


@dataclass(frozen=True)
class SqsSettings:
    queue: str
    side: AwsSide
    #: Create the queue on first use if it is missing (``create=false``: fail with ConfigError).
    create: bool = True
    #: Owner of a queue in another account (its URL is looked up with QueueOwnerAWSAccountId).
    account: str | None = None
    #: Seconds a received message stays invisible; held deliveries are extended every third of it.
    visibility_timeout: int = 30
    #: Longest long poll (WaitTimeSeconds), never longer than a receive() call's own timeout.
    wait_time: int = 20
    #: The queue's message size limit as SQS counts it (base64 body + attributes).
    max_message_bytes: int = MAX_SQS_BYTES
    #: Retention of a queue we create (14 days, SQS' maximum: an outage that long loses nothing).
    retention_seconds: int = 14 * 24 * 3600
    #: Broker-side safety net for a queue we create: after max_receive_count receives, SQS moves a
    #: message to this queue (raw envelopes, not failure records: keep it apart from the .dlq).
    redrive_queue: str | None = None
    max_receive_count: int = 10

    @property
    def fifo(self) -> bool:
        return self.queue.endswith(".fifo")

    @classmethod
    def from_url(cls, url: TransportURL) -> SqsSettings:
        where = url.redacted()
        params = url.params
        queue = url.netloc or url.path.strip("/")
        _check_queue_name(queue, where, "queue")
        if url.path.strip("/") and url.netloc:
            raise ConfigError(f"{where}: put the queue name in the host part only (sqs://QUEUE?...)")
        UrlParams(url, KNOWN_PARAMS)  # the policy of every transport: unknown parameters are warned about
        account = params.get("account") or None
        if account is not None and not _ACCOUNT.match(account):
            raise ConfigError(f"{where}: account must be a 12-digit AWS account id, got {account!r}")
        redrive = params.get("redrive_queue") or None
        if redrive is not None:
            _check_queue_name(redrive, where, "redrive_queue")
            if redrive.endswith(".fifo") != queue.endswith(".fifo"):
                raise ConfigError(f"{where}: redrive_queue must be a FIFO queue (.fifo) exactly when the queue is one")
        side = AwsSide.from_params(params, what=where)
        wait_time = param_number(params, "wait_time", 20, where, minimum=0, maximum=20)
        if wait_time and wait_time + 1 >= side.read_timeout:
            raise ConfigError(
                f"{where}: a long poll of wait_time={wait_time} s needs read_timeout above"
                f" {wait_time + 1} s (it is {side.read_timeout:g})"
            )
        return cls(
            queue=queue,
            side=side,
            create=param_flag(params, "create", True, where),
            account=account,
            visibility_timeout=param_number(params, "visibility_timeout", 30, where, minimum=2, maximum=43_200),
            wait_time=wait_time,
            max_message_bytes=param_number(
                params, "max_message_bytes", MAX_SQS_BYTES, where, minimum=MIN_SQS_BYTES, maximum=MAX_SQS_BYTES
            ),
            retention_seconds=param_number(
                params, "retention_seconds", 14 * 24 * 3600, where, minimum=60, maximum=14 * 24 * 3600
            ),
            redrive_queue=redrive,
            max_receive_count=param_number(params, "max_receive_count", 10, where, minimum=1, maximum=1000),
        )


def _check_queue_name(name: str, where: str, what: str) -> None:
    base = name.removesuffix(".fifo")
    if not _QUEUE.match(base) or len(name) > 80:
        raise ConfigError(
            f"{where}: {what} {name!r} must be 1-80 characters of A-Z a-z 0-9 _ - (a FIFO queue ends in .fifo)"
        )
