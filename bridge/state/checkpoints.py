"""Where the publisher remembers how far each shard was confirmed by the transport.

A checkpoint is per (stream, shard). ``stream_id`` is any stable name for the stream (a DynamoDB stream
ARN, a Kinesis stream name), so other consumers can reuse a store. Saves never move a checkpoint
backwards (sequence numbers are compared as numbers, not strings) and ``finished`` is sticky, so a
late or repeated confirm cannot lose progress.

A checkpoint with no sequence number that is not finished is a marker :class:`~bridge.source.streams.
StreamReader` leaves for a shard it started at LATEST (nothing confirmed yet).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from bridge.errors import ConfigError, SourceError

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "SqliteCheckpointStore",
    "later_sequence",
    "open_checkpoint_store",
    "sortable_sequence",
]

SEQ_DIGITS = 40
LONG_SEQ_DIGITS = 129  # Kinesis Data Streams: 0|[1-9][0-9]{0,128}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sequence_number: str | None  # last confirmed record; None: nothing confirmed
    finished: bool  # the shard was read to its end and everything in it confirmed


class CheckpointStore(Protocol):
    def load(self, stream_id: str) -> dict[str, Checkpoint]:
        """Every shard's checkpoint for one stream, by shard id."""

    def save(self, stream_id: str, shard_id: str, sequence_number: str | None, finished: bool = False) -> None:
        """Record progress; durable when it returns; never moves a checkpoint backwards."""

    def close(self) -> None: ...


def sortable_sequence(sequence_number: str) -> str:
    """The sequence number left-padded to 40 digits, so string order is numeric order.

    Kinesis sequence numbers are longer (56 digits today, up to 129): those are padded to 129
    digits behind a ``~``, which sorts after every digit, so they stay above every 40-digit one
    (as they are numerically) and stored 40-digit values keep their meaning.
    """
    if not (sequence_number.isascii() and sequence_number.isdigit() and len(sequence_number) <= LONG_SEQ_DIGITS):
        raise ValueError(f"sequence number must be 1-{LONG_SEQ_DIGITS} decimal digits, got {sequence_number!r:.60}")
    significant = sequence_number.lstrip("0") or "0"
    if len(significant) <= SEQ_DIGITS:
        return significant.zfill(SEQ_DIGITS)
    return "~" + significant.zfill(LONG_SEQ_DIGITS)


def later_sequence(a: str | None, b: str | None) -> str | None:
    """The numerically larger of two sequence numbers (None counts as lowest)."""
    if a is None or b is None:
        return b if a is None else a
    return b if sortable_sequence(b) > sortable_sequence(a) else a


