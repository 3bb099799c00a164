"""Copying the items a table already holds, while its stream goes on being replicated.

A parallel scan reads the table segment by segment; every item becomes a put with a version
(see :func:`scanned_change`) and travels through the same :class:`~bridge.publish.sender.Sender`,
transport and last-writer-wins apply path as stream changes, so scan copies and stream changes
may arrive in any order. A segment's position (``LastEvaluatedKey``) is saved only after the
transport confirmed every item before it, so a killed copy resumes where it was confirmed and
never re-reads a finished segment. docs/bootstrap.md has the reasoning and its limits.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from bridge.aws.clock import checked_service_time
from bridge.change import Change, Position, Version, from_boto_image, to_boto_image
from bridge.copy.scan import ReadBudget, describe_counts, run_parallel, scan_segment
from bridge.deadletter.records import FailureRecord, Kind, State
from bridge.errors import RecordError
from bridge.publish import BatchLimits, Publisher, PublishStats
from bridge.publish.batching import chunks
from bridge.publish.sender import Sender
from bridge.source.records import parse_record
from bridge.state.scan_progress import ScanProgressStore

log = logging.getLogger(__name__)

# A scanned copy is versioned this far before the scan started. Stream timestamps are truncated
# (to the second by DynamoDB Streams) and come from DynamoDB's clock, and so does the scan start
# (bridge.aws.clock; a host clock further off than this refuses to copy): the margin covers the
# truncation and eventually consistent reads. A larger margin
# costs nothing (docs/bootstrap.md), a too small one lets a stale copy win.
COPY_MARGIN_S = 60.0
STREAM_RETENTION_S = 24 * 3600
MAX_WORKERS = 16
RUN_DOC = "run"

Display = Literal["auto", "bar", "log", "none"]


def scanned_change(
    item: dict[str, Any],
    *,
    key_names: Sequence[str],
    origin: str,
    timestamp_attribute: str | None,
    not_after_us: int,
    where: str,
    version_attribute: str | None = None,
) -> Change:
    """A scanned item (boto3 form) as a put that loses to every stream change made after it was read.

    Its version is the item's own timestamp attribute when it has one (the same rule as a stream
    put, with sequence number 0 so the stream's record of the same write wins the tie), else
    ``not_after_us`` (the scan start minus :data:`COPY_MARGIN_S`) with sequence number 0.
    Parsed as a stream record would be, so a malformed timestamp attribute fails the same way.
    Active-active (``version_attribute`` given): an item bridge-apply wrote keeps the version it
    was written with, so the copy can never beat a newer write made on the replica it came from.
    """
    record = {
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": "0", "ApproximateCreationDateTime": not_after_us, "NewImage": item},
    }
    try:
        change = parse_record(record, key_names=key_names, origin=origin, timestamp_attribute=timestamp_attribute)
    except RecordError as exc:
        reason = str(exc.__cause__ or exc).replace("dynamodb.NewImage", "item")
        raise RecordError(f"scanned item ({where}): {reason}", raw=item) from exc
    version = change.version
    stored = item.get(version_attribute) if version_attribute else None
    if stored is not None:
        try:
            version = Version.decode(stored["S"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(
                f"scanned item ({where}): {version_attribute} is not a bridge version: {exc}", raw=item
            ) from exc
    return dataclasses.replace(change, version=version, position=Position(where, change.key_token))


@dataclass(frozen=True)
class SegmentState:
    next_key: dict[str, Any] | None = None  # boto3 form; None with finished=False: not started
    items: int = 0
    pages: int = 0
    finished: bool = False

    def to_doc(self) -> dict[str, Any]:
        key = from_boto_image(self.next_key) if self.next_key else None
        return {"next_key": key, "items": self.items, "pages": self.pages, "finished": self.finished}

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> SegmentState:
        if not doc:
            return cls()
        key = doc.get("next_key")
        return cls(to_boto_image(key) if key else None, int(doc["items"]), int(doc["pages"]), bool(doc["finished"]))


@dataclass
class BootstrapStats:
    segments: int = 0
    segments_skipped: int = 0  # finished by an earlier run: not read again
    segments_resumed: int = 0  # part-read by an earlier run: continued from its saved position
    items: int = 0  # read by this run
    pages: int = 0
    rcu: float = 0.0
    parked: int = 0
    complete: bool = False
    already_complete: bool = False  # nothing to do: an earlier run finished the copy
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bootstrap:
    """Copies every item of ``table`` through senders from ``make_sender`` (one per worker thread)."""

    def __init__(
        self,
        client: Any,
        table: str,
        key_names: tuple[str, ...],
        progress: ScanProgressStore,
        make_sender: Callable[[], Sender],
        *,
        origin: str,
        timestamp_attribute: str | None = None,
        version_attribute: str | None = None,
        segments: int = 8,
        workers: int | None = None,
        rcu: float | None = None,
        page_items: int | None = None,
        limits: BatchLimits = BatchLimits(),
        force: bool = False,
        stop: threading.Event | None = None,
        display: Display = "auto",
        log_every_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.clock = clock  # the host's, checked against AWS's before a copy
        self.table = table
        self.key_names = key_names
        self.progress = progress
        self.make_sender = make_sender
        self.origin = origin
        self.timestamp_attribute = timestamp_attribute
        self.version_attribute = version_attribute
        self.segments = segments
        self.workers = workers or min(segments, MAX_WORKERS)
        self.page_items = page_items
        self.limits = limits
        self.force = force
        self.stop = stop or threading.Event()
        self.budget = ReadBudget(rcu, stop=self.stop)
        self.display = display
        self.log_every_s = log_every_s
        self.run_name = f"bootstrap:{table}"
        self.stats = BootstrapStats()
        self._lock = threading.Lock()
        self._states: dict[int, SegmentState] = {}
        self._total = segments
        self._not_after_us = 0
        self._meter: ProgressMeter | None = None
        self._local = threading.local()
        self._senders: list[Sender] = []

    # -- the copy -----------------------------------------------------------------------------

    def run(self) -> BootstrapStats:
        """Copy what is not copied yet; returns when done or stopped (progress is saved either way)."""
        started = time.monotonic()
        docs = self.progress.load(self.run_name)
        run_doc = docs.get(RUN_DOC)
        if run_doc and run_doc.get("complete") and not self.force:
            log.info("bootstrap of %s was completed before; not copying again (--bootstrap-force does)", self.table)
            self.stats.already_complete = self.stats.complete = True
            return self.stats
        if self.force and docs:
            log.info("bootstrap of %s: --bootstrap-force: discarding earlier progress and copying again", self.table)
            self.progress.reset(self.run_name)
            docs, run_doc = {}, None
        self._total = int(run_doc["segments"]) if run_doc else self.segments
        if run_doc is None:
            self.progress.save(self.run_name, RUN_DOC, {"segments": self._total, "complete": False}, 0)
        elif self._total != self.segments:
            log.warning(
                "bootstrap of %s: continuing with the %d segments of the interrupted copy"
                " (the %d asked for apply to a fresh copy only)",
                self.table,
                self._total,
                self.segments,
            )
        self._states = {i: SegmentState.from_doc(docs.get(_segment_name(i))) for i in range(self._total)}
        aws_now = checked_service_time(self.client, self.table, COPY_MARGIN_S, clock=self.clock)
        self._not_after_us = int((aws_now - COPY_MARGIN_S) * 1_000_000)
        todo = [i for i, s in self._states.items() if not s.finished]
        self.stats.segments = self._total
        self.stats.segments_skipped = self._total - len(todo)
        self.stats.segments_resumed = sum(1 for i in todo if self._states[i].next_key is not None)

        count, size = describe_counts(self.client, self.table)
        copied_before = sum(s.items for s in self._states.values())
        self._warn_about_retention(size)
        log.info(
            "bootstrap of %s: %d segments (%d done before, %d resumed), about %d items, %d workers%s",
            self.table,
            self._total,
            self.stats.segments_skipped,
            self.stats.segments_resumed,
            count,
            min(self.workers, max(1, len(todo))),
            f", read budget {self.budget.rate:g} RCU/s" if self.budget.rate else "",
        )
        self._meter = ProgressMeter(self.display, count, copied_before, self.log_every_s, self.table)
        try:
            run_parallel(self._copy_segment, todo, self.workers, self.stop)
        finally:
            self._meter.close()
            for sender in self._senders:
                sender.close()
            self._senders.clear()
            self.stats.seconds = time.monotonic() - started
        if all(s.finished for s in self._states.values()):
            self.progress.save(self.run_name, RUN_DOC, {"segments": self._total, "complete": True}, 1)
            self.stats.complete = True
            log.info(
                "bootstrap of %s complete: %d items read in %.1f s by this run",
                self.table,
                self.stats.items,
                self.stats.seconds,
            )
        else:
            log.info(
                "bootstrap of %s stopped with %d of %d segments done; a restart continues from the saved positions",
                self.table,
                sum(s.finished for s in self._states.values()),
                self._total,
            )
        return self.stats

    def close(self) -> None:
        self.progress.close()

    def _sender(self) -> Sender:
        """The calling thread's sender (its own broker connection), made on first use."""
        sender: Sender | None = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._local.sender = self.make_sender()
            with self._lock:
                self._senders.append(sender)
        return sender

    def _copy_segment(self, segment: int) -> None:
        state = self._states[segment]
        where = f"bootstrap/{self._not_after_us}/{segment}"
        sender = self._sender()
        pages = scan_segment(
            self.client,
            self.table,
            segment,
            self._total,
            start_key=state.next_key,
            budget=self.budget,
            page_items=self.page_items,
            stop=self.stop,
        )
        oversize = sender.stats.oversize
        for page in pages:
            changes = [c for c in (self._change(item, where, sender) for item in page.items) if c is not None]
            for chunk in chunks(changes, self.limits):
                sender.send(chunk)  # returns once the broker confirmed
            state = SegmentState(page.next_key, state.items + len(page.items), state.pages + 1, page.next_key is None)
            self.progress.save(self.run_name, _segment_name(segment), state.to_doc(), state.pages)
            self._states[segment] = state
            with self._lock:
                self.stats.items += len(page.items)
                self.stats.pages += 1
                self.stats.rcu += page.rcu
                self.stats.parked += sender.stats.oversize - oversize  # too large for the transport
            oversize = sender.stats.oversize
            assert self._meter is not None
            self._meter.advance(len(page.items), sum(s.finished for s in self._states.values()), self._total)

    def _change(self, item: dict[str, Any], where: str, sender: Sender) -> Change | None:
        try:
            return scanned_change(
                item,
                key_names=self.key_names,
                origin=self.origin,
                timestamp_attribute=self.timestamp_attribute,
                not_after_us=self._not_after_us,
                where=where,
                version_attribute=self.version_attribute,
            )
        except RecordError as exc:
            with self._lock:
                self.stats.parked += 1
            payload = _json_item(item)
            sender.parker.park(
                FailureRecord.from_exception(
                    Kind.RECORD, State.PARKED, exc, payload, origin=self.origin, table=self.table
                )
            )
            return None

    def _warn_about_retention(self, size_bytes: int) -> None:
        if not self.budget.rate or not size_bytes:
            return
        estimate_s = size_bytes / 4096 * 0.5 / self.budget.rate
        if estimate_s > STREAM_RETENTION_S:
            log.warning(
                "bootstrap of %s: %d bytes at %g RCU/s take about %.0f h, longer than the stream keeps records"
                " (24 h). The copy stays correct while this process keeps reading the stream, but a stop longer"
                " than the retention loses changes (exit 7). A larger --bootstrap-rcu shortens it.",
                self.table,
                size_bytes,
                self.budget.rate,
                estimate_s / 3600,
            )


