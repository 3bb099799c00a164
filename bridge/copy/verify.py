"""``bridge verify``: are two tables the same, item for item (bridge attributes aside)? And repair.

Three passes, so memory stays small however large the tables are:

1. **Digests.** A parallel scan of both tables (at the same time) puts every item in one of K
   buckets by a hash of its key, and sums a 128-bit digest of each item per bucket. Equal
   buckets hold equal items (to within a 2^-128 chance); only the K sums are kept.
2. **Keys.** Only if buckets differ: both tables are scanned again, keeping for the items of
   differing buckets only their key and digest, and compared key by key.
3. **Re-check.** Each key found is read again, strongly consistent, on both sides; keys that
   agree now were changes still in flight and are not reported.

Reading is not reduced: pass 1 reads both tables whole, pass 2 (only when something differs)
reads them whole again. What the digests save is memory (K sums plus the differing buckets'
keys, not the tables) and the work of comparing. docs/bootstrap.md has more.

``--repair`` then publishes, for every differing key, the source's current item (or a delete
when the source has none) through the normal transport, versioned so that it beats the target's
wrong state but never a real write made after it was read (:class:`Repairer`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws.clock import checked_service_time
from bridge.aws.errors import failure
from bridge.change import Change, Image, Operation, Position, Version, from_boto_image, key_token, to_boto_image
from bridge.copy.bootstrap import COPY_MARGIN_S, scanned_change
from bridge.copy.compare import DEFAULT_PREFIX, canonical_bytes, item_digest, key_bytes
from bridge.copy.scan import ReadBudget, describe_counts, run_parallel, scan_segment
from bridge.errors import ConfigError, RecordError, SourceError
from bridge.publish.sender import Sender
from bridge.source.records import timestamp_us
from bridge.transport.backoff import Backoff

log = logging.getLogger(__name__)
# UnprocessedKeys of a BatchGetItem that succeeded: botocore does not retry those, this loop does.
UNPROCESSED_BACKOFF = Backoff(initial_s=0.05, max_s=2.0)

DIFFERENT_EXIT = 8  # distinct from every error's exit code (1-7)
MASK = (1 << 128) - 1
MAX_SEQ = 10**40 - 1  # the largest sequence number a version can hold
BATCH_GET = 100  # BatchGetItem's limit

Kind = Literal["only_in_source", "only_in_target", "different"]


def _as_is(image: Image) -> Image:
    return image


@dataclass(frozen=True)
class Side:
    client: Any
    table: str
    name: str  # "source" or "target", for messages
    # What is compared of each item: the source's through the pipeline's projection (the attributes that
    # never leave it), the target's without the attributes it keeps of its own (exclude_mode keep).
    view: Callable[[Image], Image] = _as_is


@dataclass(frozen=True)
class KeyDiff:
    key: Image  # wire form
    kind: Kind

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind}


@dataclass
class RepairReport:
    sent: int = 0
    confirmed: int = 0  # equal on both sides after the repair was applied
    settled: int = 0  # equal already when re-read for the repair: nothing to send
    refused: list[dict[str, Any]] = field(default_factory=list)  # target holds a newer version
    unconfirmed: list[Image] = field(default_factory=list)  # sent, not seen applied in time

    @property
    def complete(self) -> bool:
        return not self.refused and not self.unconfirmed

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "confirmed": self.confirmed,
            "settled": self.settled,
            "refused": self.refused,
            "unconfirmed": self.unconfirmed,
        }


@dataclass
class VerifyResult:
    source_items: int = 0
    target_items: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    differences: list[KeyDiff] = field(default_factory=list)
    settled: int = 0  # differed in the scan, agreed when re-read: changes in flight
    rcu: float = 0.0
    seconds: float = 0.0
    repair: RepairReport | None = None

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        """Identical, or every difference repaired and seen applied."""
        return self.identical or (self.repair is not None and self.repair.complete)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "source_items": self.source_items,
            "target_items": self.target_items,
            "buckets": self.buckets,
            "differing_buckets": self.differing_buckets,
            "differences": [d.as_dict() for d in self.differences],
            "settled": self.settled,
            "rcu": round(self.rcu, 1),
            "seconds": round(self.seconds, 2),
            "repair": self.repair.as_dict() if self.repair is not None else None,
        }


def table_keys(client: Any, table: str, side: str) -> tuple[str, ...]:
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise ConfigError(f"{side} table {table!r} does not exist") from exc
        raise failure(exc, f"cannot describe {side} table {table!r}", SourceError) from exc
    except BotoCoreError as exc:
        raise failure(exc, f"cannot describe {side} table {table!r}", SourceError) from exc
    return tuple(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))


def bucket_of(key: bytes, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % buckets


class Verifier:
    def __init__(
        self,
        source: Side,
        target: Side,
        *,
        prefix: str = DEFAULT_PREFIX,
        segments: int = 4,
        buckets: int | None = None,
        rcu: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.prefix = prefix
        self.segments = segments
        self.buckets = buckets
        self.stop = stop or threading.Event()
        # One budget per table: the two may be in different accounts, each with its own capacity.
        self._budgets = {source.name: ReadBudget(rcu, stop=self.stop), target.name: ReadBudget(rcu, stop=self.stop)}
        key_names = table_keys(source.client, source.table, source.name)
        target_keys = table_keys(target.client, target.table, target.name)
        if key_names != target_keys:
            raise ConfigError(
                f"key schemas differ: source {source.table!r} has {list(key_names)},"
                f" target {target.table!r} has {list(target_keys)}"
            )
        self.key_names = key_names
        self._lock = threading.Lock()

    def run(self) -> VerifyResult:
        started = time.monotonic()
        result = VerifyResult()
        count, _ = describe_counts(self.source.client, self.source.table)
        k = self.buckets or min(max(count // 64, 256), 1 << 20)
        result.buckets = k
        sides = (self.source, self.target)
        sums = {s.name: [0] * k for s in sides}
        counts = {s.name: [0] * k for s in sides}

        def digest_pass(job: int) -> None:
            side = sides[job // self.segments]
            local: dict[int, list[int]] = {}
            for item in self._items(side, job % self.segments):
                key = key_bytes(item, self.key_names)
                acc = local.setdefault(bucket_of(key, k), [0, 0])
                acc[0] = (acc[0] + item_digest(item, self.prefix)) & MASK
                acc[1] += 1
            with self._lock:
                for b, (total, n) in local.items():
                    sums[side.name][b] = (sums[side.name][b] + total) & MASK
                    counts[side.name][b] += n

        log.info("verify: pass 1: digests of %s and %s in %d buckets", self.source.table, self.target.table, k)
        self._parallel(digest_pass)
        result.source_items = sum(counts[self.source.name])
        result.target_items = sum(counts[self.target.name])
        differing = {
            b
            for b in range(k)
            if (sums[self.source.name][b], counts[self.source.name][b])
            != (sums[self.target.name][b], counts[self.target.name][b])
        }
        result.differing_buckets = len(differing)
        if differing:
            log.info("verify: pass 2: %d of %d buckets differ; comparing their keys", len(differing), k)
            candidates = self._key_pass(differing, k)
            log.info("verify: pass 3: re-reading %d differing keys on both sides", len(candidates))
            result.differences = self._recheck(candidates)
            result.settled = len(candidates) - len(result.differences)
        result.rcu = sum(b.spent for b in self._budgets.values())
        result.seconds = time.monotonic() - started
        return result

    def _items(self, side: Side, segment: int) -> Iterator[Image]:
        for page in scan_segment(
            side.client, side.table, segment, self.segments, budget=self._budgets[side.name], stop=self.stop
        ):
            for raw in page.items:
                yield side.view(from_boto_image(raw))
        if self.stop.is_set():
            raise SourceError(f"verify of {side.name} table {side.table!r} interrupted")

    def _parallel(self, fn: Any) -> None:
        run_parallel(fn, list(range(2 * self.segments)), 2 * self.segments, self.stop)

    def _key_pass(self, differing: set[int], k: int) -> list[KeyDiff]:
        sides = (self.source, self.target)
        found: dict[str, dict[bytes, tuple[Image, int]]] = {s.name: {} for s in sides}

        def key_pass(job: int) -> None:
            side = sides[job // self.segments]
            local = {}
            for item in self._items(side, job % self.segments):
                key = key_bytes(item, self.key_names)
                if bucket_of(key, k) in differing:
                    local[key] = ({n: item[n] for n in self.key_names}, item_digest(item, self.prefix))
            with self._lock:
                found[side.name].update(local)

        self._parallel(key_pass)
        src, dst = found[self.source.name], found[self.target.name]
        diffs = [KeyDiff(src[key][0], "only_in_source") for key in src.keys() - dst.keys()]
        diffs += [KeyDiff(dst[key][0], "only_in_target") for key in dst.keys() - src.keys()]
        diffs += [KeyDiff(src[key][0], "different") for key in src.keys() & dst.keys() if src[key][1] != dst[key][1]]
        return diffs

    def _recheck(self, candidates: Sequence[KeyDiff]) -> list[KeyDiff]:
        still = []
        for chunk in _chunked(candidates, BATCH_GET):
            keys = [d.key for d in chunk]
            src = read_items(self.source, keys, self.key_names)
            dst = read_items(self.target, keys, self.key_names)
            for d in chunk:
                kb = key_bytes(d.key, self.key_names)
                kind = _kind(src.get(kb), dst.get(kb), self.prefix)
                if kind is not None:
                    still.append(KeyDiff(d.key, kind))
        return still


def _kind(src: Image | None, dst: Image | None, prefix: str) -> Kind | None:
    if src is None and dst is None:
        return None
    if dst is None:
        return "only_in_source"
    if src is None:
        return "only_in_target"
    return None if canonical_bytes(src, prefix) == canonical_bytes(dst, prefix) else "different"


def _chunked(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def read_items(side: Side, keys: Sequence[Image], key_names: Sequence[str]) -> dict[bytes, Image]:
    """Strongly consistent BatchGetItem of up to 100 wire-form keys -> wire-form items by key bytes."""
    request: dict[str, Any] = {side.table: {"Keys": [to_boto_image(k) for k in keys], "ConsistentRead": True}}
    found: dict[bytes, Image] = {}
    attempt = 0
    while request:
        try:
            response = side.client.batch_get_item(RequestItems=request)
        except (ClientError, BotoCoreError) as exc:
            raise failure(
                exc, f"reading {len(keys)} keys from {side.name} table {side.table!r} failed", SourceError
            ) from exc
        for raw in response.get("Responses", {}).get(side.table, []):
            item = side.view(from_boto_image(raw))
            found[key_bytes(item, key_names)] = item
        request = response.get("UnprocessedKeys") or {}
        if request:  # throttled: back off before asking for the rest
            attempt += 1
            time.sleep(UNPROCESSED_BACKOFF.delay(attempt))
    return found


class Repairer:
    """Re-publishes the source's current state of differing keys through the normal apply path.

    Versions (docs/bootstrap.md, "Repair"): a repair is a copy read at time R, so it gets the
    same version a scanned copy would, with R as the scan start: the item's own timestamp
    attribute (then sequence number :data:`MAX_SEQ`, to beat the target's copy of that same
    write), else ``R - COPY_MARGIN_S``. A delete (the source has no item) gets ``R - margin``,
    or one microsecond past the target item's timestamp attribute if that is later (the stream
    rule for deletes). A repair that would not beat the target's stored version is not sent
    (reported as refused): the target holds a write too recent to overrule safely.
    """

    def __init__(
        self,
        sender: Sender,
        source: Side,
        target: Side,
        key_names: tuple[str, ...],
        *,
        origin: str,
        timestamp_attribute: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        margin_s: float = COPY_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # the host's, checked against AWS's before a repair
        self.sender = sender
        self.source = source
        self.target = target
        self.key_names = key_names
        self.origin = origin
        self.timestamp_attribute = timestamp_attribute
        self.prefix = prefix
        self.margin_s = margin_s

    def repair(self, diffs: Sequence[KeyDiff], wait_s: float = 60.0) -> RepairReport:
        report = RepairReport()
        # AWS's time, taken before the reads: never later than them.
        read_at_us = int(
            checked_service_time(self.source.client, self.source.table, self.margin_s, clock=self.clock) * 1e6
        )
        not_after_us = read_at_us - int(self.margin_s * 1_000_000)
        where = f"repair/{read_at_us}"
        sent: list[Image] = []
        for chunk in _chunked(diffs, BATCH_GET):
            keys = [d.key for d in chunk]
            src = read_items(self.source, keys, self.key_names)
            dst = read_items(self.target, keys, self.key_names)
            changes = []
            for d in chunk:
                kb = key_bytes(d.key, self.key_names)
                if _kind(src.get(kb), dst.get(kb), self.prefix) is None:
                    report.settled += 1
                    continue
                change = self._change(d.key, src.get(kb), dst.get(kb), not_after_us, where)
                held = self._stored_version(dst.get(kb))
                if held is not None and held >= change.version:
                    report.refused.append(
                        {"key": d.key, "target_version": held.encode(), "repair_version": change.version.encode()}
                    )
                    continue
                changes.append(change)
                sent.append(d.key)
            self.sender.send(changes)
            report.sent += len(changes)
        if report.refused:
            log.warning(
                "verify --repair: %d keys not repaired: the target holds a version newer than the repair"
                " could safely claim (a write under %.0f s old, or a clock problem); run verify again later",
                len(report.refused),
                self.margin_s,
            )
        report.unconfirmed = self._await(sent, wait_s)
        report.confirmed = len(sent) - len(report.unconfirmed)
        return report

    def _change(self, key: Image, src: Image | None, dst: Image | None, not_after_us: int, where: str) -> Change:
        if src is not None:
            change = scanned_change(
                to_boto_image(src),
                key_names=self.key_names,
                origin=self.origin,
                timestamp_attribute=self.timestamp_attribute,
                not_after_us=not_after_us,
                where=where,
            )
            if self.timestamp_attribute and self.timestamp_attribute in src:
                return Change(
                    change.keys,
                    Operation.PUT,
                    Version(change.version.ts_us, self.origin, MAX_SEQ),
                    change.new_image,
                    change.position,
                )
            return change
        ts = not_after_us
        if self.timestamp_attribute and dst is not None and self.timestamp_attribute in dst:
            value = dst[self.timestamp_attribute]
            ((tag, inner),) = value.items()
            try:
                ts = max(ts, timestamp_us(inner) + 1) if tag in ("N", "S") else ts
            except ValueError as exc:
                raise RecordError(f"target item's {self.timestamp_attribute} is not a timestamp: {exc}") from exc
        keys = {n: key[n] for n in self.key_names}
        return Change(keys, Operation.DELETE, Version(ts, self.origin, 0), position=Position(where, key_token(keys)))

    def _stored_version(self, item: Image | None) -> Version | None:
        value = (item or {}).get(f"{self.prefix}_v")
        if not value or "S" not in value:
            return None
        try:
            return Version.decode(value["S"])
        except ValueError:
            return None

    def _await(self, keys: list[Image], wait_s: float) -> list[Image]:
        """Re-read the repaired keys until both sides agree or ``wait_s`` passed; the keys still differing."""
        pending = list(keys)
        deadline = time.monotonic() + wait_s
        while pending:
            still = []
            for chunk in _chunked(pending, BATCH_GET):
                src = read_items(self.source, chunk, self.key_names)
                dst = read_items(self.target, chunk, self.key_names)
                still += [
                    k
                    for k in chunk
                    if _kind(src.get(kb := key_bytes(k, self.key_names)), dst.get(kb), self.prefix) is not None
                ]
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        return pending
