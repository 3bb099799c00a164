"""Where each segment of a resumable scan got to, kept beside the stream checkpoints.

A stream checkpoint is a sequence number, compared numerically; a scan position is a
``LastEvaluatedKey`` (a whole key, possibly binary), which the checkpoint store cannot hold. So
the progress lives in the same place as the checkpoints (the same SQLite file, or the same
``dynamodb://TABLE``) under a name of its own, as one small JSON document per segment, with a
``step`` counter that only moves forward: a late or repeated save cannot undo progress.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws.errors import failure
from bridge.errors import BridgeError, ConfigError, SourceError
from bridge.state.checkpoints import DynamoDBCheckpointStore, SqliteCheckpointStore, open_checkpoint_store
from bridge.state.sqlite import open_durable

Doc = dict[str, Any]


class ScanProgressStore(Protocol):
    def load(self, run: str) -> dict[str, Doc]:
        """Every document saved for ``run``, by name."""

    def save(self, run: str, name: str, doc: Doc, step: int) -> None:
        """Durable when it returns; ignored when a later ``step`` is stored already."""

    def reset(self, run: str) -> None:
        """Forget ``run`` (a forced fresh start)."""

    def close(self) -> None: ...


class SqliteScanProgress:
    """A table ``scan_progress`` in the checkpoint SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self._db = open_durable(
                self.path,
                "CREATE TABLE IF NOT EXISTS scan_progress (run TEXT NOT NULL, name TEXT NOT NULL,"
                " step INTEGER NOT NULL, doc TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (run, name))",
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"progress store {self.path}: cannot open: {exc}") from exc

    def load(self, run: str) -> dict[str, Doc]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT name, doc FROM scan_progress WHERE run = ?", (run,)).fetchall()
            except sqlite3.Error as exc:
                raise SourceError(f"progress store {self.path}: cannot read: {exc}") from exc
        return {name: orjson.loads(doc) for name, doc in rows}

    def save(self, run: str, name: str, doc: Doc, step: int) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO scan_progress (run, name, step, doc, updated_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (run, name) DO UPDATE SET step = excluded.step, doc = excluded.doc,"
                    " updated_at = excluded.updated_at WHERE excluded.step >= scan_progress.step",
                    (run, name, step, orjson.dumps(doc).decode(), time.time()),
                )
            except sqlite3.Error as exc:
                raise SourceError(f"progress store {self.path}: cannot save {run} {name}: {exc}") from exc

    def reset(self, run: str) -> None:
        with self._lock:
            try:
                self._db.execute("DELETE FROM scan_progress WHERE run = ?", (run,))
            except sqlite3.Error as exc:
                raise SourceError(f"progress store {self.path}: cannot reset {run}: {exc}") from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


class DynamoDBScanProgress:
    """Items in the checkpoint table: hash key ``"{run}|{name}"``, the document as JSON text."""

    HASH_KEY = DynamoDBCheckpointStore.HASH_KEY

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    def _fail(self, action: str, exc: Exception) -> BridgeError:
        return failure(exc, f"progress table {self.table_name!r}: cannot {action}", SourceError)

    def load(self, run: str) -> dict[str, Doc]:
        result: dict[str, Doc] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "FilterExpression": "#sid = :sid",
            "ExpressionAttributeNames": {"#sid": "stream_id"},
            "ExpressionAttributeValues": {":sid": {"S": run}},
        }
        while True:
            try:
                page = self._client.scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(f"read {run}", exc) from exc
            for item in page.get("Items", []):
                if "doc" in item:
                    result[item["shard_id"]["S"]] = orjson.loads(item["doc"]["S"])
            if "LastEvaluatedKey" not in page:
                return result
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save(self, run: str, name: str, doc: Doc, step: int) -> None:
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    self.HASH_KEY: {"S": f"{run}|{name}"},
                    "stream_id": {"S": run},
                    "shard_id": {"S": name},
                    "step": {"N": str(step)},
                    "doc": {"S": orjson.dumps(doc).decode()},
                    "updated_at": {"N": f"{time.time():.6f}"},
                },
                ConditionExpression="attribute_not_exists(#step) OR #step <= :step",
                ExpressionAttributeNames={"#step": "step"},
                ExpressionAttributeValues={":step": {"N": str(step)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._fail(f"save {run} {name}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"save {run} {name}", exc) from exc

    def reset(self, run: str) -> None:
        for name in self.load(run):
            try:
                self._client.delete_item(TableName=self.table_name, Key={self.HASH_KEY: {"S": f"{run}|{name}"}})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(f"reset {run}", exc) from exc

    def close(self) -> None:
        """The client belongs to the caller; nothing to release."""


def open_scan_progress(spec: str, dynamodb_client_factory: Callable[[], Any] | None = None) -> ScanProgressStore:
    """The progress store beside the checkpoint store ``spec`` (a SQLite path or ``dynamodb://TABLE``)."""
    # Opening the checkpoint store validates the spec and creates the DynamoDB table if needed.
    store = open_checkpoint_store(spec, dynamodb_client_factory)
    try:
        if isinstance(store, SqliteCheckpointStore):
            return SqliteScanProgress(store.path)
        if isinstance(store, DynamoDBCheckpointStore) and dynamodb_client_factory is not None:
            return DynamoDBScanProgress(dynamodb_client_factory(), store.table_name)
    finally:
        store.close()
    raise ConfigError(f"checkpoint store {spec!r} cannot hold scan progress")
