"""bridge-publish refuses checkpoint files it cannot trust, instead of silently skipping changes.

Real bridge-publish processes against the moto server's stream, real SQLite files edited the way an
accident (or a person) would: emptied, replaced, altered in place.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bridge.demo.workload import create_table
from bridge.envelope import keygen
from bridge.errors import ConfigError
from bridge.state.checkpoints import Checkpoint, SqliteCheckpointStore
from bridge.state.integrity import checksum

pytestmark = pytest.mark.aws


def publish(env: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        str(Path(sys.executable).with_name("bridge-publish")),
        "--source-table", env["table"],
        "--source-region", "us-east-1",
        "--source-endpoint", env["endpoint"],
        "--signing-key", str(env["key"]),
        "--checkpoint", str(env["checkpoint"]),
        "--transport", f"memory://{env['table']}",
        "--quarantine-dir", str(env["tmp"] / "q"),
        "--until-idle", "1",
        *extra,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def shipped(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    return int(orjson.loads(result.stdout.strip().splitlines()[-1])["publish"]["changes"])


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a refused start (config error, exit 2)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def write(client: Any, table: str, users: range) -> None:
    for i in users:
        client.put_item(TableName=table, Item={"tenant": {"S": "t"}, "user_id": {"N": str(i)}})


@pytest.fixture
def env(moto_endpoint: str, unique: str, tmp_path: Path) -> dict[str, Any]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    create_table(client, unique)
    key, _ = keygen(tmp_path / "keys")
    return {
        "client": client,
        "table": unique,
        "endpoint": moto_endpoint,
        "key": key,
        "checkpoint": tmp_path / "state" / "checkpoints.sqlite",
        "tmp": tmp_path,
    }


@pytest.mark.parametrize(
    "damage",
    ["empty", "no checkpoints table", "not a database"],
)
def test_a_damaged_store_is_refused_and_reset_only_on_request(env: dict[str, Any], damage: str) -> None:
    write(env["client"], env["table"], range(3))
    path: Path = env["checkpoint"]
    path.parent.mkdir()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "no checkpoints table":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (x TEXT)")
    else:
        path.write_bytes(b"this was a checkpoint store before a bad restore\n")
    before = path.read_bytes()

    line = refused(publish(env, "--start-position", "latest"))
    assert str(path) in line and "--reset-checkpoint" in line
    assert {"empty": "empty (0 bytes)", "no checkpoints table": "no checkpoints table"}.get(
        damage, "not an SQLite database"
    ) in line
    assert path.read_bytes() == before  # refused, untouched

    result = publish(env, "--start-position", "latest", "--reset-checkpoint")
    assert shipped(result) == 0  # latest: the three waiting changes are skipped, and it says so
    assert "WARNING" in result.stderr and "will not be shipped" in result.stderr
    (kept,) = path.parent.glob(f"{path.name}.reset-*")
    assert kept.read_bytes() == before  # the damaged file is kept for a post-mortem
    with sqlite3.connect(path) as db:  # a new store, holding the LATEST decision for the next start
        assert db.execute("SELECT sequence_number, finished FROM checkpoints").fetchall() == [(None, 0)]
    assert shipped(publish(env)) == 0  # and it is accepted


def test_a_checkpoint_altered_in_place_is_refused(env: dict[str, Any]) -> None:
    write(env["client"], env["table"], range(3))
    assert shipped(publish(env)) == 3
    write(env["client"], env["table"], range(3, 6))
    path: Path = env["checkpoint"]
    streams = boto3.client("dynamodbstreams", endpoint_url=env["endpoint"], region_name="us-east-1")
    arn = env["client"].describe_table(TableName=env["table"])["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    newest = records[-1]["dynamodb"]["SequenceNumber"]

    with sqlite3.connect(path) as db:  # skip the three waiting changes
        db.execute("UPDATE checkpoints SET sequence_number = ?", (newest,))
    line = refused(publish(env))
    assert "does not match its checksum" in line and shard["ShardId"] in line and newest in line

    # One who knows the checksum rule: the position must still lie in the shard's sequence range.
    start = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    below = str(int(start) - 1)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE checkpoints SET sequence_number = ?, checksum = ?",
            (below, checksum(arn, shard["ShardId"], below, False)),
        )
    line = refused(publish(env))
    assert f"sequence number {below} lies outside the shard's range" in line

    assert shipped(publish(env, "--reset-checkpoint")) == 6  # trim-horizon: everything, once more


def test_a_store_from_the_previous_version_is_sealed_once(env: dict[str, Any]) -> None:
    """Checkpoints written before checksums are taken as they are (nothing to check them against),
    sealed, and from then on checked."""
    write(env["client"], env["table"], range(3))
    assert shipped(publish(env)) == 3
    path: Path = env["checkpoint"]
    with sqlite3.connect(path) as db:  # what the previous version wrote: no checksum column, no meta table
        db.execute("DROP TABLE meta")
        db.execute("ALTER TABLE checkpoints DROP COLUMN checksum")
    write(env["client"], env["table"], range(3, 5))
    result = publish(env)
    assert shipped(result) == 2
    assert "written by an earlier version" in result.stderr
    with sqlite3.connect(path) as db:
        db.execute("UPDATE checkpoints SET checksum = NULL")  # after the migration, a missing one is refused
    assert "does not match its checksum" in refused(publish(env))


def test_a_checkpoint_altered_while_running_is_not_sealed_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = SqliteCheckpointStore(path)
    store.save("s", "shard-1", "1" * 21)
    with sqlite3.connect(path) as db:  # another process edits the row under the running publisher
        db.execute("UPDATE checkpoints SET sequence_number = ?", ("9" * 30,))
    with pytest.raises(ConfigError, match="no longer matches its checksum"):
        store.save("s", "shard-1", "2" * 21)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE checkpoints SET sequence_number = ?", ("1" * 21,))  # put back as it was
    reopened = SqliteCheckpointStore(path)
    assert reopened.load("s") == {"shard-1": Checkpoint("1" * 21, False)}
    reopened.close()
