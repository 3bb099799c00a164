"""A model of N active-active replicas, for property tests.

What is modelled (a real DynamoDB cannot be scheduled adversarially): each replica's table,
tombstone table and stream, with exactly the conditional-write rules of
bridge.apply.target.TargetTable, kept in memory. What is real: the stream records handed
to the real ``parse_record``, and the real :class:`bridge.publish.loopguard.LoopGuard` that
decides what to ship and what to repair. Transport queues deliver in any order, duplicate,
and a publisher can crash and resume from an older checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.change import Change, Image, Operation, Outcome, Version, fingerprint
from bridge.publish.loopguard import LoopGuard
from bridge.source.records import parse_record
from bridge.state.guard_memory import MemoryStore

V, W, D = "_bridge_v", "_bridge_w", "_bridge_deleted"
# TargetTable's Unsettled: (key, version, item held after the put, outcome if no newer tombstone)
Unsettled = tuple[str, str, Image, Outcome]


def user(item: Image) -> Image:
    return {k: v for k, v in item.items() if not k.startswith("_bridge")}


@dataclass
class Replica:
    name: str
    skew: int
    world: World
    table: dict[str, Image] = field(default_factory=dict)
    tombs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stream: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    checkpoint: int = 0
    echoes: int = 0
    app_writes: list[int] = field(default_factory=list)  # ground truth: stream indexes the application wrote
    guard: LoopGuard = field(init=False)
    memory: MemoryStore = field(default_factory=MemoryStore)
    # puts applied whose tombstone read has not happened yet, per consumer process of this replica
    # (bridge-apply --processes N: N consumers on one queue, each with its own batches): each reads
    # them in batches after the writes of a delivery, so other writes (of any consumer's or replica's
    # delivery) may come between
    unsettled_by: dict[int, list[tuple[Unsettled, Change]]] = field(default_factory=dict)
    redelivered: list[Change] = field(default_factory=list)  # unacked when its consumer died

    def __post_init__(self) -> None:
        self.guard = LoopGuard(self, self.name, store=self.memory)

    # -- the LocalTable protocol, with TargetTable's rules --------------------------------
    version_attr = V
    write_attr = W
    deleted_attr = D

    def user_item(self, item: Image) -> Image:
        return user(item)

    def tombstone(self, keys: Image) -> dict[str, Any] | None:
        t = self.tombs.get(keys["k"]["S"])
        return {V: {"S": t["v"]}, D: {"SS": sorted(t["fps"])}} if t else None

    def apply(self, change: Change, *, repair: bool = False) -> Outcome:
        """TargetTable.apply: the writes, then at once the tombstone read of an unsettled put."""
        result = self.start(change, repair=repair)
        if isinstance(result, tuple):
            return self.settle(result)
        return result

    def start(self, change: Change, *, repair: bool = False) -> Outcome | Unsettled:
        """TargetTable.start: a put that created its item, or found its own version, is unsettled."""
        k, v = change.keys["k"]["S"], change.version.encode()
        cur = self.table.get(k)
        held = cur.get(V, {}).get("S") if cur else None
        if held is not None and (held > v or (held == v and not (repair and change.op is Operation.PUT))):
            if held == v and change.op is Operation.PUT:
                assert cur is not None
                return (k, v, cur, Outcome.DUPLICATE)  # a redelivery: read the tombstone again
            return Outcome.DUPLICATE if held == v else Outcome.STALE
        if change.op is Operation.PUT:
            assert change.new_image is not None
            self.world.seq += 1
            new = {**user(change.new_image), V: {"S": v}, W: {"S": f"w{self.world.seq}"}}
            self._write(k, new)
            return (k, v, new, Outcome.APPLIED) if cur is None else Outcome.APPLIED
        fp = fingerprint(cur) if cur else None
        tomb = self.tombs.get(k)
        if tomb and tomb["v"] > v:
            return Outcome.STALE
        dup = bool(tomb and tomb["v"] == v)
        tomb = self.tombs.setdefault(k, {"v": v, "fps": set()})
        tomb["v"] = v
        if fp:
            tomb["fps"].add(fp)
        if cur is None:
            return Outcome.DUPLICATE if dup else Outcome.APPLIED
        self._write(k, None)
        return Outcome.APPLIED

    def settle(self, put: Unsettled) -> Outcome:
        """TargetTable.settle, with the tombstone as it is now (read after the put)."""
        k, v, item, outcome = put
        tomb = self.tombs.get(k)
        if not tomb or tomb["v"] <= v:
            return outcome
        # undo an older put that arrived after a newer delete: whatever item is older than the tombstone
        tomb["fps"].add(fingerprint(item))
        cur = self.table.get(k)
        if cur is not None and cur.get(V, {}).get("S") is not None and cur[V]["S"] < tomb["v"]:
            tomb["fps"].add(fingerprint(cur))
            self._write(k, None)
        return Outcome.STALE

    # -- writes, as the application makes them -------------------------------------------
    def app_put(self, k: str, val: str) -> None:
        self._write(k, {"k": {"S": k}, "val": {"S": val}}, app=True)

    def app_update(self, k: str, extra: int) -> None:
        cur = self.table.get(k)
        new = dict(cur) if cur else {"k": {"S": k}}
        new["extra"] = {"N": str(extra)}  # an UpdateItem keeps every other attribute, _bridge_v too
        self._write(k, new, app=True)

    def app_delete(self, k: str) -> None:
        if k in self.table:  # deleting nothing makes no stream record
            self._write(k, None, app=True)

    def _write(self, k: str, new: Image | None, app: bool = False) -> None:
        old = self.table.get(k)
        if new is None:
            self.table.pop(k, None)
        else:
            self.table[k] = new
        self.world.seq += 1
        ddb: dict[str, Any] = {
            "Keys": {"k": {"S": k}},
            "SequenceNumber": f"{self.world.seq:021d}",
            "ApproximateCreationDateTime": self.world.clock + self.skew,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if old is not None:
            ddb["OldImage"] = old
        if new is not None:
            ddb["NewImage"] = new
        event = "REMOVE" if new is None else ("INSERT" if old is None else "MODIFY")
        if app:
            self.app_writes.append(len(self.stream))
        self.stream.append({"eventName": event, "eventVersion": "1.1", "dynamodb": ddb})

    # -- bridge-publish: stream -> guard -> the other replicas ----------------------------
    def publish(self, n: int, checkpoint: bool) -> None:
        for record in self.stream[self.cursor : self.cursor + n]:
            change = parse_record(record, key_names=("k",), origin=self.name, shard_id="shard-0")
            shipped = self.guard.admit(record, change)
            if shipped is not None:
                for other in self.world.replicas:
                    if other is not self:
                        self.world.queues[(self.name, other.name)].append(shipped)
            self.cursor += 1
        if checkpoint:
            self.checkpoint = self.cursor
            self.guard.commit()

    def crash(self) -> None:
        """The publisher dies; it resumes from its last checkpoint, with the memory saved with it."""
        self.memory.rollback()
        self.guard = LoopGuard(self, self.name, store=self.memory)
        self.cursor = self.checkpoint

    def deliver(self, change: Change, consumer: int = 0) -> None:
        if change.version.origin == self.name:
            self.echoes += 1
        result = self.start(change)
        if isinstance(result, tuple):
            self.unsettled_by.setdefault(consumer, []).append((result, change))

    def settle_some(self, n: int, consumer: int = 0) -> None:
        """A consumer's batched tombstone reads: its ``n`` oldest unsettled puts are decided."""
        pending = self.unsettled_by.get(consumer, [])
        done, self.unsettled_by[consumer] = pending[:n], pending[n:]
        for put, _ in done:
            self.settle(put)

    def applier_crash(self, consumer: int = 0) -> None:
        """One bridge-apply consumer dies after its puts, before their tombstone reads: nothing of
        them was acked, so the broker delivers them again (to any consumer)."""
        self.redelivered += [change for _, change in self.unsettled_by.pop(consumer, [])]


