"""An emulator of Lambda's event source mappings, for testing the handlers without Lambda.

Lambda cannot run here (no Docker; moto stores mappings but does not invoke them). This module reads
the real sources on the moto server with boto3 and invokes a handler in-process with events built in
Lambda's shapes, honouring the mapping's contract as AWS documents it.

What it models:

* **Sources**: a DynamoDB stream or Kinesis stream, read per shard in order from TRIM_HORIZON with
  GetShardIterator/GetRecords; an SQS queue read with ReceiveMessage (all attributes).
* **Event shapes**, as Lambda delivers them, as JSON (the event goes through ``json.dumps``/``loads``):
  DynamoDB records with ``ApproximateCreationDateTime`` in epoch seconds and binary as base64 text
  (``eventID``, ``eventVersion`` 1.1, ``eventSource``, ``eventSourceARN``, ``awsRegion``, ``userIdentity``
  when the stream has one); Kinesis records with ``kinesis.data`` in base64, ``partitionKey``,
  ``sequenceNumber``, ``approximateArrivalTimestamp``, ``eventID`` ``shardId-...:SEQ``; SQS records with
  ``messageId``, ``receiptHandle``, ``body``, ``attributes``, ``messageAttributes`` in Lambda's lower-case
  form (``stringValue``, ``dataType``), ``md5OfBody``.
* **Batching**: up to ``batch_size`` records per invocation; ``batching_window`` seconds of waiting for
  a fuller batch when fewer are there.
* **Streams (DynamoDB, Kinesis)**: one batch at a time per shard, in order. A response's
  ``batchItemFailures`` makes the shard resume at the lowest sequence number named (records after it
  come again too); an identifier not in the batch, or a malformed response, fails the whole batch. A
  raised exception fails the whole batch; with ``bisect`` the batch is split in halves, each retried on
  its own (a split does not count as a retry, as on AWS). After ``max_retries`` retries of a batch
  (``-1``: forever) or once its oldest record is older than ``max_record_age``, the batch is skipped and
  a description of it (shard, first and last sequence number, count, why) goes to ``on_failure``,
  without the records, as AWS sends it.
* **SQS**: messages not named in ``batchItemFailures`` are deleted; named ones (or all, on an exception)
  become visible again at once (AWS waits for the visibility timeout: shortened here so tests are fast)
  and come back with ``ApproximateReceiveCount`` raised by the queue itself.

What it cannot model: concurrency (``ParallelizationFactor``: one batch per shard at a time here, so the
per-key order of parallel batches is not exercised), shard splits and lineage (moto has one shard),
the 6 MB invocation payload limit, timeouts (the handler's deadline is driven by a fake context's
clock instead), Lambda's own throttling of invocations, and container reuse policies (a test decides
when a container is "cold" by giving a function its own cache).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bridge.serverless import handlers

Handler = Callable[[dict[str, Any], Any], Any]


class Context:
    """The parts of Lambda's context object the handlers read."""

    def __init__(self, timeout_s: float = 60.0, name: str = "bridge") -> None:
        self._deadline = time.monotonic() + timeout_s
        self.function_name = name
        self.aws_request_id = hashlib.md5(str(time.monotonic()).encode()).hexdigest()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Function:
    """One deployed function: its handler, its environment, and its container's cache.

    Two functions in one test process (two regions, publish and apply) each keep their own
    :mod:`bridge.serverless.handlers` state, as two Lambda containers would.
    """

    handler: Handler
    env: dict[str, str]
    timeout_s: float = 60.0
    invocations: int = 0
    _built: dict[str, Any] = field(default_factory=dict)
    _errors: dict[str, Any] = field(default_factory=dict)

    def __call__(self, event: dict[str, Any]) -> Any:
        self.invocations += 1
        with self._container():
            return self.handler(json.loads(json.dumps(event)), Context(self.timeout_s))

    @contextmanager
    def _container(self) -> Iterator[None]:
        saved_env = {k: os.environ.get(k) for k in self.env}
        saved = handlers._built, handlers._config_error
        os.environ.update(self.env)
        handlers._built, handlers._config_error = self._built, self._errors
        try:
            yield
        finally:
            handlers._built, handlers._config_error = saved
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def cold_start(self) -> None:
        """A new container: everything built is forgotten."""
        with self._container():
            handlers.reset()


