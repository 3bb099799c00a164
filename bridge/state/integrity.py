"""Refusing checkpoint stores that cannot be trusted: empty, table-less, unreadable or altered.

A publisher that took a bad store for a first start would skip every change before LATEST (or re-read
24 hours), and one that believed an altered position would skip what lies before it; both exit 0.
So an existing store must hold the checkpoints table, every row must carry the checksum written with
it, and the operator starts over only by saying so (``--reset-checkpoint``), which keeps the old file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from bridge.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "2"  # 1: no checksums (ddb-bridge before checksums); 2: a checksum on every row
RESET_HINT = "restore it, or start over with --reset-checkpoint (the file is kept beside it)"


def checksum(stream_id: str, shard_id: str, sequence_number: str | None, finished: bool) -> str:
    """Over everything a row means; it detects edits and corruption, not a forger (file permissions do)."""
    text = f"{stream_id}\n{shard_id}\n{sequence_number or ''}\n{int(finished)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def refuse_unusable_file(path: Path) -> bool:
    """True if ``path`` exists (and is worth opening); raise if it exists but cannot be a store.

    Only ``stat``: opening (and closing) the file with a descriptor of our own would drop the POSIX
    locks SQLite holds on it for this process's other connections, and their writes could be lost.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False  # a first start (or a path SQLite will refuse with its own words)
    except OSError as exc:
        raise ConfigError(f"checkpoint store {path} cannot be read ({exc.strerror or exc}); {RESET_HINT}") from exc
    if st.st_size == 0:
        raise ConfigError(f"checkpoint store {path} is empty (0 bytes), not a first start; {RESET_HINT}")
    return True


def refuse_tableless(db: sqlite3.Connection, path: Path) -> None:
    try:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"checkpoint store {path} is not an SQLite database ({exc}); {RESET_HINT}") from exc
    if "checkpoints" not in names:
        raise ConfigError(f"checkpoint store {path} holds no checkpoints table, not a first start; {RESET_HINT}")


def move_aside(path: Path) -> Path | None:
    """``--reset-checkpoint``: the store (and its WAL) renamed, never deleted; None if there was none."""
    if not path.exists():
        return None
    kept = path.with_name(f"{path.name}.reset-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, f"{kept}{suffix}")
    except OSError as exc:
        raise ConfigError(f"--reset-checkpoint: cannot move {path} aside: {exc.strerror or exc}") from exc
    log.warning("--reset-checkpoint: moved checkpoint store %s to %s; starting over", path, kept)
    return kept
