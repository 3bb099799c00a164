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
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from bridge.aws.errors import failure
from bridge.errors import BridgeError, ConfigError, SourceError
from bridge.state.integrity import (
    FORMAT,
    RESET_HINT,
    checksum,
    move_aside,
    refuse_tableless,
    refuse_unusable_file,
)
from bridge.state.sqlite import open_durable

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "SqliteCheckpointStore",
    "later_sequence",
    "open_checkpoint_store",
    "sortable_sequence",
]

log = logging.getLogger(__name__)

SEQ_DIGITS = 40
LONG_SEQ_DIGITS = 129  # Kinesis Data Streams: 0|[1-9][0-9]{0,128}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sequence_number: str | None  # last confirmed record; None: nothing confirmed
    finished: bool  # the shard was read to its end and everything in it confirmed
    # epoch seconds of the last save (bridge status); not part of what a checkpoint is
    updated_at: float | None = field(default=None, compare=False)


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

    def __init__(self, path: str | os.PathLike[str], *, reset: bool = False) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()  # confirm() may come from a transport callback thread
        if reset:
            move_aside(self.path)
        existed = refuse_unusable_file(self.path)
        try:
            if existed:
                with contextlib.closing(sqlite3.connect(self.path)) as db:
                    refuse_tableless(db, self.path)
            self._db = open_durable(
                self.path,
                "CREATE TABLE IF NOT EXISTS checkpoints ("
                " stream_id TEXT NOT NULL, shard_id TEXT NOT NULL, sequence_number TEXT,"
                " finished INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL, checksum TEXT,"
                " PRIMARY KEY (stream_id, shard_id))",
            )
            self._migrate()
        except sqlite3.Error as exc:
            raise ConfigError(f"checkpoint store {self.path}: cannot open: {exc}; {RESET_HINT}") from exc
        except OSError as exc:
            raise ConfigError(f"checkpoint store {self.path}: cannot open: {exc}") from exc

    def _migrate(self) -> None:
        """A store without the meta table was written before checksums: seal its rows once, as they are."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                columns = {c[1] for c in self._db.execute("PRAGMA table_info(checkpoints)")}
                if "checksum" not in columns:
                    self._db.execute("ALTER TABLE checkpoints ADD COLUMN checksum TEXT")
                rows = self._db.execute(
                    "SELECT stream_id, shard_id, sequence_number, finished FROM checkpoints WHERE checksum IS NULL"
                ).fetchall()
                for sid, shard, seq, fin in rows:
                    self._db.execute(
                        "UPDATE checkpoints SET checksum = ? WHERE stream_id = ? AND shard_id = ?",
                        (checksum(sid, shard, seq, bool(fin)), sid, shard),
                    )
                self._db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
                if rows:
                    log.warning(
                        "checkpoint store %s: %d checkpoints written by an earlier version, without checksums, "
                        "were taken as they are and sealed with checksums",
                        self.path,
                        len(rows),
                    )
            elif row[0] != FORMAT:
                raise ConfigError(f"checkpoint store {self.path} has format {row[0]!r}; this version reads {FORMAT!r}")
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def load(self, stream_id: str) -> dict[str, Checkpoint]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT shard_id, sequence_number, finished, checksum, updated_at FROM checkpoints"
                    " WHERE stream_id = ?",
                    (stream_id,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SourceError(f"checkpoint store {self.path}: cannot read: {exc}") from exc
        for shard, seq, fin, stored, _ in rows:
            if stored != checksum(stream_id, shard, seq, bool(fin)):
                raise ConfigError(
                    f"checkpoint store {self.path}: shard {shard}'s checkpoint (sequence number {seq}, "
                    f"finished {bool(fin)}) does not match its checksum: it was altered or corrupted; {RESET_HINT}"
                )
        return {shard: Checkpoint(seq, bool(fin), at) for shard, seq, fin, _, at in rows}

    def save(self, stream_id: str, shard_id: str, sequence_number: str | None, finished: bool = False) -> None:
        if sequence_number is not None:
            sortable_sequence(sequence_number)  # validate before touching the file
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT sequence_number, finished, checksum FROM checkpoints WHERE stream_id = ? AND shard_id = ?",
                    (stream_id, shard_id),
                ).fetchone()
                old_seq, old_finished = (row[0], bool(row[1])) if row else (None, False)
                if row is not None and row[2] != checksum(stream_id, shard_id, old_seq, old_finished):
                    # Merging with it would seal an altered position as ours.
                    self._db.execute("ROLLBACK")
                    raise ConfigError(
                        f"checkpoint store {self.path}: shard {shard_id}'s checkpoint (sequence number {old_seq}) "
                        f"no longer matches its checksum: it was altered while running; {RESET_HINT}"
                    )
                seq = later_sequence(old_seq, sequence_number)
                done = old_finished or finished
                if row is None or (seq, done) != (old_seq, old_finished):
                    self._db.execute(
                        "INSERT INTO checkpoints (stream_id, shard_id, sequence_number, finished, updated_at,"
                        " checksum) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id, shard_id) DO UPDATE SET"
                        " sequence_number = excluded.sequence_number, finished = excluded.finished,"
                        " updated_at = excluded.updated_at, checksum = excluded.checksum",
                        (stream_id, shard_id, seq, int(done), time.time(), checksum(stream_id, shard_id, seq, done)),
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

    def _fail(self, action: str, exc: Exception) -> BridgeError:
        # The one AWS policy: a missing table or refused access concerns every checkpoint (the line pauses).
        return failure(exc, f"checkpoint table {self.table_name!r}: cannot {action}", SourceError)

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
                at = item.get("updated_at", {}).get("N")
                result[item["shard_id"]["S"]] = Checkpoint(seq, finished, float(at) if at else None)
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


def open_checkpoint_store(
    spec: str, dynamodb_client_factory: Callable[[], Any] | None = None, *, reset: bool = False
) -> CheckpointStore:
    """``dynamodb://TABLE`` -> :class:`DynamoDBCheckpointStore`; a path -> :class:`SqliteCheckpointStore`.

    ``reset``: start over; a file store is moved aside (kept), never read.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("checkpoint store is empty: give a file path or dynamodb://TABLE")
    if spec.startswith("dynamodb://"):
        table = spec.removeprefix("dynamodb://").strip("/")
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigError(f"checkpoint store {spec!r}: table name must be 3-255 characters of A-Z a-z 0-9 _ . -")
        if dynamodb_client_factory is None:
            raise ConfigError(f"checkpoint store {spec!r} needs DynamoDB access, but no DynamoDB client is configured")
        if reset:
            raise ConfigError(
                f"--reset-checkpoint works on a file store; for {spec!r} give a new table name or delete its items"
            )
        return DynamoDBCheckpointStore(dynamodb_client_factory(), table)
    if "://" in spec:
        raise ConfigError(f"checkpoint store {spec!r}: unknown scheme; use a file path or dynamodb://TABLE")
    return SqliteCheckpointStore(spec, reset=reset)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
