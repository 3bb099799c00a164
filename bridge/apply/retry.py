"""Re-attempting dead-lettered changes: the retry policy, one re-attempt, and the retry pass.

A change that still fails transiently after its in-place retries is parked on the retry
queue (``<queue>.dlq``) as a ``retrying`` :class:`~bridge.deadletter.records.FailureRecord` that
holds the *signed envelope* it came in and the change's index there. ``bridge-apply``
passes over that queue when a record is due:

* due records are re-attempted: the envelope is verified again with today's trusted keys
  and only the listed changes go through the normal apply path, so last-writer-wins
  holds and an old failure can never overwrite newer data;
* records not yet due are put back (published again, then the old copy acked) with
  ``checked_at`` stamped, so the pass stops when it meets its own work again;
* a record whose attempts or age run out, or whose failure turned permanent, moves to
  the parked queue; one whose envelope no longer verifies is quarantined there.

A pass runs only when something is due (or every ``max_delay`` to pick up records of
other appliers), looks at a bounded number of records, and never waits on a record: it
cannot spin the CPU or the broker. ``docs/dead-letters.md`` describes it for operators.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bridge.change import Change
from bridge.deadletter.records import TERMINAL, FailureRecord, Kind, Parker, State, wrap_foreign
from bridge.envelope import Batch, TrustStore, decode
from bridge.errors import (
    ApplyError,
    BridgeError,
    DecodeError,
    RecoverableTransportError,
    SystemicError,
    TransientApplyError,
)
from bridge.transport import Delivery
from bridge.transport.backoff import Backoff
from bridge.transport.reliable import ReliableTransport

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_KINDS = frozenset({Kind.CHANGES, Kind.ENVELOPE})  # signed: verified again on every attempt


@dataclass(frozen=True)
class RetryPolicy:
    """When a dead-lettered change is tried again, and when the bridge gives up on it."""

    max_attempts: int = 20
    max_age_s: float = 86_400.0
    initial_delay_s: float = 10.0
    max_delay_s: float = 900.0

    def delay(self, attempts: int) -> float:
        """Exponential, capped, with "equal jitter": never less than half the step, so a
        storm of failures spreads out without any record coming back at once."""
        return Backoff(self.initial_delay_s, self.max_delay_s, jitter="equal").delay(attempts)

    def exhausted(self, record: FailureRecord, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return record.attempts >= self.max_attempts or now - record.first_failed_at >= self.max_age_s

    def schedule(self, record: FailureRecord) -> FailureRecord:
        """A retrying record as it goes (back) on a queue: with its next attempt time, or
        parked if it has had all the attempts or all the time it may."""
        if record.state is not State.RETRYING:
            return record.with_(retry_at=None)
        if self.exhausted(record):
            why = (
                f"gave up after {record.attempts} attempt(s)"
                if record.attempts >= self.max_attempts
                else f"gave up after {record.age:.0f} s"
            )
            return record.with_(state=State.PARKED, retry_at=None, message=f"{record.message} ({why})")
        if record.retry_at is not None and record.retry_at > record.last_failed_at:
            return record  # already scheduled: keep its jitter, so a pass does not move it
        return record.with_(retry_at=record.last_failed_at + self.delay(record.attempts))

    @property
    def min_gap_s(self) -> float:
        """Shortest time between two passes over the retry queue."""
        return min(1.0, self.initial_delay_s)


def failure_records(
    payload: bytes,
    batch: Batch,
    failed: Sequence[tuple[int, ApplyError]],
    policy: RetryPolicy,
    previous: FailureRecord | None = None,
    fresh: bool = False,
) -> list[FailureRecord]:
    """Records for the failed changes of one envelope: one per (state, error, message), so a
    throttling storm makes one record per envelope, not one per change.

    ``previous``: the record being re-attempted (attempts and first failure carry on;
    with ``fresh``, an operator's replay, a transient failure starts a new retry budget).
    """
    groups: dict[tuple[State, str, str], list[tuple[int, ApplyError]]] = {}
    for index, exc in failed:
        state = State.RETRYING if isinstance(exc, TransientApplyError) else State.PARKED
        groups.setdefault((state, type(exc).__name__, str(exc)), []).append((index, exc))
    records = []
    for n, ((state, _, _), members) in enumerate(groups.items()):
        indices = tuple(sorted(i for i, _ in members))
        exc = members[0][1]
        pos = batch.changes[indices[0]].position
        context = {
            "kind": Kind.CHANGES,
            "changes": indices,
            "envelope_id": batch.envelope_id,
            "origin": batch.origin,
            "table": batch.table,
            "position": (pos.shard_id, pos.sequence_number) if pos else None,
        }
        if previous is None or (fresh and state is State.RETRYING):
            record = FailureRecord.from_exception(
                Kind.CHANGES, state, exc, payload, **{k: v for k, v in context.items() if k != "kind"}
            )
            if previous is not None and n == 0:
                record = record.with_(id=previous.id)
        else:
            record = previous.again(exc, state, retry_at=None, checked_at=None, **context)
            if n > 0:  # a record that split keeps its id on the first part only
                record = record.with_(id=FailureRecord.from_exception(Kind.CHANGES, state, exc, b"").id)
        records.append(policy.schedule(record))
    return records


@dataclass
class Reattempt:
    records: list[FailureRecord] = field(default_factory=list)  # what goes back on a queue
    attempted: int = 0  # changes tried
    recovered: int = 0  # changes now applied (or found already there)
    parked: int = 0  # changes that moved to parked
    quarantined: int = 0  # records whose envelope no longer verifies


@dataclass(frozen=True)
class Failed(Generic[T]):
    """A change that could not be applied, after its in-place retries."""

    tag: T  # the caller's label for the change (e.g. its index in the envelope)
    change: Change
    error: ApplyError
    attempts: int


ApplyChanges = Callable[[Sequence[tuple[Change, int]]], Sequence[Failed[int]]]


def reattempt(
    record: FailureRecord, trust: TrustStore, apply_changes: ApplyChanges, policy: RetryPolicy, *, fresh: bool = False
) -> Reattempt:
    """Verify the record's envelope again and apply the changes it names.

    ``apply_changes`` is :meth:`bridge.apply.loop.ChangeApplier.apply`: the normal path,
    last writer wins. Kinds that carry no signature are never applied here.
    """
    result = Reattempt()
    if record.kind not in RETRYABLE_KINDS:
        raise ValueError(f"{record.kind.value} records carry no signature and are not re-attempted")
    try:
        batch = decode(record.payload, trust)
        indices = _indices(record, batch)
    except DecodeError as exc:
        result.quarantined = 1
        result.records.append(record.again(exc, State.QUARANTINED, retry_at=None, checked_at=None))
        return result
    result.attempted = len(indices)
    failures = apply_changes([(batch.changes[i], i) for i in indices])
    failed = [(f.tag, f.error) for f in failures]
    result.recovered = len(indices) - len(failed)
    if failed:
        result.records = failure_records(record.payload, batch, failed, policy, previous=record, fresh=fresh)
        result.parked = sum(len(r.changes) for r in result.records if r.state is State.PARKED)
    return result


def _indices(record: FailureRecord, batch: Batch) -> list[int]:
    if record.kind is Kind.ENVELOPE:
        return list(range(len(batch.changes)))
    bad = [i for i in record.changes if i >= len(batch.changes)]
    if bad or not record.changes:
        raise DecodeError(
            f"record names change(s) {bad or '(none)'}; envelope {batch.envelope_id} holds {len(batch.changes)}",
            record.payload,
        )
    return sorted(set(record.changes))


@dataclass
class PassReport:
    looked_at: int = 0
    put_back: int = 0  # not due yet
    reattempted: int = 0  # records
    still_retrying: int = 0  # records that went back with a new time
    moved: int = 0  # records moved to the parked queue (parked, quarantined, unknown)

    def busy(self) -> bool:
        return bool(self.reattempted or self.moved)


class RetryLoop:
    """Passes over the retry queue inside ``bridge-apply``; see the module docstring."""

    #: Records one pass looks at; the rest wait for the next pass (which then comes soon).
    max_per_pass = 2_000
    receive_batch = 32
    receive_wait_s = 0.2

    def __init__(
        self,
        queue: ReliableTransport,
        parker: Parker,
        policy: RetryPolicy,
        handle: Callable[[FailureRecord], list[FailureRecord]],
        count: Callable[[str, int], None],
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.queue = queue  # a consumer of the retry queue of its own
        self.parker = parker  # publishes to the retry and parked queues
        self.policy = policy
        self.handle = handle
        self.count = count
        self.stop = stop or threading.Event()
        self.next_pass_at = time.time()  # first pass at start: records left by an earlier run
        self.known_due: float | None = None  # earliest retry_at this process knows of
        self._pass_earliest: float | None = None

    @staticmethod
    def open_queue(parker: Parker, stop: threading.Event) -> ReliableTransport | None:
        """A consumer of the retry queue beside the parker's publisher (none without a retry
        queue); a broken broker makes a pass give up after a few tries instead of holding up
        the apply loop."""
        if parker.dlq is None:
            return None
        queue = parker.open(parker.dlq.transport.url, "dlq")
        return ReliableTransport(queue, Backoff(initial_s=0.2, max_s=2.0, max_attempts=3), stop)

    def close(self) -> None:
        self.queue.close()

    def due(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.next_pass_at

    def seconds_until_due(self) -> float:
        return self.next_pass_at - time.time()

    def pending_within(self, seconds: float) -> bool:
        """Is a re-attempt known to be due within ``seconds``?"""
        return self.known_due is not None and self.known_due <= time.time() + seconds

    def note(self, records: Sequence[FailureRecord]) -> None:
        """Records the apply loop just parked: pass again when the first is due."""
        for record in records:
            if record.state is State.RETRYING and record.retry_at is not None:
                self._expect(record.retry_at)

    def _expect(self, at: float) -> None:
        self.known_due = at if self.known_due is None else min(self.known_due, at)
        self.next_pass_at = min(self.next_pass_at, at)

    def sweep(self) -> PassReport:
        """One pass over the retry queue. Never raises for a broker problem: the pass ends,
        everything it did not settle goes back to the queue, and it is tried again later."""
        started = time.time()
        report = PassReport()
        self.known_due = None
        earliest: float | None = None
        failed = False
        try:
            while report.looked_at < self.max_per_pass and not self.stop.is_set():
                deliveries = self.queue.receive(self.receive_batch, timeout=self.receive_wait_s)
                if not deliveries:
                    break
                if not self._settle(deliveries, started, report):
                    break
        except SystemicError:
            raise  # the apply loop pauses; what this pass received goes back to the queue below
        except RecoverableTransportError as exc:
            failed = True  # the transport reported the outage already, once
            log.debug("dead-letter pass stopped early: %s", exc)
        except BridgeError as exc:
            failed = True
            log.warning("dead-letter pass stopped early: %s; trying again in %.0f s", exc, self.policy.initial_delay_s)
        except Exception:
            # A bug here must not stop the apply loop; the records stay on the queue for later.
            failed = True
            log.exception("dead-letter pass failed; trying again in %.0f s", self.policy.initial_delay_s)
        finally:
            earliest = self._pass_earliest
            self._pass_earliest = None
            self.queue.close()  # whatever was received and not settled goes back to the queue
        now = time.time()
        if failed:
            self.next_pass_at = now + self.policy.initial_delay_s
            self.known_due = earliest if earliest is not None else self.next_pass_at
        elif report.looked_at >= self.max_per_pass:
            self.next_pass_at = now + self.policy.min_gap_s  # more records than one pass takes
            self.known_due = self.next_pass_at
        elif earliest is not None:
            self.next_pass_at = max(earliest, now + self.policy.min_gap_s)
            self.known_due = earliest
        else:
            self.next_pass_at = now + self.policy.max_delay_s  # other appliers' records, if any
        if report.busy():
            log.info(
                "dead-letter pass: %d record(s) looked at, %d re-attempted, %d still retrying, %d not yet"
                " due, %d moved to the parked queue; next pass in %.1f s",
                report.looked_at,
                report.reattempted,
                report.still_retrying,
                report.put_back,
                report.moved,
                self.next_pass_at - now,
            )
        return report

    def _settle(self, deliveries: list[Delivery], started: float, report: PassReport) -> bool:
        """Handle a received batch; False once the pass meets a record it already handled."""
        for delivery in deliveries:
            try:
                record = FailureRecord.decode(delivery.body)
            except DecodeError as exc:
                record = wrap_foreign(delivery.body, str(exc))
            if record.checked_at is not None and record.checked_at >= started:
                return False  # full circle: the rest go back to the queue when the pass closes it
            report.looked_at += 1
            self._handle(delivery, record, report)
        return True

    def _handle(self, delivery: Delivery, record: FailureRecord, report: PassReport) -> None:
        now = time.time()
        if record.state in TERMINAL:
            self._move(delivery, [record], report)
            return
        if record.kind not in RETRYABLE_KINDS:
            # Unsigned content is never applied automatically, whatever the record says.
            self.count("parked", max(1, len(record.changes)))
            self._move(
                delivery,
                [
                    record.with_(
                        state=State.PARKED, retry_at=None, message=f"{record.message} (not signed: replay by hand)"
                    )
                ],
                report,
            )
            return
        scheduled = record if record.retry_at is not None else self.policy.schedule(record)
        if scheduled.state is not State.RETRYING:  # written without a schedule, and already out of budget
            self.count("parked", max(1, len(record.changes)))
            self._move(delivery, [scheduled], report)
            return
        assert scheduled.retry_at is not None
        if scheduled.retry_at > now:
            # A time further out than the policy could have set (a forged record) is pulled in.
            self._put_back(
                delivery, scheduled.with_(retry_at=min(scheduled.retry_at, now + self.policy.max_delay_s)), report
            )
            return
        # Age and attempts are judged when an attempt fails: a due record always gets its attempt.
        report.reattempted += 1
        after = [r.with_(checked_at=now) if r.state is State.RETRYING else r for r in self.handle(scheduled)]
        for queue, group in self.parker.group(after):
            self.parker.put(queue, group)
        for r in after:
            if r.state is State.RETRYING and r.retry_at is not None:
                report.still_retrying += 1
                self._earliest(r.retry_at)
            else:
                report.moved += 1
        self.queue.ack(delivery)

    def _put_back(self, delivery: Delivery, record: FailureRecord, report: PassReport) -> None:
        assert record.retry_at is not None
        self.parker.put(self.parker.dlq, [record.with_(checked_at=time.time())])
        self.queue.ack(delivery)
        report.put_back += 1
        self._earliest(record.retry_at)

    def _move(self, delivery: Delivery, records: list[FailureRecord], report: PassReport) -> None:
        for record in records:
            log.error("dead-letter %s", record.summary())
        self.parker.put(self.parker.parked_queue, records)
        self.queue.ack(delivery)
        report.moved += len(records)

    def _earliest(self, at: float) -> None:
        self._pass_earliest = at if self._pass_earliest is None else min(self._pass_earliest, at)
