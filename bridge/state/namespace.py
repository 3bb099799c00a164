"""Checkpoint namespaces: many pipelines in one state store, none reading another's positions.

A pipeline listed in a ``pipelines:`` config keeps its checkpoints under its own name: its stream
ids are stored as ``NAME/<stream id>``. Two pipelines reading the same source table (to two
destinations) therefore move independently through one SQLite file or ``dynamodb://`` table. A
one-table config keeps the plain stream id, as before pipelines existed. Imports only ``bridge.state``.
"""

from __future__ import annotations

from bridge.state.checkpoints import Checkpoint, CheckpointStore


def namespaced_id(namespace: str | None, stream_id: str) -> str:
    return f"{namespace}/{stream_id}" if namespace else stream_id


class NamespacedStore:
    """A :class:`~bridge.state.checkpoints.CheckpointStore` seen through one pipeline's namespace."""

    def __init__(self, store: CheckpointStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def load(self, stream_id: str) -> dict[str, Checkpoint]:
        return self.store.load(namespaced_id(self.namespace, stream_id))

    def save(self, stream_id: str, shard_id: str, sequence_number: str | None, finished: bool = False) -> None:
        self.store.save(namespaced_id(self.namespace, stream_id), shard_id, sequence_number, finished)

    def close(self) -> None:
        self.store.close()


def namespaced(store: CheckpointStore, namespace: str | None) -> CheckpointStore:
    return NamespacedStore(store, namespace) if namespace else store
