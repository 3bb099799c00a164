"""``bridge verify``: finds every planted divergence, ignores bridge attributes, and ``--repair``
fixes what it found through the real transport and apply path.

Real parts: moto's server for both tables, RabbitMQ and a real applier for the repair; the
command runs in-process through click's runner (so the memory transport can be inspected).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from click.testing import CliRunner

from bridge.change import Operation, Version
from bridge.cli.admin import main as admin
from bridge.config import ApplyConfig
from bridge.copy.bootstrap import COPY_MARGIN_S
from bridge.copy.compare import canonical_bytes, compare_tables, item_digest
from bridge.copy.verify import DIFFERENT_EXIT
from bridge.demo.workload import create_table
from bridge.envelope import TrustStore, decode, keygen
from bridge.plugin.manager import open_transport
from bridge.wiring import build_applier
from tests.integration.rabbitmq.test_bootstrap import KEYS, ORIGIN, item, key_of, seed

STAMP = {"updated_at": {"N": "1700000000.5"}}
OLD_VERSION = Version(1_700_000_000_500_000, ORIGIN, 7)


# -- what "equal" means -----------------------------------------------------------------------------


def test_items_compare_by_meaning_not_spelling() -> None:
    a = {
        "k": {"S": "x"},
        "n": {"N": "1.50"},
        "big": {"N": "1E+2"},
        "ns": {"NS": ["2", "1.0"]},
        "ss": {"SS": ["b", "a"]},
        "m": {"M": {"y": {"N": "0.0"}, "x": {"L": [{"N": "1"}, {"S": "z"}]}}},
        "_bridge_v": {"S": "000 a 000"},
    }
    b = {
        "_bridge_v": {"S": "999 b 999"},
        "_bridge_expires": {"N": "5"},
        "m": {"M": {"x": {"L": [{"N": "1.0"}, {"S": "z"}]}, "y": {"N": "-0"}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2"]},
        "big": {"N": "100"},
        "n": {"N": "1.5"},
        "k": {"S": "x"},
    }
    assert canonical_bytes(a) == canonical_bytes(b) and item_digest(a) == item_digest(b)
    reordered_list = {**b, "m": {"M": {"x": {"L": [{"S": "z"}, {"N": "1"}]}, "y": {"N": "0"}}}}
    assert item_digest(reordered_list) != item_digest(a)  # lists keep their order
    assert item_digest({**a, "n": {"S": "1.5"}}) != item_digest(a)  # a string is not a number
    assert item_digest({**a, "extra": {"NULL": True}}) != item_digest(a)


# -- finding divergences ----------------------------------------------------------------------------


def tables(endpoint: str, name: str, n: int, target_version: Version = OLD_VERSION) -> tuple[Any, Any]:
    """Source and target holding the same ``n`` items; the target's carry bridge attributes, as
    bridge-apply writes them."""
    src = boto3.client("dynamodb", endpoint_url=endpoint, region_name=ORIGIN)
    dst = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-west-2")
    create_table(src, name, stream=False)
    create_table(dst, name, stream=False)
    seed(src, name, range(n), **STAMP)
    seed(dst, name, range(n), **STAMP, _bridge_v={"S": target_version.encode()}, _bridge_note={"S": "ours"})
    return src, dst


def verify(endpoint: str, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    args = [
        "verify",
        "--source-table",
        name,
        "--source-region",
        ORIGIN,
        "--source-endpoint",
        endpoint,
        "--target-table",
        name,
        "--target-region",
        "us-west-2",
        "--target-endpoint",
        endpoint,
        "--json",
        *extra,
    ]
    result = CliRunner().invoke(admin, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, orjson.loads(result.stdout.strip().splitlines()[-1])


def plant(dst: Any, name: str) -> dict[str, str]:
    """Three kinds of divergence, written straight to the target (as a stray writer would)."""
    dst.delete_item(TableName=name, Key=key_of(3))
    dst.put_item(TableName=name, Item=item(10_000, **STAMP))
    dst.update_item(
        TableName=name, Key=key_of(5), UpdateExpression="SET score = :s", ExpressionAttributeValues={":s": {"N": "-1"}}
    )
    return {"3": "only_in_source", "10000": "only_in_target", "5": "different"}


def found(result: dict[str, Any]) -> dict[str, str]:
    return {d["key"]["user_id"]["N"]: d["kind"] for d in result["differences"]}


@pytest.mark.aws
def test_verify_finds_exactly_the_planted_divergences(moto_endpoint: str, unique: str) -> None:
    _, dst = tables(moto_endpoint, unique, 150)
    code, result = verify(moto_endpoint, unique)
    assert (code, result["identical"], result["source_items"], result["target_items"]) == (0, True, 150, 150)
    assert result["differing_buckets"] == 0

    planted = plant(dst, unique)
    code, result = verify(moto_endpoint, unique)
    assert code == DIFFERENT_EXIT and not result["identical"]
    assert found(result) == planted
    assert 1 <= result["differing_buckets"] <= 3 and result["buckets"] >= 256

    code, one_bucket = verify(moto_endpoint, unique, "--buckets", "1", "--segments", "2")
    assert code == DIFFERENT_EXIT and found(one_bucket) == planted

    text = CliRunner().invoke(
        admin,
        [
            "verify",
            "--source-table",
            unique,
            "--source-region",
            ORIGIN,
            "--source-endpoint",
            moto_endpoint,
            "--target-table",
            unique,
            "--target-region",
            "us-west-2",
            "--target-endpoint",
            moto_endpoint,
        ],
    )
    assert text.exit_code == DIFFERENT_EXIT
    assert "3 keys differ" in text.output and "only in source" in text.output and '"N":"10000"' in text.output


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_repair_republishes_the_differences_and_verify_then_passes(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src, dst = tables(moto_endpoint, unique, 200)
    plant(dst, unique)
    private, public = keygen(tmp_path / "keys")
    url = f"{amqp_url}?queue={unique}"
    stop = threading.Event()
    applier = build_applier(
        ApplyConfig(
            target_table=unique,
            target_region="us-west-2",
            target_endpoint=moto_endpoint,
            trusted_keys=public,
            transport=url,
            quarantine_dir=tmp_path / "q",
        ),
        stop,
    )
    thread = threading.Thread(target=applier.run, daemon=True)
    thread.start()
    try:
        code, result = verify(
            moto_endpoint,
            unique,
            "--repair",
            "--transport",
            url,
            "--signing-key",
            str(private),
            "--timestamp-attribute",
            "updated_at",
            "--quarantine-dir",
            str(tmp_path / "q"),
        )
    finally:
        stop.set()
        thread.join(30)
        applier.close()
    assert code == 0, result
    assert len(result["differences"]) == 3
    repair = result["repair"]
    assert (repair["sent"], repair["confirmed"], repair["refused"], repair["unconfirmed"]) == (3, 3, [], [])
    code, again = verify(moto_endpoint, unique)
    assert code == 0 and again["identical"]
    assert compare_tables(src, unique, dst, unique, KEYS).identical


@pytest.mark.aws
def test_repair_never_overrules_a_write_newer_than_it_can_safely_claim(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """Stream-time versions: a repair read at R claims R - margin. The target's copy of key 5 was
    written by the bridge just now (a version newer than that): refused, not sent. Key 8's wrong
    copy is old: sent, as a put the applier will take."""
    _, dst = tables(moto_endpoint, unique, 20)
    recent = Version(int(time.time() * 1_000_000), ORIGIN, 9)
    dst.update_item(
        TableName=unique,
        Key=key_of(5),
        UpdateExpression="SET score = :s, #v = :v",
        ExpressionAttributeNames={"#v": "_bridge_v"},
        ExpressionAttributeValues={":s": {"N": "-1"}, ":v": {"S": recent.encode()}},
    )
    dst.update_item(
        TableName=unique,
        Key=key_of(8),
        UpdateExpression="SET score = :s",
        ExpressionAttributeValues={":s": {"N": "-1"}},
    )
    private, public = keygen(tmp_path / "keys")
    before = time.time()
    code, result = verify(
        moto_endpoint,
        unique,
        "--repair",
        "--transport",
        f"memory://{unique}",
        "--signing-key",
        str(private),
        "--repair-wait",
        "0",
        "--quarantine-dir",
        str(tmp_path / "q"),
    )
    assert code == DIFFERENT_EXIT
    repair = result["repair"]
    assert repair["sent"] == 1 and [r["key"]["user_id"]["N"] for r in repair["refused"]] == ["5"]
    assert repair["refused"][0]["target_version"] == recent.encode()
    assert [k["user_id"]["N"] for k in repair["unconfirmed"]] == ["8"]  # no applier in this test

    (delivery,) = open_transport(f"memory://{unique}", "consume").receive(10, timeout=1)
    (change,) = decode(delivery.body, TrustStore.load(public)).changes
    assert change.op is Operation.PUT and change.keys == key_of(8)
    assert change.new_image is not None and change.new_image["score"] == item(8)["score"]
    assert change.version.origin == ORIGIN and change.version > OLD_VERSION
    assert change.version.ts_us <= (time.time() - COPY_MARGIN_S + 1) * 1_000_000
    assert change.version.ts_us >= (before - COPY_MARGIN_S - 1) * 1_000_000


@pytest.mark.aws
def test_bad_invocations_fail_with_a_clear_message(moto_endpoint: str, unique: str) -> None:
    result = CliRunner().invoke(
        admin,
        [
            "verify",
            "--source-table",
            "a1b",
            "--source-region",
            ORIGIN,
            "--target-table",
            "c2d",
            "--target-region",
            ORIGIN,
            "--repair",
        ],
    )
    assert result.exit_code == 2 and "--repair needs --transport" in result.output

    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name=ORIGIN)
    create_table(src, unique, stream=False)
    create_table(
        src,
        f"{unique}-other",
        stream=False,
        key_schema=[{"AttributeName": "tenant", "KeyType": "HASH"}],
        attributes=[{"AttributeName": "tenant", "AttributeType": "S"}],
    )
    args = [
        "verify",
        "--source-table",
        unique,
        "--source-region",
        ORIGIN,
        "--source-endpoint",
        moto_endpoint,
        "--target-region",
        ORIGIN,
        "--target-endpoint",
        moto_endpoint,
        "--target-table",
    ]
    result = CliRunner().invoke(admin, [*args, f"{unique}-other"])
    assert result.exit_code == 2 and "key schemas differ" in result.output
    result = CliRunner().invoke(admin, [*args, f"{unique}-missing"])
    assert result.exit_code == 2 and "does not exist" in result.output
