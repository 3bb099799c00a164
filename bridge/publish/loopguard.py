"""Active-active: keep the bridge's own writes out of the local stream's output, and repair
the one race conditional writes cannot see.

Each replica runs bridge-publish (its stream -> the others) and bridge-apply (the others ->
its table) on the same table. The publisher's :class:`LoopGuard` looks at every record of
the local stream, in order, and decides:

* a put whose write token ``_bridge_w`` changed between old and new image was written by
  the bridge (an applier, or a repair below; every bridge write sets a fresh token): not
  shipped. Applications never write ``_bridge*`` attributes.
* a REMOVE whose old image matches the fingerprint on the key's tombstone was the
  bridge's delete (the applier writes the tombstone, with that fingerprint, first): not
  shipped.
* anything else is the application's own write: shipped with its version
  ``(stream time or timestamp attribute, this origin, sequence number)``.

The race: an application write lands, and before this publisher has seen it a remote
write with an *older* version is applied over it (the applier could not know the local
write's version: the item does not carry one). Both writes are in the local stream, in
the order they happened. The guard remembers, per key, the newest version it has seen
for a short horizon; a record older than that means the table now holds a loser, and the
guard re-applies the winner through the normal last-writer-wins path. Every replica thus
ends with the same winner, without any attribute written by the application.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws import ErrorClass, classify, describe
from bridge.change import Change, Image, Operation, Outcome, Version, fingerprint
from bridge.errors import ApplyError, ConfigError, RecordError, SourceError, SystemicError
from bridge.source.records import wire_image
from bridge.state.sqlite import open_durable

log = logging.getLogger(__name__)


@dataclass
class GuardStats:
    local_writes: int = 0  # application writes shipped
    own_writes_suppressed: int = 0  # bridge writes recognised and not shipped (echo prevented)
    repairs: int = 0  # losers overwritten by the known winner
    superseded: int = 0  # application writes that lose to a version already everywhere: not shipped


class LocalTable(Protocol):
    """What the guard needs of its own table (:class:`~bridge.apply.target.TargetTable` has it)."""

    @property
    def version_attr(self) -> str: ...

    @property
    def write_attr(self) -> str: ...

    @property
    def deleted_attr(self) -> str: ...

    def user_item(self, item: Image) -> Image: ...

    def tombstone(self, keys: Image) -> dict[str, Any] | None: ...

    def apply(self, change: Change, *, repair: bool = False) -> Outcome: ...


Remembered = tuple[float, Version, Change]  # when seen (epoch s), newest version, the change carrying it


class MemoryStore:
    """The guard's per-key memory, committed with the publisher's checkpoint.

    After a crash the publisher resumes from its checkpoint; the memory must be the one
    that went with that checkpoint, or a key overwritten just before the crash is never
    repaired. ``rollback`` is what a restart sees.
    """

    def __init__(self) -> None:
        self._committed: dict[str, Remembered] = {}
        self._pending: dict[str, Remembered] = {}

    def get(self, token: str) -> Remembered | None:
        return self._pending.get(token) or self._committed.get(token)

    def put(self, token: str, value: Remembered) -> None:
        self._pending[token] = value

    def commit(self, older_than: float) -> None:
        self._committed.update(self._pending)
        self._pending.clear()
        for token in [t for t, (seen, _, _) in self._committed.items() if seen < older_than]:
            del self._committed[token]

    def rollback(self) -> None:
        self._pending.clear()


class SqliteStore(MemoryStore):
    """:class:`MemoryStore` kept in a SQLite file beside the checkpoint."""

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            # Durable like the checkpoint it is committed with: a memory older than its checkpoint
            # after a power loss would leave a key overwritten just before it unrepaired.
            self._db = open_durable(
                Path(path), "CREATE TABLE IF NOT EXISTS newest (token TEXT PRIMARY KEY, seen REAL, change BLOB)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"loop guard memory {path}: cannot open: {exc}") from exc
        for token, seen, blob in self._db.execute("SELECT token, seen, change FROM newest"):
            change = Change.from_wire(orjson.loads(blob))
            self._committed[token] = (seen, change.version, change)

    def commit(self, older_than: float) -> None:
        rows = [(t, seen, orjson.dumps(c.to_wire())) for t, (seen, _, c) in self._pending.items()]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO newest VALUES (?, ?, ?)", rows)
            self._db.execute("DELETE FROM newest WHERE seen < ?", (older_than,))
        super().commit(older_than)


class DynamoDBStore(MemoryStore):
    """:class:`MemoryStore` kept in the DynamoDB checkpoint table (``dynamodb://TABLE``), for
    publishers without a disk of their own: the serverless handler, whose containers come and go.

    One item per key (hash key ``guard|TABLE|KEY TOKEN``) beside the checkpoints. Nothing is cached
    across :meth:`begin` calls: another container may have seen the key since (a shard's batches
    go to whichever container is free), so each batch reads what it needs, strongly consistent.
    Items carry ``expires_at`` (epoch s) for the table's TTL; an expired one is ignored on read.
    """

    def __init__(self, client: Any, table_name: str, scope: str, horizon_s: float = 600.0) -> None:
        super().__init__()
        from bridge.state.checkpoints import DynamoDBCheckpointStore

        self._client = client
        self._table = table_name
        self._hash = DynamoDBCheckpointStore.HASH_KEY
        self._prefix = f"guard|{scope}|"
        self._horizon_s = horizon_s

    def begin(self) -> None:
        """A new batch: forget what was read for the last one."""
        self._pending.clear()
        self._committed.clear()

    def get(self, token: str) -> Remembered | None:
        known = super().get(token)
        if known is not None:
            return known
        try:
            item = self._client.get_item(
                TableName=self._table, Key={self._hash: {"S": self._prefix + token}}, ConsistentRead=True
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:  # the record is fine, the store is not
            raise _store_error("read", self._table, exc) from exc
        if item is None or float(item["seen"]["N"]) < time.time() - self._horizon_s:
            return None
        change = Change.from_wire(orjson.loads(item["change"]["B"]))
        value = (float(item["seen"]["N"]), change.version, change)
        self._committed[token] = value
        return value

    def commit(self, older_than: float) -> None:
        rows = [
            {
                "PutRequest": {
                    "Item": {
                        self._hash: {"S": self._prefix + token},
                        "seen": {"N": f"{seen:.6f}"},
                        "expires_at": {"N": str(int(seen + self._horizon_s) + 1)},
                        "change": {"B": orjson.dumps(change.to_wire())},
                    }
                }
            }
            for token, (seen, _, change) in self._pending.items()
        ]
        try:
            for start in range(0, len(rows), 25):  # BatchWriteItem takes 25 items
                request = {self._table: rows[start : start + 25]}
                while request:
                    request = self._client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
        except (BotoCoreError, ClientError) as exc:
            raise _store_error("save", self._table, exc) from exc
        self._committed.update(self._pending)
        self._pending.clear()


def _store_error(action: str, table: str, exc: Exception) -> Exception:
    """Table gone or access refused stops the line; anything else fails this batch only."""
    what = f"cannot {action} the loop guard's memory in {table}: {describe(exc)}"
    return SystemicError(what) if classify(exc) is ErrorClass.SYSTEMIC else SourceError(what)


class LoopGuard:
    def __init__(
        self, local: LocalTable, origin: str, *, store: MemoryStore | None = None, horizon_s: float = 600.0
    ) -> None:
        self.local = local
        self.origin = origin
        self.horizon_s = horizon_s
        self.stats = GuardStats()
        # key token -> (when seen, newest version, the change that carries it)
        self.store = store if store is not None else MemoryStore()

    def commit(self) -> None:
        """The publisher checkpointed everything admitted so far."""
        self.store.commit(older_than=time.time() - self.horizon_s)

    def admit(self, record: dict[str, Any], change: Change) -> Change | None:
        """The change to ship for this local stream record, or None."""
        own = self._own_write(record, change)
        newest = self._reconcile(own or change)
        if own is not None:
            self.stats.own_writes_suppressed += 1
            return None
        if not newest:
            self.stats.superseded += 1  # loses to a version every replica already has: no need to ship
            return None
        self.stats.local_writes += 1
        if change.new_image is not None:
            image = self.local.user_item(change.new_image)
            return replace(change, new_image=image)
        return change

    def _own_write(self, record: dict[str, Any], change: Change) -> Change | None:
        """If the bridge wrote this record, the change it applied (with its version)."""
        attr, token = self.local.version_attr, self.local.write_attr
        ddb = record.get("dynamodb") or {}
        old = wire_image(ddb.get("OldImage"), "dynamodb.OldImage")  # parse_record validated it already
        if change.op is Operation.PUT:
            assert change.new_image is not None
            new_w = change.new_image.get(token, {}).get("S")
            if new_w is None or new_w == old.get(token, {}).get("S"):
                return None
            new_v = change.new_image.get(attr, {}).get("S", "")
            try:
                version = Version.decode(new_v)
            except ValueError as exc:
                raise RecordError(f"{attr} holds {new_v!r}, not a bridge version", record) from exc
            return replace(change, version=version, new_image=self.local.user_item(change.new_image))
        if "OldImage" not in ddb:
            raise RecordError("active-active needs old images: set the stream to NEW_AND_OLD_IMAGES", record)
        try:
            tomb = self.local.tombstone(change.keys)
        except ApplyError as exc:
            # Not the record's fault: stop, and resume from the checkpoint (nothing is lost).
            raise SourceError(f"cannot read the tombstone to classify a delete: {exc}") from exc
        if tomb and fingerprint(old) in tomb.get(self.local.deleted_attr, {}).get("SS", ()):
            return replace(change, version=Version.decode(tomb[attr]["S"]))
        return None

    def _reconcile(self, seen: Change) -> bool:
        """Remember ``seen`` if it is the newest for its key (True); else repair the key (False)."""
        token = seen.key_token
        known = self.store.get(token)
        if known is not None and seen.version < known[1]:
            winner = known[2]
            log.info(
                "repairing a key overwritten by an older version (%s < %s)",
                seen.version.encode(),
                winner.version.encode(),
            )
            try:
                self.local.apply(winner, repair=True)
            except ApplyError as exc:
                raise SourceError(f"repair of a key overwritten by an older version failed: {exc}") from exc
            self.stats.repairs += 1
            return False
        self.store.put(token, (time.time(), seen.version, seen))
        return True
