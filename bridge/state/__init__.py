"""Durable state on the publish side: stream checkpoints, scan progress and the active-active loop
guard's memory (``guard_memory``), each in SQLite or DynamoDB.

A store spec is a path (SQLite file) or ``dynamodb://TABLE`` (a table shared by a fleet or by Lambda).
Every SQLite store opens its file through :func:`bridge.state.sqlite.open_durable` (WAL,
``synchronous=FULL``): the checkpoints, the scan progress beside them, and the active-active loop
guard's memory, which is committed with the checkpoint.

May import: ``bridge.errors``, ``bridge.observe``, ``bridge.change`` (the guard remembers changes) and
``bridge.aws`` (the one AWS error policy: a missing or refused table stops the line).
"""

from bridge.state.checkpoints import (
    Checkpoint,
    CheckpointStore,
    DynamoDBCheckpointStore,
    SqliteCheckpointStore,
    later_sequence,
    open_checkpoint_store,
    sortable_sequence,
)
from bridge.state.scan_progress import ScanProgressStore, open_scan_progress

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "ScanProgressStore",
    "SqliteCheckpointStore",
    "later_sequence",
    "open_checkpoint_store",
    "open_scan_progress",
    "sortable_sequence",
]
