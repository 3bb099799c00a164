"""Checkpoint stores: SQLite (embedded default) and DynamoDB (against the moto server)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.errors import ConfigError, SystemicError
from bridge.state.checkpoints import (
    Checkpoint,
    CheckpointStore,
    DynamoDBCheckpointStore,
    SqliteCheckpointStore,
    later_sequence,
    open_checkpoint_store,
    sortable_sequence,
)
from bridge.state.guard_memory import DynamoDBStore

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
SHORT = "9" * 21  # numerically smaller, but sorts after LONG as a string
LONG = "1" + "0" * 39


def dynamodb(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[CheckpointStore]:
    if request.param == "sqlite":
        opened: CheckpointStore = SqliteCheckpointStore(tmp_path / "ckpt.db")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        opened = DynamoDBCheckpointStore(dynamodb(endpoint), unique)
    yield opened
    opened.close()


# -- the contract, for both stores ------------------------------------------------------------------


def test_empty_stream_loads_nothing(store: CheckpointStore) -> None:
    assert store.load(STREAM) == {}


def test_save_then_load(store: CheckpointStore) -> None:
    store.save(STREAM, "shard-1", "100000000000000000001")
    store.save(STREAM, "shard-2", "100000000000000000002", finished=True)
    store.save("other-stream", "shard-1", "100000000000000000009")
    assert store.load(STREAM) == {
        "shard-1": Checkpoint("100000000000000000001", False),
        "shard-2": Checkpoint("100000000000000000002", True),
    }
    assert store.load("other-stream") == {"shard-1": Checkpoint("100000000000000000009", False)}


def test_never_moves_backwards_comparing_numerically(store: CheckpointStore) -> None:
    store.save(STREAM, "s", SHORT)
    store.save(STREAM, "s", LONG)
    assert store.load(STREAM)["s"] == Checkpoint(LONG, False)
    store.save(STREAM, "s", SHORT)  # a late confirm of an older batch
    store.save(STREAM, "s", None)
    assert store.load(STREAM)["s"] == Checkpoint(LONG, False)


def test_finished_is_sticky_and_survives_an_older_sequence(store: CheckpointStore) -> None:
    store.save(STREAM, "s", LONG)
    store.save(STREAM, "s", SHORT, finished=True)
    assert store.load(STREAM)["s"] == Checkpoint(LONG, True)
    store.save(STREAM, "s", LONG, finished=False)
    assert store.load(STREAM)["s"] == Checkpoint(LONG, True)


def test_marker_without_sequence(store: CheckpointStore) -> None:
    store.save(STREAM, "s", None)
    assert store.load(STREAM) == {"s": Checkpoint(None, False)}
    store.save(STREAM, "t", None, finished=True)
    assert store.load(STREAM)["t"] == Checkpoint(None, True)


def test_rejects_a_non_numeric_sequence(store: CheckpointStore) -> None:
    with pytest.raises(ValueError, match="decimal digits"):
        store.save(STREAM, "s", "12ab")


def test_sequence_helpers() -> None:
    assert sortable_sequence("42") == "0" * 38 + "42"
    assert later_sequence(SHORT, LONG) == LONG
    assert later_sequence(LONG, SHORT) == LONG
    assert later_sequence(None, SHORT) == SHORT
    assert later_sequence(SHORT, None) == SHORT


# -- SQLite -------------------------------------------------------------------------------------------


def test_sqlite_creates_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ckpt.db"
    store = SqliteCheckpointStore(path)
    store.save(STREAM, "s", "1")
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT typeof(sequence_number) FROM checkpoints").fetchone()[0] == "text"
    reopened = SqliteCheckpointStore(path)
    assert reopened.load(STREAM) == {"s": Checkpoint("1", False)}
    reopened.close()


def test_sqlite_survives_sigkill(tmp_path: Path) -> None:
    """A save that returned is on disk even if the process is killed right after, mid-WAL."""
    path = tmp_path / "ckpt.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from bridge.state.checkpoints import SqliteCheckpointStore
        store = SqliteCheckpointStore({str(path)!r})
        for i in range(1, 51):
            store.save({STREAM!r}, "s", str(10**21 + i))
        store.save({STREAM!r}, "done", None, finished=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -9
    store = SqliteCheckpointStore(path)
    assert store.load(STREAM) == {"s": Checkpoint(str(10**21 + 50), False), "done": Checkpoint(None, True)}
    store.save(STREAM, "s", str(10**21 + 51))  # and it is writable again
    assert store.load(STREAM)["s"] == Checkpoint(str(10**21 + 51), False)
    store.close()


def test_sqlite_unopenable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open"):
        SqliteCheckpointStore(blocker / "ckpt.db")


# -- DynamoDB -----------------------------------------------------------------------------------------


@pytest.mark.aws
def test_dynamodb_creates_the_table(moto_endpoint: str, unique: str) -> None:
    client = dynamodb(moto_endpoint)
    DynamoDBCheckpointStore(client, unique).save(STREAM, "s", "5")
    table = client.describe_table(TableName=unique)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "stream_shard", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    item = client.get_item(TableName=unique, Key={"stream_shard": {"S": f"{STREAM}|s"}})["Item"]
    assert item["seq_sort"] == {"S": "5".zfill(40)}
    # A second store on the existing table sees the checkpoint.
    assert DynamoDBCheckpointStore(client, unique).load(STREAM) == {"s": Checkpoint("5", False)}


@pytest.mark.aws
def test_dynamodb_table_deleted_under_a_running_store_stops_the_line(moto_endpoint: str, unique: str) -> None:
    """A checkpoint table gone concerns every checkpoint: SystemicError (the publisher pauses), not a
    per-batch SourceError; the guard's memory in the same table says the same."""
    client = dynamodb(moto_endpoint)
    store = DynamoDBCheckpointStore(client, unique)
    store.save(STREAM, "s", "5")
    memory = DynamoDBStore(client, unique, "here|t")
    client.delete_table(TableName=unique)
    with pytest.raises(SystemicError, match=f"checkpoint table '{unique}': cannot save s: ResourceNotFoundException"):
        store.save(STREAM, "s", "6")
    with pytest.raises(SystemicError, match="cannot read the loop guard's memory"):
        memory.get("token")