def _segment_name(segment: int) -> str:
    return f"segment/{segment}"


def _json_item(item: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(from_boto_image(item))
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return orjson.dumps(item, default=str)


class ProgressMeter:
    """Progress: a rich bar (items, rate, ETA) on a terminal, a log line every so often otherwise."""

    def __init__(
        self, display: Display, total: int, done: int, log_every_s: float, table: str, console: Console | None = None
    ) -> None:
        if display == "auto":
            display = "bar" if sys.stderr.isatty() else "log"
        self.mode = display
        self.total = total
        self.done = done
        self.read = 0
        self.table = table
        self.log_every_s = log_every_s
        self.started = time.monotonic()
        self.last_log = self.started
        self.warned = False
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("bootstrap [bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8.0f} items/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[segments]}"),
                console=console or Console(stderr=True),
            )
            self._task = self._bar.add_task(
                table, total=max(total, done) or None, completed=done, rate=0.0, segments=""
            )
            self._bar.start()

    def advance(self, items: int, segments_done: int, segments: int) -> None:
        with self._lock:
            self.done += items
            self.read += items
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = self.read / elapsed
            # ItemCount is an estimate (refreshed about every 6 h): past it, the time left is unknown.
            eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else None
            if eta is not None and elapsed >= 60 and elapsed + eta > STREAM_RETENTION_S and not self.warned:
                self.warned = True
                log.warning(
                    "bootstrap of %s: at %.0f items/s the copy takes about %.0f h in all, longer than the"
                    " stream keeps records (24 h); the copy stays correct only while the stream keeps"
                    " being read",
                    self.table,
                    rate,
                    (elapsed + eta) / 3600,
                )
            if self._bar is not None and self._task is not None:
                self._bar.update(
                    self._task,
                    completed=self.done,
                    total=max(self.total, self.done) or None,
                    rate=rate,
                    segments=f"{segments_done}/{segments} segments",
                )
            elif self.mode == "log" and time.monotonic() - self.last_log >= self.log_every_s:
                self.last_log = time.monotonic()
                log.info(
                    "bootstrap of %s: %d of about %d items, %.0f items/s, ETA %s, %d/%d segments done",
                    self.table,
                    self.done,
                    self.total,
                    rate,
                    _duration(eta),
                    segments_done,
                    segments,
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def run_alongside(
    publisher: Publisher, bootstrap: Bootstrap, until_idle: float | None, stop: threading.Event
) -> tuple[PublishStats, BootstrapStats]:
    """Stream publishing in this thread, the copy in another; with ``until_idle``, exit once both are done.

    The stream reader starts at its checkpoint (or TRIM_HORIZON on a first start), a position
    from before the scan begins, so every change made while the copy runs is published too.
    """
    failure: list[BaseException] = []

    def copy() -> None:
        try:
            bootstrap.run()
        except BaseException as exc:  # handed to the main thread, which raises it
            failure.append(exc)
            stop.set()

    thread = threading.Thread(target=copy, name="bootstrap", daemon=True)
    thread.start()
    try:
        if until_idle is None:
            stats = publisher.run()
        else:
            # The stream may be idle long before the copy is done: keep publishing until it is.
            while thread.is_alive() and not stop.is_set():
                publisher.run(until_idle=0.5)
            stats = publisher.run(until_idle=until_idle) if not stop.is_set() else publisher.stats
    finally:
        if thread.is_alive():  # the stream side failed, or we were stopped: the copy saves and ends too
            stop.set()
        thread.join()
        bootstrap.close()
    if failure:
        raise failure[0]
    return stats, bootstrap.stats
