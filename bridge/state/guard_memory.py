"""The active-active loop guard's memory (``bridge.publish.loopguard``): per key, the newest
version seen within a short horizon, committed together with the publisher's checkpoint.

Three stores, as for checkpoints: in memory (tests, the model), a SQLite file beside the
checkpoint file (the daemon), and items in the DynamoDB checkpoint table (the serverless
handler, whose containers come and go).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws.errors import failure
from bridge.change import Change, Version
from bridge.errors import ConfigError, SourceError
from bridge.state.checkpoints import DynamoDBCheckpointStore
from bridge.state.sqlite import open_durable

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
            raise failure(exc, f"cannot read the loop guard's memory in {self._table}", SourceError) from exc
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
            raise failure(exc, f"cannot save the loop guard's memory in {self._table}", SourceError) from exc
        self._committed.update(self._pending)
        self._pending.clear()
