"""Reading every shard of a Kinesis stream, with per-shard checkpoints that move only on ack.

- **Lineage.** A shard becomes readable once each of its parents (``ParentShardId`` and, after a
  merge, ``AdjacentParentShardId``) was read to its end, so one partition key's records are delivered
  in order across splits and merges. A parent no longer listed (past retention) counts as done.
- **Acks are checkpoints.** A delivery's record may be checkpointed only when it and every earlier
  delivery of its shard were acked: the checkpoint moves to the highest *contiguous* acked sequence
  number. Checkpoints are written to the store at the next ``receive()`` and at ``flush()`` (close),
  so many acks cost one write per shard. A shard is stored as finished once it was read to its end
  and all its deliveries were acked. Whatever was not checkpointed is read again after a restart
  (at-least-once).
- **Release** queues the delivery to be handed out again by this consumer; its shard's checkpoint
  cannot pass it until it is acked.
- **Iterators** expire five minutes after they were issued; an expired one is replaced with
  ``AFTER_SEQUENCE_NUMBER`` of the last record read (or the checkpoint), so nothing is skipped or
  read twice. A shard is at its end when GetRecords returns no ``NextShardIterator``.
- **Throttling** of one shard (5 GetRecords/s, 2 MB/s per shard) pauses that shard, not the others.
- **Read-ahead.** One GetRecords fetches up to ``read_ahead`` records (Kinesis caps a call at 10 MiB)
  into a per-shard buffer that later receives hand out, so a caller taking a few at a time is not
  held to 5 calls per second. Buffered records count as unread: close() drops them.

Not a coordinator: one consumer (process) per stream and checkpoint name. Two would both read
everything (harmless for the applier, which dedupes, but twice the work).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from bridge.aws import error_code, is_throttling, map_client_error
from bridge.errors import RecoverableTransportError
from bridge.state.checkpoints import Checkpoint, CheckpointStore, later_sequence
from bridge.transport import Delivery

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 10_000  # GetRecords' own limit
MIN_CALL_INTERVAL_S = 0.2  # 5 GetRecords/s per shard
THROTTLE_PAUSE_S = 1.0
_EXPIRED = "ExpiredIteratorException"


@dataclass(frozen=True, slots=True)
class ShardHandle:
    """``Delivery.handle``: which consumer issued it, for which record."""

    owner: ShardConsumer
    shard_id: str
    sequence_number: str


@dataclass
class _Sent:
    sequence_number: str
    acked: bool = False


@dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    checkpoint: str | None = None  # stored
    finished: bool = False  # stored
    iterator: str | None = None
    position: str | None = None  # last sequence number fetched in this process
    ended: bool = False  # fetched to its end in this process
    buffer: deque[dict[str, Any]] = field(default_factory=deque)  # fetched, not yet handed out
    sent: deque[_Sent] = field(default_factory=deque)  # delivered, not yet checkpointable, in order
    by_seq: dict[str, _Sent] = field(default_factory=dict)
    released: deque[Delivery] = field(default_factory=deque)
    not_before: float = 0.0
    save_seq: str | None = None  # to store at the next flush
    save_finished: bool = False

    @property
    def done(self) -> bool:
        """Nothing more to hand out: its children may be read."""
        return self.finished or (self.ended and not self.buffer)


class ShardConsumer:
    """One reading session over a stream: opened on the first receive, dropped by close()."""

    def __init__(
        self,
        client: Any,
        stream: str,
        stream_id: str,
        store: CheckpointStore,
        where: str,
        *,
        poll_interval: float = 0.5,
        read_ahead: int = 100,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._client = client
        self.stream = stream
        self.stream_id = stream_id
        self._store = store
        self.where = where
        self.poll_interval = poll_interval
        self.read_ahead = read_ahead
        self.refresh_s = refresh_s
        self._clock = clock
        self._sleep = sleep
        self._stored: dict[str, Checkpoint] = store.load(stream_id)
        self._shards: dict[str, _Shard] = {}
        self._listed: set[str] = set()
        self._refresh_at = 0.0
        self._turn = 0

    # -- delivering ------------------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        self.flush()
        out: list[Delivery] = []
        for shard in self._shards.values():
            while shard.released and len(out) < max_messages:
                out.append(shard.released.popleft())
        if out or max_messages < 1:
            return out
        deadline = self._clock() + timeout
        while True:
            if self._clock() >= self._refresh_at:
                self._refresh()
            readable = [s for s in self._shards.values() if not s.done and self._parents_done(s)]
            if readable:
                start = self._turn % len(readable)
                self._turn += 1
                for shard in readable[start:] + readable[:start]:
                    if len(out) >= max_messages:
                        break
                    if not shard.buffer and not shard.ended and shard.not_before <= self._clock():
                        self._fetch(shard, max_messages - len(out))
                    out.extend(self._hand_out(shard, max_messages - len(out)))
            now = self._clock()
            if out or now >= deadline:
                return out
            wake = min([s.not_before for s in readable if not s.done] + [self._refresh_at, deadline])
            self._sleep(min(max(wake - now, 0.01), deadline - now))

    def ack(self, handle: ShardHandle) -> None:
        shard = self._shards.get(handle.shard_id)
        sent = shard.by_seq.get(handle.sequence_number) if shard else None
        if shard is None or sent is None:
            return  # acked already
        sent.acked = True
        if shard.released:  # acked through the first delivery object: do not hand it out again
            shard.released = deque(d for d in shard.released if d.handle != handle)
        while shard.sent and shard.sent[0].acked:
            done = shard.sent.popleft()
            del shard.by_seq[done.sequence_number]
            shard.save_seq = done.sequence_number
        self._check_finished(shard)

    def release(self, delivery: Delivery) -> None:
        handle: ShardHandle = delivery.handle
        shard = self._shards.get(handle.shard_id)
        if shard is None or handle.sequence_number not in shard.by_seq:
            return
        if any(d.handle == handle for d in shard.released):
            return
        shard.released.append(Delivery(delivery.body, delivery.message_id, True, handle))

    def flush(self) -> None:
        """Store every checkpoint that moved since the last flush."""
        for shard in self._shards.values():
            finish = shard.save_finished and not shard.finished
            if shard.save_seq is None and not finish:
                continue
            self._store.save(self.stream_id, shard.shard_id, shard.save_seq, finished=finish)
            shard.checkpoint = later_sequence(shard.checkpoint, shard.save_seq)
            shard.finished = shard.finished or finish
            shard.save_seq = None
            if finish:
                log.info("%s: shard %s read to its end and checkpointed", self.where, shard.shard_id)

    @property
    def unacked(self) -> int:
        return sum(len(s.sent) for s in self._shards.values())

    # -- shards ----------------------------------------------------------------------------------

    def _parents_done(self, shard: _Shard) -> bool:
        return all(p not in self._listed or self._shards[p].done for p in shard.parents)

    def _check_finished(self, shard: _Shard) -> None:
        if shard.ended and not shard.buffer and not shard.sent and not shard.released:
            shard.save_finished = True

    def _refresh(self) -> None:
        listed: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        while True:
            response = self._client.list_shards(**kwargs)
            listed.extend(response.get("Shards") or [])
            token = response.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}
        self._listed = {str(info["ShardId"]) for info in listed}
        for info in listed:
            shard_id = str(info["ShardId"])
            if shard_id in self._shards:
                continue
            parents = tuple(str(p) for p in (info.get("ParentShardId"), info.get("AdjacentParentShardId")) if p)
            shard = _Shard(shard_id, parents)
            stored = self._stored.get(shard_id)
            if stored is not None:
                shard.checkpoint, shard.finished = stored.sequence_number, stored.finished
            self._shards[shard_id] = shard
        self._refresh_at = self._clock() + self.refresh_s

    # -- reading ---------------------------------------------------------------------------------

    def _hand_out(self, shard: _Shard, limit: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        while shard.buffer and len(deliveries) < limit:
            record = shard.buffer.popleft()
            seq = str(record["SequenceNumber"])
            sent = _Sent(seq)
            shard.sent.append(sent)
            shard.by_seq[seq] = sent
            deliveries.append(Delivery(bytes(record["Data"]), None, False, ShardHandle(self, shard.shard_id, seq)))
        if shard.ended and not shard.buffer:
            self._refresh_at = 0.0  # its children are listed now
            self._check_finished(shard)
        return deliveries

    def _fetch(self, shard: _Shard, wanted: int) -> None:
        """One GetRecords into the shard's buffer."""
        response: dict[str, Any] | None = None
        for _ in range(3):
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            if shard.iterator is None:  # nothing after our position in a closed shard
                shard.ended = True
                return
            try:
                response = self._client.get_records(
                    ShardIterator=shard.iterator, Limit=min(max(wanted, self.read_ahead), MAX_RECORDS_PER_CALL)
                )
                break
            except ClientError as exc:
                if error_code(exc) == _EXPIRED:
                    shard.iterator = None
                    log.info(
                        "%s: shard %s iterator expired; continuing after %s",
                        self.where,
                        shard.shard_id,
                        shard.position or shard.checkpoint or "the trim horizon",
                    )
                    continue
                if is_throttling(exc):
                    shard.not_before = self._clock() + THROTTLE_PAUSE_S
                    log.info("%s: shard %s throttled (%s); pausing it", self.where, shard.shard_id, error_code(exc))
                    return
                raise map_client_error(exc, f"GetRecords from {shard.shard_id}", self.where) from exc
        if response is None:
            raise RecoverableTransportError(f"{self.where}: shard {shard.shard_id} iterators kept expiring")
        records = response.get("Records") or []
        shard.iterator = response.get("NextShardIterator")
        shard.buffer.extend(records)
        if records:
            shard.position = str(records[-1]["SequenceNumber"])
        now = self._clock()
        if shard.iterator is None:
            shard.ended = True
        elif records or response.get("MillisBehindLatest", 0):
            shard.not_before = now + MIN_CALL_INTERVAL_S
        else:
            shard.not_before = now + self.poll_interval

    def _iterator(self, shard: _Shard) -> str | None:
        after = shard.position or shard.checkpoint
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard.shard_id}
        if after is not None:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        iterator = self._client.get_shard_iterator(**kwargs).get("ShardIterator")
        return str(iterator) if iterator else None