@dataclass
class Report:
    invocations: int = 0
    records_delivered: int = 0
    failures: int = 0  # invocations that raised or named items to retry
    bisections: int = 0
    errors: list[str] = field(default_factory=list)  # what the handler raised, most recent last
    on_failure: list[dict[str, Any]] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    """boto3's record -> Lambda's JSON: bytes as base64 text, datetimes as epoch seconds."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_jsonable(v) for v in value]
    return value


class StreamMapping:
    """A DynamoDB Streams or Kinesis mapping (see the module docstring for the contract)."""

    def __init__(
        self,
        client: Any,
        kind: str,
        arn: str,
        function: Function,
        *,
        region: str,
        batch_size: int = 100,
        batching_window: float = 0.0,
        bisect: bool = True,
        max_retries: int = -1,
        max_record_age: float | None = None,
    ) -> None:
        assert kind in ("dynamodb", "kinesis")
        self.client, self.kind, self.arn, self.function, self.region = client, kind, arn, function, region
        self.batch_size, self.batching_window = batch_size, batching_window
        self.bisect, self.max_retries, self.max_record_age = bisect, max_retries, max_record_age
        self.report = Report()
        self._after: dict[str, str | None] = {}  # shard -> last sequence number done with

    # -- reading ------------------------------------------------------------------------------
    def _shards(self) -> list[str]:
        if self.kind == "dynamodb":
            desc = self.client.describe_stream(StreamArn=self.arn)["StreamDescription"]
        else:
            desc = self.client.describe_stream(StreamName=self.arn.rsplit("/", 1)[-1])["StreamDescription"]
        return [s["ShardId"] for s in desc["Shards"]]

    def _read(self, shard: str, limit: int) -> list[dict[str, Any]]:
        after = self._after.get(shard)
        name = "SequenceNumber" if self.kind == "dynamodb" else "StartingSequenceNumber"
        where: dict[str, Any] = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", name: after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        if self.kind == "dynamodb":
            it = self.client.get_shard_iterator(StreamArn=self.arn, ShardId=shard, **where)["ShardIterator"]
            got = self.client.get_records(ShardIterator=it, Limit=limit)["Records"]
            return [self._dynamodb_record(r) for r in got]
        # moto keys Kinesis iterators by stream name (an iterator got with StreamARN names stream None),
        # and compares AFTER_SEQUENCE_NUMBER as text ("3" > "20"): read from the start, skip by number.
        name = self.arn.rsplit("/", 1)[-1]
        it = self.client.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        got = self.client.get_records(ShardIterator=it["ShardIterator"], Limit=10_000)["Records"]
        fresh = [r for r in got if after is None or int(r["SequenceNumber"]) > int(after)]
        return [self._kinesis_record(shard, r) for r in fresh[:limit]]

    def _dynamodb_record(self, record: dict[str, Any]) -> dict[str, Any]:
        out = _jsonable(record)
        out["eventSourceARN"] = self.arn
        out["awsRegion"] = self.region
        return dict(out)

    def _kinesis_record(self, shard: str, record: dict[str, Any]) -> dict[str, Any]:
        seq = record["SequenceNumber"]
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": seq,
                "data": base64.b64encode(record["Data"]).decode("ascii"),
                "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/bridge-apply",
            "awsRegion": self.region,
            "eventSourceARN": self.arn,
        }

    def _seq(self, record: dict[str, Any]) -> str:
        return str(
            record["dynamodb"]["SequenceNumber"] if self.kind == "dynamodb" else record["kinesis"]["sequenceNumber"]
        )

    def _created(self, record: dict[str, Any]) -> float:
        if self.kind == "dynamodb":
            return float(record["dynamodb"]["ApproximateCreationDateTime"])
        return float(record["kinesis"]["approximateArrivalTimestamp"])

    # -- the contract ---------------------------------------------------------------------------
    def drain(self, timeout: float = 60.0) -> Report:
        """Deliver until every shard is read to its current end."""
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            for shard in self._shards():
                batch = self._read(shard, self.batch_size)
                if batch and len(batch) < self.batch_size and self.batching_window:
                    time.sleep(self.batching_window)
                    batch = self._read(shard, self.batch_size)
                if batch:
                    busy = True
                    self._deliver(shard, batch)
            if not busy:
                return self.report
            assert time.monotonic() < deadline, "the mapping did not drain in time"

    def _deliver(self, shard: str, batch: list[dict[str, Any]], retries: int = 0) -> None:
        """Invoke until ``batch`` is done with: succeeded, or skipped to on_failure."""
        while batch:
            self.report.invocations += 1
            self.report.records_delivered += len(batch)
            try:
                result = self.function({"Records": batch})
                failed_at = self._failed_at(batch, result)
            except Exception as exc:  # the handler raised: the whole batch failed
                self.report.errors.append(f"{type(exc).__name__}: {exc}")
                assert len(self.report.errors) < 50, f"the handler keeps failing: {self.report.errors[-3:]}"
                failed_at = 0
                if self.bisect and len(batch) > 1:
                    self.report.failures += 1
                    self.report.bisections += 1
                    mid = len(batch) // 2
                    self._deliver(shard, batch[:mid], retries)
                    self._deliver(shard, batch[mid:], retries)
                    return
            if failed_at is None:
                self._after[shard] = self._seq(batch[-1])
                return
            self.report.failures += 1
            assert self.report.failures < 100, f"the mapping keeps retrying: {self.report}"
            if failed_at > 0:
                self._after[shard] = self._seq(batch[failed_at - 1])
            batch = batch[failed_at:]
            retries += 1
            too_old = self.max_record_age is not None and time.time() - self._created(batch[0]) > self.max_record_age
            if (self.max_retries != -1 and retries > self.max_retries) or too_old:
                self.report.on_failure.append(
                    {
                        "shard": shard,
                        "startSequenceNumber": self._seq(batch[0]),
                        "endSequenceNumber": self._seq(batch[-1]),
                        "batchSize": len(batch),
                        "condition": "RecordAgeExceeded" if too_old else "RetryAttemptsExhausted",
                    }
                )
                self._after[shard] = self._seq(batch[-1])
                return

    def _failed_at(self, batch: list[dict[str, Any]], result: Any) -> int | None:
        """Index of the lowest item named to retry, or None; a malformed response fails all of it."""
        if result is None:
            return None
        try:
            named = [str(f["itemIdentifier"]) for f in result.get("batchItemFailures", [])]
        except (AttributeError, KeyError, TypeError):
            return 0
        if not named:
            return None
        seqs = [self._seq(r) for r in batch]
        if any(n not in seqs for n in named):
            return 0
        return min(seqs.index(n) for n in named)


class SqsMapping:
    """An SQS mapping: receive, invoke, delete what succeeded, make the rest visible again."""

    def __init__(self, client: Any, queue_url: str, function: Function, *, region: str, batch_size: int = 10) -> None:
        self.client, self.queue_url, self.function, self.region = client, queue_url, function, region
        self.batch_size = batch_size
        self.arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.report = Report()

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": attributes,
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": self.region,
        }

    def drain(self, timeout: float = 60.0) -> Report:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not got:
                return self.report
            batch = [self._record(m) for m in got]
            self.report.invocations += 1
            self.report.records_delivered += len(batch)
            try:
                result = self.function({"Records": batch})
                retry = {str(f["itemIdentifier"]) for f in (result or {}).get("batchItemFailures", [])}
            except Exception as exc:
                self.report.errors.append(f"{type(exc).__name__}: {exc}")
                assert len(self.report.errors) < 50, f"the handler keeps failing: {self.report.errors[-3:]}"
                retry = {r["messageId"] for r in batch}
            if retry:
                self.report.failures += 1
            for record in batch:
                if record["messageId"] in retry:
                    self.client.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
                    )
                else:
                    self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        raise AssertionError("the SQS mapping did not drain in time")
