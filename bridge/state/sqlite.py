"""The one way every SQLite-backed store opens its file: checkpoints, scan progress and the
active-active guard's memory all live in (or beside) the checkpoint file and need the same
durability, so a save that returned survives SIGKILL and power loss."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """``path`` opened (its folder made) in autocommit mode, WAL with ``synchronous=FULL``, with
    ``schema`` (``CREATE TABLE IF NOT EXISTS`` statements) applied. Transactions are explicit
    (``BEGIN IMMEDIATE``) so a read-merge-write is atomic; the connection may be shared across
    threads behind the caller's lock. Raises ``sqlite3.Error`` / ``OSError`` for the caller to name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