@pytest.mark.aws
def test_dynamodb_missing_table_without_create(moto_endpoint: str, unique: str) -> None:
    with pytest.raises(ConfigError, match=f"checkpoint table '{unique}' does not exist"):
        DynamoDBCheckpointStore(dynamodb(moto_endpoint), unique, create=False)


@pytest.mark.aws
def test_dynamodb_load_pages_through_the_scan(moto_endpoint: str, unique: str) -> None:
    client = dynamodb(moto_endpoint)
    store = DynamoDBCheckpointStore(client, unique)
    for i in range(40):
        store.save(STREAM, f"shard-{i:03d}", str(10**21 + i))
        # Big items of other streams make the scan return several 1 MB pages.
        client.put_item(
            TableName=unique,
            Item={
                "stream_shard": {"S": f"other|{i}"},
                "stream_id": {"S": "other"},
                "pad": {"S": "x" * 100_000},
            },
        )
    loaded = store.load(STREAM)
    assert len(loaded) == 40
    assert loaded["shard-039"] == Checkpoint(str(10**21 + 39), False)


# -- open_checkpoint_store ----------------------------------------------------------------------------


def test_open_plain_path_is_sqlite(tmp_path: Path) -> None:
    store = open_checkpoint_store(str(tmp_path / "x" / "ckpt.db"), None)
    assert isinstance(store, SqliteCheckpointStore)
    store.close()


@pytest.mark.aws
def test_open_dynamodb_url(moto_endpoint: str, unique: str) -> None:
    store = open_checkpoint_store(f"dynamodb://{unique}", lambda: dynamodb(moto_endpoint))
    assert isinstance(store, DynamoDBCheckpointStore)
    assert store.table_name == unique


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("", "empty"),
        ("dynamodb://ok-table", "no DynamoDB client"),
        ("dynamodb://", "table name"),
        ("dynamodb://a b", "table name"),
        ("s3://bucket/key", "unknown scheme"),
    ],
)
def test_open_rejects(spec: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        open_checkpoint_store(spec, None)


def test_sqlite_save_after_close_is_a_source_error(tmp_path: Path) -> None:
    from bridge.errors import SourceError

    store = SqliteCheckpointStore(tmp_path / "ckpt.db")
    store.close()
    with pytest.raises(SourceError, match="cannot save"):
        store.save(STREAM, "s", "1")
