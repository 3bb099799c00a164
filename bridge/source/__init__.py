"""The source side of the data path: read a DynamoDB stream, turn records into changes, checkpoint.

:class:`StreamReader` reads shards in lineage order and :func:`parse_record` turns each record into a
:class:`~bridge.change.Change`; the publisher confirms what the transport accepted with
:meth:`StreamReader.confirm`, which writes the :class:`CheckpointStore`.

May import: ``bridge.change``, ``bridge.errors``, ``bridge.state`` (checkpoints), ``bridge.aws``.
Never publish, apply, cli, demo or bench.
"""

from bridge.source.records import parse_record, timestamp_us
from bridge.source.streams import ShardRead, StreamReader
from bridge.state.checkpoints import (
    Checkpoint,
    CheckpointStore,
    DynamoDBCheckpointStore,
    SqliteCheckpointStore,
    open_checkpoint_store,
)

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "ShardRead",
    "SqliteCheckpointStore",
    "StreamReader",
    "open_checkpoint_store",
    "parse_record",
    "timestamp_us",
]