class SqliteCheckpointStore:
    """Embedded default: one SQLite file in WAL mode, ``synchronous=FULL`` so a save survives SIGKILL and
    power loss once it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()  # confirm() may come from a transport callback thread
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode; transactions are explicit (BEGIN IMMEDIATE) so read-merge-write is atomic.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints ("
                " stream_id TEXT NOT NULL, shard_id TEXT NOT NULL, sequence_number TEXT,"
                " finished INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,"
                " PRIMARY KEY (stream_id, shard_id))"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"checkpoint store {self.path}: cannot open: {exc}") from exc

    def load(self, stream_id: str) -> dict[str, Checkpoint]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT shard_id, sequence_number, finished FROM checkpoints WHERE stream_id = ?",
                    (stream_id,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SourceError(f"checkpoint store {self.path}: cannot read: {exc}") from exc
        return {shard: Checkpoint(seq, bool(fin)) for shard, seq, fin in rows}

    def save(self, stream_id: str, shard_id: str, sequence_number: str | None, finished: bool = False) -> None:
        if sequence_number is not None:
            sortable_sequence(sequence_number)  # validate before touching the file
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT sequence_number, finished FROM checkpoints WHERE stream_id = ? AND shard_id = ?",
                    (stream_id, shard_id),
                ).fetchone()
                old_seq, old_finished = (row[0], bool(row[1])) if row else (None, False)
                seq = later_sequence(old_seq, sequence_number)
                done = old_finished or finished
                if row is None or (seq, done) != (old_seq, old_finished):
                    self._db.execute(
                        "INSERT INTO checkpoints (stream_id, shard_id, sequence_number, finished, updated_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id, shard_id) DO UPDATE SET"
                        " sequence_number = excluded.sequence_number, finished = excluded.finished,"
                        " updated_at = excluded.updated_at",
                        (stream_id, shard_id, seq, int(done), time.time()),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # e.g. the store was closed already
                    self._db.execute("ROLLBACK")
                raise SourceError(f"checkpoint store {self.path}: cannot save {shard_id}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


class DynamoDBCheckpointStore:
    """Checkpoints in a DynamoDB table (hash key ``stream_shard`` = ``"{stream_id}|{shard_id}"``), for
    publishers without a durable local disk. A conditional write on ``seq_sort`` (the sequence number
    padded to 40 digits) keeps a checkpoint from moving backwards even with two writers."""

    HASH_KEY = "stream_shard"

    def __init__(self, client: Any, table_name: str, create: bool = True) -> None:
        self._client = client
        self.table_name = table_name
        self._ensure_table(create)

    def _fail(self, action: str, exc: Exception) -> SourceError:
        return SourceError(f"checkpoint table {self.table_name!r}: cannot {action}: {exc}")

    def _ensure_table(self, create: bool) -> None:
        try:
            self._client.describe_table(TableName=self.table_name)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise self._fail("describe it", exc) from exc
            if not create:
                raise ConfigError(f"checkpoint table {self.table_name!r} does not exist") from exc
            self._create_table()
        except BotoCoreError as exc:
            raise self._fail("describe it", exc) from exc
        try:
            # Waits until ACTIVE; the first check is immediate, so an existing table costs one call.
            self._client.get_waiter("table_exists").wait(
                TableName=self.table_name, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
            )
        except (WaiterError, BotoCoreError, ClientError) as exc:
            raise self._fail("wait for it to become ACTIVE", exc) from exc

    def _create_table(self) -> None:
        try:
            self._client.create_table(
                TableName=self.table_name,
                KeySchema=[{"AttributeName": self.HASH_KEY, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": self.HASH_KEY, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another process created it first: fine
                raise self._fail("create it", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("create it", exc) from exc

    def load(self, stream_id: str) -> dict[str, Checkpoint]:
        # A scan: the table holds one small item per shard, and load() runs once per start.
        result: dict[str, Checkpoint] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "FilterExpression": "#sid = :sid",
            "ExpressionAttributeNames": {"#sid": "stream_id"},
            "ExpressionAttributeValues": {":sid": {"S": stream_id}},
        }
        while True:
            try:
                page = self._client.scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail("read checkpoints", exc) from exc
            for item in page.get("Items", []):
                seq = item.get("sequence_number", {}).get("S")
                finished = bool(item.get("finished", {}).get("BOOL", False))
                result[item["shard_id"]["S"]] = Checkpoint(seq, finished)
            if "LastEvaluatedKey" not in page:
                return result
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save(self, stream_id: str, shard_id: str, sequence_number: str | None, finished: bool = False) -> None:
        names = {"#sid": "stream_id", "#shard": "shard_id", "#fin": "finished", "#at": "updated_at"}
        values: dict[str, Any] = {
            ":sid": {"S": stream_id},
            ":shard": {"S": shard_id},
            ":at": {"N": f"{time.time():.6f}"},
            ":fin": {"BOOL": finished},
        }
        # finished is sticky: set it when true, otherwise keep what is there.
        sets = [
            "#sid = :sid",
            "#shard = :shard",
            "#at = :at",
            "#fin = :fin" if finished else "#fin = if_not_exists(#fin, :fin)",
        ]
        kwargs: dict[str, Any] = {}
        if sequence_number is not None:
            names |= {"#seq": "sequence_number", "#sort": "seq_sort"}
            values |= {":seq": {"S": sequence_number}, ":sort": {"S": sortable_sequence(sequence_number)}}
            sets += ["#seq = :seq", "#sort = :sort"]
            kwargs["ConditionExpression"] = "attribute_not_exists(#sort) OR #sort <= :sort"
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={self.HASH_KEY: {"S": f"{stream_id}|{shard_id}"}},
                UpdateExpression="SET " + ", ".join(sets),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise self._fail(f"save {shard_id}", exc) from exc
            # A later position is stored already: keep it, but a finished flag still counts.
            if finished:
                self.save(stream_id, shard_id, None, finished=True)
        except BotoCoreError as exc:
            raise self._fail(f"save {shard_id}", exc) from exc

    def close(self) -> None:
        """The client belongs to the caller; nothing to release."""


def open_checkpoint_store(spec: str, dynamodb_client_factory: Callable[[], Any] | None = None) -> CheckpointStore:
    """``dynamodb://TABLE`` -> :class:`DynamoDBCheckpointStore`; a path -> :class:`SqliteCheckpointStore`."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("checkpoint store is empty: give a file path or dynamodb://TABLE")
    if spec.startswith("dynamodb://"):
        table = spec.removeprefix("dynamodb://").strip("/")
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigError(f"checkpoint store {spec!r}: table name must be 3-255 characters of A-Z a-z 0-9 _ . -")
        if dynamodb_client_factory is None:
            raise ConfigError(f"checkpoint store {spec!r} needs DynamoDB access, but no DynamoDB client is configured")
        return DynamoDBCheckpointStore(dynamodb_client_factory(), table)
    if "://" in spec:
        raise ConfigError(f"checkpoint store {spec!r}: unknown scheme; use a file path or dynamodb://TABLE")
    return SqliteCheckpointStore(spec)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
