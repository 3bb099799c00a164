"""Read a DynamoDB stream shard by shard: parents before children, from the last confirmed checkpoint.

The reader only reads. The caller publishes what :meth:`StreamReader.poll` returned and then calls
:meth:`StreamReader.confirm`, which is the only thing that moves a checkpoint; so a crash re-reads
unconfirmed records (at-least-once) and never skips one.

Ordering: one item's changes stay in one shard until the shard splits, and then continue in a child.
Reading every parent to its end before any child keeps each item's changes in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws import Backoff, ErrorClass, classify, describe
from bridge.errors import ConfigError, DataLossError, SourceError, SystemicError
from bridge.observe import metrics
from bridge.source.rawread import read_raw
from bridge.state.checkpoints import Checkpoint, CheckpointStore, later_sequence, sortable_sequence

__all__ = ["ShardRead", "StreamReader"]

log = logging.getLogger(__name__)

StartPosition = Literal["trim-horizon", "latest"]
OnTrimmed = Literal["fail", "trim-horizon"]

MAX_RECORDS_PER_CALL = 1000  # GetRecords' own limit
EMPTY_SHARD_PAUSE_S = 0.25  # DynamoDB allows ~5 GetRecords/s per shard; an empty shard can wait
_EXPIRED = "ExpiredIteratorException"
_TRIMMED = "TrimmedDataAccessException"
# On top of botocore's adaptive retries (aws_max_attempts per call): one loop of ours, for throttling
# only, so a busy stream slows the reader down instead of stopping it (docs/design.md, "Retries").
_THROTTLE_BACKOFF = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10)
_MAX_ITERATOR_RETRIES = 5


@dataclass(frozen=True)
class ShardRead:
    """Records one GetRecords returned for one shard. ``ended``: the shard is closed and read to its end."""

    shard_id: str
    records: list[dict[str, Any]]
    ended: bool


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    checkpoint: str | None = None  # last confirmed sequence number
    finished: bool = False  # finished in the store (or skipped by a "latest" first start)
    ended: bool = False  # read to its end in this process, maybe not confirmed yet
    latest: bool = False  # no checkpoint: start at LATEST rather than TRIM_HORIZON
    iterator: str | None = None
    last_read: str | None = None  # sequence number of the last record poll() returned
    not_before: float = 0.0  # pacing after an empty read

    @property
    def done(self) -> bool:
        return self.finished or self.ended


class StreamReader:
    """Reads one DynamoDB stream through a ``dynamodbstreams`` client, checkpointing in ``store``.

    ``start_position`` and the LATEST rule apply only when the store has nothing for this stream: open
    shards then start at LATEST and closed shards are recorded as finished (skipped). Shards found later
    always start at TRIM_HORIZON, so a child's first records are never lost.

    :meth:`poll` must be called from one thread; :meth:`confirm` may be called from another.
    """

    def __init__(
        self,
        client: Any,
        stream_arn: str,
        store: CheckpointStore,
        start_position: StartPosition = "trim-horizon",
        on_trimmed: OnTrimmed = "fail",
        shard_refresh_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if start_position not in ("trim-horizon", "latest"):
            raise ConfigError(f"start position must be 'trim-horizon' or 'latest', got {start_position!r}")
        if on_trimmed not in ("fail", "trim-horizon"):
            raise ConfigError(f"on-trimmed must be 'fail' or 'trim-horizon', got {on_trimmed!r}")
        self._client = client
        read_raw(client)  # GetRecords answers in the wire's form, without botocore's typed parsing
        self._arn = stream_arn
        self._store = store
        self._start = start_position
        self._on_trimmed = on_trimmed
        self._refresh_s = shard_refresh_s
        self._clock = clock
        self._sleep = sleep
        self._stored: dict[str, Checkpoint] = store.load(stream_arn)
        self._first_start = not self._stored
        self._shards: dict[str, _Shard] = {}
        self._discovered = False
        self._refresh_at = 0.0  # refresh on the first poll
        self._turn = 0
        self._idle = False

    @property
    def stream_arn(self) -> str:
        return self._arn

    @property
    def idle(self) -> bool:
        """True when the last :meth:`poll` got no records (and no shard ended) from any shard."""
        return self._idle

    def poll(self, limit: int = MAX_RECORDS_PER_CALL) -> list[ShardRead]:
        """One GetRecords round over the shards readable now, at most ``limit`` records in all."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if self._clock() >= self._refresh_at:
            self._refresh()
        readable = self._readable()
        if not readable:
            self._idle = True
            self._sleep(EMPTY_SHARD_PAUSE_S)
            return []
        wait = min(s.not_before for s in readable) - self._clock()
        if wait > 0:  # every readable shard was empty a moment ago; do not spin
            self._sleep(wait)
        now = self._clock()
        # Rotate the starting shard so a busy shard cannot starve the others when `limit` is reached.
        # Parent and child are never readable together, so rotation cannot reorder one item's changes.
        start = self._turn % len(readable)
        self._turn += 1
        reads: list[ShardRead] = []
        remaining = limit
        for shard in readable[start:] + readable[:start]:
            if remaining <= 0:
                break
            if shard.not_before > now:
                continue
            records, ended = self._read(shard, remaining)
            remaining -= len(records)
            if records or ended:
                reads.append(ShardRead(shard.shard_id, records, ended))
        self._idle = not reads
        return reads

    def confirm(self, shard_id: str, sequence_number: str | None, ended: bool = False) -> None:
        """The caller's batch up to ``sequence_number`` is safely in the transport: checkpoint it.

        ``ended=True`` (after a :class:`ShardRead` with ``ended``) marks the shard finished.
        """
        if sequence_number is None and not ended:
            return
        self._store.save(self._arn, shard_id, sequence_number, finished=ended)
        metrics.checkpoint_saved(self._arn, shard_id, finished=ended)
        shard = self._shards.get(shard_id)
        if shard is not None:
            shard.checkpoint = later_sequence(shard.checkpoint, sequence_number)
            shard.finished = shard.finished or ended

    def rewind(self) -> None:
        """Forget what was read but not confirmed; the next poll re-reads from the stored checkpoints.

        For a caller whose publish failed and who wants to retry without restarting the process.
        """
        self._stored = self._store.load(self._arn)
        for shard in self._shards.values():
            stored = self._stored.get(shard.shard_id)
            if stored is not None:
                shard.checkpoint = later_sequence(shard.checkpoint, stored.sequence_number)
                shard.finished = shard.finished or stored.finished
            shard.ended = False
            shard.iterator = None
            shard.last_read = None
            shard.not_before = 0.0

    # -- shards -----------------------------------------------------------------------------------

    def _readable(self) -> list[_Shard]:
        return [s for s in self._shards.values() if not s.done and self._parent_done(s)]

    def _parent_done(self, shard: _Shard) -> bool:
        # A parent missing from the description was trimmed away (or never listed): nothing to wait for.
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        return parent is None or parent.done

    def _refresh(self) -> None:
        listed = self._describe()
        self._refresh_at = self._clock() + self._refresh_s
        ids = set()
        for info in listed:
            shard_id = str(info["ShardId"])
            ids.add(shard_id)
            if shard_id not in self._shards:
                span = info.get("SequenceNumberRange") or {}
                self._refuse_foreign_position(shard_id, span)
                closed = "EndingSequenceNumber" in span
                self._shards[shard_id] = self._new_shard(shard_id, info.get("ParentShardId"), closed)
        if not self._discovered:
            self._check_vanished(ids)
            self._discovered = True
        # Shards that left the description (older than 24 h) are forgotten once we are done with them.
        for shard_id in [s for s, shard in self._shards.items() if s not in ids and shard.done]:
            del self._shards[shard_id]

    def _refuse_foreign_position(self, shard_id: str, span: Mapping[str, Any]) -> None:
        """A stored position outside its shard's sequence range was not written for this shard: resuming
        there would skip (or invent) records, so refuse it rather than guess."""
        stored = self._stored.get(shard_id)
        seq = stored.sequence_number if stored is not None else None
        first, last = span.get("StartingSequenceNumber"), span.get("EndingSequenceNumber")
        if seq is None or first is None:
            return
        try:
            at = sortable_sequence(seq)
            outside = at < sortable_sequence(str(first)) or (last is not None and at > sortable_sequence(str(last)))
        except ValueError:  # not a sequence number at all
            outside = True
        if outside:
            raise ConfigError(
                f"checkpoint for stream {self._arn} shard {shard_id}: sequence number {seq} lies outside the "
                f"shard's range {first}..{last or '(open)'}: the store belongs to another stream or was altered; "
                "restore it, or start over with --reset-checkpoint"
            )

    def _new_shard(self, shard_id: str, parent_id: str | None, closed: bool) -> _Shard:
        shard = _Shard(shard_id, parent_id)
        stored = self._stored.get(shard_id)
        if stored is not None:
            shard.checkpoint = stored.sequence_number
            shard.finished = stored.finished
            # No sequence number and not finished: the marker a "latest" first start left behind.
            shard.latest = stored.sequence_number is None and not stored.finished
        elif self._first_start and not self._discovered and self._start == "latest":
            # Persist the decision, so a restart before the first confirm neither reads skipped closed
            # shards from their start nor turns an open shard's LATEST into TRIM_HORIZON.
            if closed:
                shard.finished = True
                self._store.save(self._arn, shard_id, None, finished=True)
            else:
                shard.latest = True
                self._store.save(self._arn, shard_id, None)
                log.warning(
                    "stream %s shard %s: no checkpoint and start position latest: the changes already in this "
                    "shard (up to 24 hours of them) will not be shipped; only changes from now on",
                    self._arn,
                    shard_id,
                )
        return shard

    def _check_vanished(self, listed: set[str]) -> None:
        """A shard we were part-way through that is no longer listed was trimmed before we finished it."""
        for shard_id, stored in self._stored.items():
            if shard_id in listed or stored.finished or stored.sequence_number is None:
                continue
            gap = (
                f"stream {self._arn} shard {shard_id}: the shard is no longer in the stream (records are "
                f"kept 24 hours) but was read only up to sequence number {stored.sequence_number}; its "
                "records after that were lost"
            )
            if self._on_trimmed == "fail":
                raise DataLossError(f"{gap}. To accept the gap and continue, restart with --on-trimmed trim-horizon")
            log.error("%s; continuing without them (--on-trimmed trim-horizon)", gap)
            # Record that the gap was accepted, or the next start without the option would fail again.
            self._store.save(self._arn, shard_id, None, finished=True)

    def _describe(self) -> list[Mapping[str, Any]]:
        shards: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self._arn}
        while True:
            response = self._call("DescribeStream", self._client.describe_stream, kwargs)
            description = response.get("StreamDescription") or {}
            shards.extend(description.get("Shards") or [])
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, shard: _Shard, limit: int) -> tuple[list[dict[str, Any]], bool]:
        for _ in range(_MAX_ITERATOR_RETRIES):
            if shard.iterator is None:
                shard.iterator = self._get_iterator(shard)
            if shard.iterator is None:  # closed shard with nothing after our position
                response: Mapping[str, Any] = {}
                break
            try:
                response = self._call(
                    "GetRecords",
                    self._client.get_records,
                    {"ShardIterator": shard.iterator, "Limit": min(limit, MAX_RECORDS_PER_CALL)},
                    passthrough=(_EXPIRED, _TRIMMED),
                )
                break
            except ClientError as exc:
                shard.iterator = None
                if _code(exc) == _EXPIRED:
                    log.info(
                        "stream %s shard %s: shard iterator expired; getting a new one after sequence %s",
                        self._arn,
                        shard.shard_id,
                        shard.last_read or shard.checkpoint or "(none read yet)",
                    )
                    continue
                shard.iterator = self._trimmed(shard, exc)
        else:
            raise SourceError(
                f"stream {self._arn} shard {shard.shard_id}: no usable shard iterator after "
                f"{_MAX_ITERATOR_RETRIES} attempts (iterators kept expiring or data kept being trimmed)"
            )
        records = list(response.get("Records") or [])
        metrics.stream_read(self._arn, shard.shard_id, records)
        shard.iterator = response.get("NextShardIterator")
        for record in reversed(records):
            seq = _sequence_number(record)
            if seq is not None:
                shard.last_read = seq
                break
        ended = shard.iterator is None
        if ended:
            shard.ended = True
            self._refresh_at = 0.0  # its children may be listed now
        elif not records:
            shard.not_before = self._clock() + EMPTY_SHARD_PAUSE_S
        return records, ended

    def _get_iterator(self, shard: _Shard) -> str | None:
        after = shard.last_read or shard.checkpoint
        kwargs: dict[str, Any] = {"StreamArn": self._arn, "ShardId": shard.shard_id}
        if after is not None:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        else:
            kwargs["ShardIteratorType"] = "LATEST" if shard.latest else "TRIM_HORIZON"
        try:
            response = self._call("GetShardIterator", self._client.get_shard_iterator, kwargs, passthrough=(_TRIMMED,))
        except ClientError as exc:
            return self._trimmed(shard, exc)
        iterator = response.get("ShardIterator")
        return str(iterator) if iterator else None

    def _trimmed(self, shard: _Shard, exc: ClientError) -> str | None:
        """Records we had not read were trimmed: fail, or (if allowed) log the gap and go to TRIM_HORIZON."""
        position = shard.last_read or shard.checkpoint
        had = f"sequence number {position}" if position else "the start of the shard (nothing read yet)"
        gap = (
            f"stream {self._arn} shard {shard.shard_id}: records after {had} up to the oldest record still "
            "in the stream were trimmed (records are kept 24 hours) before they were read and are lost"
        )
        if self._on_trimmed == "fail":
            raise DataLossError(
                f"{gap}. The target is missing those changes; re-seed it, or accept the gap and continue "
                "from the oldest available record by restarting with --on-trimmed trim-horizon"
            ) from exc
        log.error("%s; continuing from the oldest available record (--on-trimmed trim-horizon)", gap)
        shard.last_read = None
        response = self._call(
            "GetShardIterator",
            self._client.get_shard_iterator,
            {"StreamArn": self._arn, "ShardId": shard.shard_id, "ShardIteratorType": "TRIM_HORIZON"},
        )
        iterator = response.get("ShardIterator")
        return str(iterator) if iterator else None

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        kwargs: Mapping[str, Any],
        passthrough: tuple[str, ...] = (),
    ) -> Mapping[str, Any]:
        """Call the API, backing off on throttling; systemic failures (stream gone, access denied)
        become SystemicError (the publisher pauses), the others SourceError.

        Errors whose code is in ``passthrough`` are re-raised as they are, for the caller to handle.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                response: Mapping[str, Any] = method(**kwargs)
                return response
            except (ClientError, BotoCoreError) as exc:
                code = _code(exc) if isinstance(exc, ClientError) else ""
                metrics.aws_error("source", exc)
                if code in passthrough:
                    raise
                kind = classify(exc)
                if kind is ErrorClass.THROTTLED and not _THROTTLE_BACKOFF.exhausted(attempt):
                    delay = _THROTTLE_BACKOFF.delay(attempt)
                    log.info("stream %s: %s throttled (%s); retrying in %.1f s", self._arn, operation, code, delay)
                    self._sleep(delay)
                    continue
                hint = (
                    " (does the stream exist, and is its table's stream enabled?)"
                    if code in ("ResourceNotFoundException", "ValidationException")
                    else ""
                )
                text = f"stream {self._arn}: {operation} failed: {describe(exc)}{hint}"
                if kind is ErrorClass.SYSTEMIC:
                    raise SystemicError(text) from exc
                raise SourceError(text) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _sequence_number(record: Any) -> str | None:
    ddb = record.get("dynamodb") if isinstance(record, Mapping) else None
    seq = ddb.get("SequenceNumber") if isinstance(ddb, Mapping) else None
    return seq if isinstance(seq, str) else None