@dataclass
class World:
    names: list[str]
    skews: list[int]
    clock: int = 1_700_000_000
    seq: int = 10**20
    replicas: list[Replica] = field(default_factory=list)
    queues: dict[tuple[str, str], list[Change]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replicas = [Replica(n, s, self) for n, s in zip(self.names, self.skews, strict=True)]
        self.queues = {(a.name, b.name): [] for a in self.replicas for b in self.replicas if a is not b}

    def quiesce(self, rounds: int = 50) -> None:
        """Everyone publishes and delivers everything, until nothing moves."""
        for _ in range(rounds):
            moved = False
            for r in self.replicas:
                if r.cursor < len(r.stream):
                    r.publish(len(r.stream), checkpoint=True)
                    moved = True
            for (_, dst), queue in self.queues.items():
                target = next(r for r in self.replicas if r.name == dst)
                while queue:
                    target.deliver(queue.pop(0))
                    moved = True
            for r in self.replicas:
                while r.redelivered:
                    r.deliver(r.redelivered.pop(0))
                    moved = True
                for consumer, pending in list(r.unsettled_by.items()):
                    if pending:
                        r.settle_some(len(pending), consumer)
                        moved = True
            if not moved:
                return
        raise AssertionError("replication did not quiesce")

    def expected(self) -> dict[str, Image | None]:
        """Last writer wins over every application write ever made, by (time, origin, seq)."""
        best: dict[str, tuple[Version, Image | None]] = {}
        for r in self.replicas:
            for index in r.app_writes:
                record = r.stream[index]
                change = parse_record(record, key_names=("k",), origin=r.name, shard_id="shard-0")
                new = record["dynamodb"].get("NewImage")
                k = change.keys["k"]["S"]
                if k not in best or change.version > best[k][0]:
                    best[k] = (change.version, user(new) if new is not None else None)
        return {k: image for k, (_, image) in best.items()}
