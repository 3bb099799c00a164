"""``bridge dlq list|show|replay|purge`` against the real RabbitMQ and moto's server.

The story operators live through: a publisher starts signing with a new key before the applier
trusts it, its envelopes are quarantined; once the key is added, ``bridge dlq replay`` applies
them. Listing never takes anything away; replay goes through last-writer-wins; purge asks first.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from bridge.change import Change, Operation, Version
from bridge.cli.admin import main
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.demo.workload import create_table
from bridge.envelope import Signer
from bridge.plugin.manager import open_transport
from bridge.transport.reliable import ReliableTransport
from bridge.wiring import build_applier
from tests.deadletter_support import Throttle, envelope, key, put, send, stored, trusted_dir

ROTATED = Signer.from_seed(b"\x07" * 32)  # the publisher's new key, not trusted yet


def dlq(command: str, *args: str, input: str | None = None) -> Result:
    # A local broker delivers at once; --wait keeps an empty queue from costing the default 2 s.
    return CliRunner().invoke(main, ["dlq", command, "--wait", "0.3", *args], input=input, catch_exceptions=False)


def listed(*args: str) -> list[dict[str, Any]]:
    result = dlq("list", "--json", *args)
    assert result.exit_code == 0, result.output
    return sorted((_without_age(r) for r in orjson.loads(result.stdout)), key=lambda r: r["id"])


def _without_age(record: dict[str, Any]) -> dict[str, Any]:
    assert record.pop("age_s") >= 0
    return record


@pytest.fixture
def bridge_setup(moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path) -> dict[str, Any]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    trusted = trusted_dir(tmp_path)
    settings = {
        "target_table": unique,
        "target_region": "us-west-2",
        "target_endpoint": moto_endpoint,
        "trusted_keys": str(trusted),
        "accept_tables": ["users"],  # the test envelopes come from a table named users
        "transport": f"{amqp_url}?queue={unique}",
        "quarantine_dir": str(tmp_path / "q"),
        "retry_max_attempts": 1,
        "transient_retries": 0,
    }
    path = tmp_path / "apply.yaml"
    path.write_text(yaml.safe_dump(settings))
    return {
        "client": client,
        "table": unique,
        "config": str(path),
        "trusted": trusted,
        "dlq": f"{amqp_url}?queue={unique}.dlq",
        "transport": settings["transport"],
    }


def run_applier(setup: dict[str, Any], throttled: set[int] = frozenset()) -> Any:  # type: ignore[assignment]
    from bridge import config

    cfg = config.load(config.ApplyConfig, setup["config"], {})
    applier = build_applier(cfg, threading.Event())
    Throttle(applier.target.client, lambda user_id: user_id in throttled)
    try:
        return applier.run(until_idle=1.0)
    finally:
        applier.close()


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_quarantined_envelopes_apply_after_the_key_is_trusted_and_replay_runs(bridge_setup: dict[str, Any]) -> None:
    s = bridge_setup
    too_big = put(5, blob={"S": "x" * 420_000})  # over DynamoDB's 400 KB item limit
    send(
        s["transport"],
        [
            # the old key still verifies first: the new key is one publisher's, not the whole stream's
            envelope([put(4), too_big], eid="old-key"),
            envelope([put(1), put(2)], signer=ROTATED, eid="rotated-1"),
            envelope([put(3)], signer=ROTATED, eid="rotated-2"),
            envelope([put(6, ts=10, name={"S": "old"})], eid="throttled"),
        ],
    )
    stats = run_applier(s, throttled={6})
    assert set(stored(s["client"], s["table"])) == {4}
    assert (stats.quarantined, stats.parked) == (2, 2)

    everything = listed("--config", s["config"])
    assert listed("--dlq", s["dlq"]) == everything  # listing takes nothing away
    assert sorted(r["state"] for r in everything) == ["parked", "parked", "quarantined", "quarantined"]
    for r in everything:
        assert {"id", "state", "error", "attempts", "first_failed_at"} <= set(r) and r["attempts"] == 1
    quarantined = listed("--dlq", s["dlq"], "--state", "quarantined")
    assert {r["error"] for r in quarantined} == {"SignatureError"}
    assert all(ROTATED.key_id in r["message"] for r in quarantined)
    assert [r["kind"] for r in listed("--dlq", s["dlq"], "--error", "ItemTooLargeError")] == ["changes"]
    assert len(listed("--dlq", s["dlq"], "--error", "TransientApplyError")) == 1
    assert len(listed("--dlq", s["dlq"], "--table", "users")) == 2  # quarantined envelopes name no table
    assert listed("--dlq", s["dlq"], "--older-than", "1h") == []
    assert len(listed("--dlq", s["dlq"], "--newer-than", "1h", "--kind", "envelope")) == 2

    # without the new key, replay cannot verify them: they stay, with one more attempt
    result = dlq("replay", "--config", s["config"], "--state", "quarantined")
    assert result.exit_code == 1 and "2 record(s) still failing (2 quarantined)" in result.output
    assert sorted(r["attempts"] for r in listed("--dlq", s["dlq"], "--state", "quarantined")) == [2, 2]

    (s["trusted"] / "rotated.pub").write_bytes(ROTATED.public_pem())
    result = dlq("replay", "--config", s["config"], "--state", "quarantined")
    assert result.exit_code == 0, result.output
    assert (
        orjson.loads(result.stdout)["replay"] | {"records": 2, "resolved": 2, "changes_applied": 3}
        == orjson.loads(result.stdout)["replay"]
    )
    assert set(stored(s["client"], s["table"])) == {1, 2, 3, 4}
    assert sorted(r["state"] for r in listed("--dlq", s["dlq"])) == ["parked", "parked"]


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_replay_of_a_parked_change_goes_through_last_writer_wins(bridge_setup: dict[str, Any]) -> None:
    s = bridge_setup
    send(
        s["transport"],
        [envelope([put(6, ts=10, name={"S": "old"}), put(7, ts=10, name={"S": "only"})], eid="throttled")],
    )
    run_applier(s, throttled={6, 7})  # retry_max_attempts 1: parked at once
    (parked,) = listed("--dlq", s["dlq"])
    assert parked["state"] == "parked" and parked["changes"] == [0, 1]
    send(s["transport"], [envelope([put(6, ts=20, name={"S": "new"})], eid="newer")])
    run_applier(s)

    shown = dlq("show", parked["id"], "--dlq", s["dlq"], "--json", "--trusted-keys", str(s["trusted"]))
    assert shown.exit_code == 0, shown.output
    content = orjson.loads(shown.stdout)["content"]
    assert content["verified"] is True and [c["keys"]["user_id"]["N"] for c in content["changes"]] == ["6", "7"]

    result = dlq("replay", "--config", s["config"], "--id", parked["id"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)["replay"]
    assert (summary["resolved"], summary["changes_applied"], summary["already_there"]) == (1, 1, 1)
    items = stored(s["client"], s["table"])
    assert items[6]["name"] == {"S": "new"} and items[7]["name"] == {"S": "only"}  # the old write lost
    assert listed("--dlq", s["dlq"]) == []


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_replay_builds_its_applier_like_bridge_apply_local_origin_included(bridge_setup: dict[str, Any]) -> None:
    s = bridge_setup
    # A change that came back to the replica it was written in (active-active echo): bridge-apply
    # counts it against its local origin (target_region here); replay must do the same.
    echo = Change(key(8), Operation.PUT, Version(10, "us-west-2", 10), {**key(8), "name": {"S": "echo"}})
    send(s["transport"], [envelope([echo], eid="echo")])
    run_applier(s, throttled={8})  # retry_max_attempts 1: parked at once
    (parked,) = listed("--dlq", s["dlq"])
    result = dlq("replay", "--config", s["config"], "--id", parked["id"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)["replay"]
    assert (summary["resolved"], summary["changes_applied"], summary["echo_received"]) == (1, 1, 1)
    assert stored(s["client"], s["table"])[8]["name"] == {"S": "echo"}


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_purge_asks_first_and_removes_only_what_matches(bridge_setup: dict[str, Any], tmp_path: Path) -> None:
    s = bridge_setup
    unsigned = Change(
        {"tenant": {"S": "dlq"}, "user_id": {"N": "9"}},
        Operation.PUT,
        Version(5, "o", 5),
        {"tenant": {"S": "dlq"}, "user_id": {"N": "9"}},
    )
    parker = Parker(ReliableTransport(open_transport(s["dlq"], "dlq")), tmp_path / "q", opener=open_transport)
    parker.park_all(
        [
            FailureRecord(
                Kind.CHANGE, State.PARKED, "MessageTooLargeError", "too big", orjson.dumps(unsigned.to_wire())
            ),
            FailureRecord(Kind.ENVELOPE, State.QUARANTINED, "DecodeError", "garbage", b"garbage"),
            FailureRecord(Kind.RECORD, State.PARKED, "RecordError", "bad record", b"{}", table="users"),
        ]
    )
    parker.close()

    result = dlq("replay", "--config", s["config"], "--kind", "change")
    assert result.exit_code == 0 and "unsigned (use --allow-unsigned)" in result.output
    assert stored(s["client"], s["table"]) == {}
    result = dlq("replay", "--config", s["config"], "--kind", "change", "--allow-unsigned")
    assert result.exit_code == 0, result.output
    assert set(stored(s["client"], s["table"])) == {9}

    result = dlq("purge", "--dlq", s["dlq"], "--state", "parked", input="n\n")
    assert result.exit_code == 1 and "nothing purged" in result.output
    assert len(listed("--dlq", s["dlq"])) == 2
    result = dlq("purge", "--dlq", s["dlq"], "--state", "parked", "--yes")
    assert result.exit_code == 0 and "purged 1 failure record(s) (1 parked)" in result.output
    (left,) = listed("--dlq", s["dlq"])
    assert left["state"] == "quarantined"
    # the real entry point, as an operator runs it
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "dlq", "list", "--json", "--dlq", s["dlq"], "--wait", "0.5"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in orjson.loads(proc.stdout)] == [left["id"]]


def test_dlq_commands_say_what_is_missing() -> None:
    result = CliRunner().invoke(main, ["dlq", "list"])
    assert result.exit_code == 2 and "--dlq URL or --config FILE" in result.output
    result = CliRunner().invoke(main, ["dlq", "list", "--dlq", "memory://x", "--older-than", "soon"])
    assert result.exit_code == 2 and "not an age like" in result.output
