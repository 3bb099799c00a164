"""PutRecords within Kinesis' limits; on a partial failure, only the failed records are sent again.

Limits (per call): 500 records and 5 MiB; per record: 1 MiB of data plus partition key.
A PutRecords call can succeed for some records and fail for others (``ErrorCode`` per record:
``ProvisionedThroughputExceededException`` when a shard is over its 1 MB/s or 1,000 records/s,
``InternalFailure``, KMS errors). Seed B re-sent whole batches, duplicating every record that had
succeeded; here only the failed ones are retried, with backoff, until every record is in.

Order: calls are made one after another, so records with one partition key keep their order across
calls. After a partial failure, a retried record lands after the records that succeeded after it
in the same call (Kinesis documents that PutRecords does not order under partial failure); the
applier orders changes by version, not arrival, so the final state does not depend on it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import RecoverableTransportError, TransportError
from bridge.transport import OutgoingMessage
from bridge.transport.backoff import Backoff

log = logging.getLogger(__name__)
# Failed entries of a PutRecords that succeeded: botocore does not retry those, this loop does.
ENTRY_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)

MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
MAX_CALL_BYTES = 5 * 1024 * 1024
MAX_CALL_RECORDS = 500
MAX_PARTITION_KEY_CHARS = 256
#: Per-record codes worth another try; anything else (KMS key disabled, access denied) is not.
RETRYABLE_RECORD_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "KMSThrottlingException",
        "ServiceUnavailable",
    }
)


def partition_key(key: str) -> str:
    """The message's partition key, or its digest when Kinesis would refuse it (empty or > 256 chars).

    A digest is stable, so one key still always lands on one shard and keeps its order.
    """
    if 1 <= len(key) <= MAX_PARTITION_KEY_CHARS:
        return key
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


@dataclass
class ProducerStats:
    calls: int = 0
    records: int = 0
    retried_records: int = 0


class Producer:
    def __init__(
        self, client: Any, stream: str, where: str, *, attempts: int = 10, sleep: Callable[[float], object] = time.sleep
    ) -> None:
        self._client = client
        self.stream = stream
        self.where = where
        self.attempts = attempts
        self._sleep = sleep
        self.stats = ProducerStats()

    def put(self, messages: Sequence[OutgoingMessage]) -> None:
        """Returns once Kinesis accepted every record."""
        for chunk in _chunks([{"Data": m.body, "PartitionKey": partition_key(m.partition_key)} for m in messages]):
            self._put_all(chunk)

    def _put_all(self, entries: list[dict[str, Any]]) -> None:
        pending = entries
        attempt = 0
        while True:
            attempt += 1
            response = self._client.put_records(StreamName=self.stream, Records=pending)
            self.stats.calls += 1
            results = response.get("Records") or []
            if len(results) != len(pending):
                raise TransportError(
                    f"PutRecords on {self.where} answered {len(results)} results for {len(pending)} records"
                )
            failed = [
                (entry, result) for entry, result in zip(pending, results, strict=True) if result.get("ErrorCode")
            ]
            self.stats.records += len(pending) - len(failed)
            if not failed:
                return
            codes = Counter(str(result["ErrorCode"]) for _, result in failed)
            summary = ", ".join(f"{n} x {code}" for code, n in codes.most_common())
            fatal = [result for _, result in failed if result["ErrorCode"] not in RETRYABLE_RECORD_CODES]
            if fatal:
                raise TransportError(
                    f"PutRecords on {self.where} refused {len(failed)} of {len(pending)} records"
                    f" ({summary}): {fatal[0].get('ErrorMessage', '')}"
                )
            if attempt >= self.attempts:
                raise RecoverableTransportError(
                    f"PutRecords on {self.where}: {len(failed)} records still failing after {attempt} calls ({summary})"
                )
            delay = ENTRY_BACKOFF.delay(attempt)
            log.info(
                "PutRecords on %s: retrying %d of %d records in %.2fs (%s)",
                self.where,
                len(failed),
                len(pending),
                delay,
                summary,
            )
            self._sleep(delay)
            pending = [entry for entry, _ in failed]
            self.stats.retried_records += len(pending)


def _chunks(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of at most 500 records and 5 MiB."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["Data"]) + len(entry["PartitionKey"].encode())
        if chunk and (len(chunk) == MAX_CALL_RECORDS or size + entry_size > MAX_CALL_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk
