"""The Kinesis Data Streams transport: PutRecords with per-record retry; a checkpointing shard reader."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from bridge.aws import CONNECTION_ERRORS, AwsTransportURL, aws_boundary, error_code, is_throttling
from bridge.errors import ConfigError, RecoverableTransportError, SourceError, TransportError
from bridge.state.checkpoints import CheckpointStore, open_checkpoint_store
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge_kinesis.producer import MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, Producer
from bridge_kinesis.settings import KinesisSettings
from bridge_kinesis.shards import ShardConsumer, ShardHandle

log = logging.getLogger(__name__)


class KinesisTransport(Transport):
    """``kinesis://STREAM?region=REGION[&...]`` (parameters: see :mod:`bridge_kinesis`).

    Records carry the message body as it is (no framing), so other consumers (a Lambda, the AWS
    console) see the envelope bytes; deliveries therefore have no ``message_id``. Clients, the
    stream's description and the consumer are opened on first use and dropped by ``close()``,
    which core also calls after a recoverable error: the next call starts afresh from the stored
    checkpoints.
    """

    schemes = ("kinesis",)
    # A record is at most 1 MiB of data *plus* partition key; keys are at most 256 characters.
    max_message_bytes = MAX_RECORD_BYTES - MAX_PARTITION_KEY_CHARS
    recoverable_errors = CONNECTION_ERRORS

    def __init__(self, url: TransportURL) -> None:
        super().__init__(AwsTransportURL.wrap(url))
        self.settings = KinesisSettings.from_url(self.url)
        self.where = self.url.redacted()
        # botocore makes max_attempts attempts, each bounded by connect_timeout and followed by
        # at most 20 s of its backoff; core adds no retry inside that.
        side = self.settings.side
        self.fail_within = side.max_attempts * (side.connect_timeout + 20.0)
        self._client: Any = None
        self._announced = False
        self._arn: str | None = None
        self._producer: Producer | None = None
        self._consumer: ShardConsumer | None = None
        self._store: CheckpointStore | None = None

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with aws_boundary("publish", self.where):
            self._stream_arn()
            if self._producer is None:
                self._producer = Producer(
                    self._kinesis(), self.settings.stream, self.where, attempts=self.settings.put_attempts
                )
            self._producer.put(messages)

    # -- consuming -------------------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with aws_boundary("receive", self.where):
            try:
                return self._open_consumer().receive(max_messages, timeout)
            except SourceError as exc:  # the checkpoint store (shared with the source side) failed
                cause = exc.__cause__
                if isinstance(cause, CONNECTION_ERRORS) or (isinstance(cause, ClientError) and is_throttling(cause)):
                    raise RecoverableTransportError(f"{self.where}: {exc}") from exc
                raise TransportError(f"{self.where}: {exc}") from exc
            except (ClientError, TransportError) as exc:
                cause = exc if isinstance(exc, ClientError) else exc.__cause__
                if not (isinstance(cause, ClientError) and error_code(cause) == "ResourceNotFoundException"):
                    raise
                # Recreating would give new shards whose sequence numbers the checkpoints do
                # not know: say so instead of guessing where to resume.
                raise ConfigError(
                    f"Kinesis stream {self.settings.stream!r} was deleted while being read ({self.where});"
                    " recreate it and delete the checkpoints of the old one before starting again"
                ) from exc

    def ack(self, delivery: Delivery) -> None:
        handle = self._handle(delivery, "ack")
        if handle.owner is self._consumer:
            handle.owner.ack(handle)
        else:  # issued before a close(): it is read again from the checkpoint
            log.debug("%s: ack of %s after close() ignored; it will be redelivered", self.where, handle.sequence_number)

    def release(self, delivery: Delivery) -> None:
        handle = self._handle(delivery, "release")
        if handle.owner is self._consumer:
            handle.owner.release(delivery)

    def _handle(self, delivery: Delivery, action: str) -> ShardHandle:
        if not isinstance(delivery.handle, ShardHandle):
            raise TransportError(f"{action}: the delivery did not come from {self.where}")
        return delivery.handle

    def _open_consumer(self) -> ShardConsumer:
        if self._consumer is None:
            arn = self._stream_arn()
            stream_id = f"{arn}/{self.settings.consumer}" if self.settings.consumer else arn
            if self._store is None:
                side = self.settings.side
                self._store = open_checkpoint_store(self.settings.checkpoint, lambda: side.client("dynamodb"))
            self._consumer = ShardConsumer(
                self._kinesis(),
                self.settings.stream,
                stream_id,
                self._store,
                self.where,
                poll_interval=self.settings.poll_interval,
                read_ahead=self.settings.read_ahead,
            )
        return self._consumer

    # -- the stream ------------------------------------------------------------------------------

    def _kinesis(self) -> Any:
        if self._client is None:
            side = self.settings.side
            if not self._announced:  # once, not at every reconnect
                log.info("%s: AWS credentials from %s", self.where, side.credential_source)
                self._announced = True
            self._client = side.client("kinesis")
        return self._client

    def _stream_arn(self) -> str:
        if self._arn is None:
            self._arn = self._describe_or_create()
        return self._arn

    def _describe_or_create(self) -> str:
        client, name = self._kinesis(), self.settings.stream
        try:
            summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            if not self.settings.create:
                raise ConfigError(
                    f"Kinesis stream {name!r} does not exist ({self.where}); create it, or"
                    " leave create=true to have it created"
                ) from exc
            self._create(name)
            summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary.get("StreamStatus") == "CREATING":
            client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        return str(summary["StreamARN"])

    def _create(self, name: str) -> None:
        client, settings = self._kinesis(), self.settings
        kwargs: dict[str, Any] = {"StreamName": name}
        if settings.shards:
            kwargs |= {"ShardCount": settings.shards, "StreamModeDetails": {"StreamMode": "PROVISIONED"}}
        else:
            kwargs["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        try:
            client.create_stream(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # created by the other side meanwhile: fine
                raise
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        if settings.retention_hours > 24:
            client.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=settings.retention_hours)
        capacity = f"{settings.shards} shard(s)" if settings.shards else "on-demand capacity"
        log.info(
            "created Kinesis stream %s (%s, %d h retention) in %s",
            name,
            capacity,
            settings.retention_hours,
            settings.side.region,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Store the checkpoints acks moved; unacked deliveries are read again by the next consumer."""
        consumer, store = self._consumer, self._store
        self._consumer = self._store = None
        self._producer = None
        self._client = None
        self._arn = None
        try:
            if consumer is not None:
                consumer.flush()
        except Exception as exc:  # the acks since the last receive are lost: redelivered, never skipped
            log.warning(
                "%s: could not store checkpoints on close (%s); unstored acks will be redelivered", self.where, exc
            )
        finally:
            if store is not None:
                store.close()

    def __repr__(self) -> str:
        return f"KinesisTransport({self.where!r})"
