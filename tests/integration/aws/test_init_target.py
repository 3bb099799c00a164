"""``bridge init-target``: a missing target is created like its source; an existing one is only compared.

Real parts: moto's server (source in us-east-1, target in eu-west-1: an empty emulated region), the
command through click's runner, and a real publisher and applier (memory transport, one process) to
fill the created table before ``bridge verify`` compares it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.config import ApplyConfig, PublishConfig, load
from bridge.copy.verify import DIFFERENT_EXIT
from bridge.demo.workload import create_table
from bridge.envelope import keygen
from bridge.wiring import build_applier, build_publisher

pytestmark = pytest.mark.aws

S = "S"


def _source(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": S} for a in ("pk", "sk", "email", "grp", "ts")],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_email",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "by_group",
                "KeySchema": [{"AttributeName": "grp", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["name"]},
            },
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_time",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        Tags=[{"Key": "team", "Value": "payments"}],
    )
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})


def _configs(tmp_path: Path, moto: str, source: str, target: str) -> tuple[Path, Path]:
    private, public = keygen(tmp_path / "keys")
    publish, apply = tmp_path / "publish.yaml", tmp_path / "apply.yaml"
    publish.write_text(
        f"source_table: {source}\nsource_region: us-east-1\nsource_endpoint: {moto}\ntransport: memory://{source}\n"
        f"signing_key: {private}\ncheckpoint: {tmp_path / 'cp.sqlite'}\nquarantine_dir: {tmp_path / 'q'}\n"
        "batch_max_wait: 0.05\n"
    )
    apply.write_text(
        f"target_table: {target}\ntarget_region: eu-west-1\ntarget_endpoint: {moto}\ntransport: memory://{source}\n"
        f"trusted_keys: {public}\naccept_tables: [{source}]\nquarantine_dir: {tmp_path / 'q'}\nstatus_file: null\n"
    )
    return publish, apply


def test_init_target_recreates_indexes_and_ttl_then_verify_passes(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    _source(src, unique)
    publish, apply = _configs(tmp_path, moto_endpoint, unique, unique)
    runner = CliRunner()
    args = ["init-target", "--config", str(publish), "--config", str(apply)]

    dry = runner.invoke(admin, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would create {unique} (eu-west-1) from {unique}" in dry.output
    assert "by_email, by_group" in dry.output and "by_time" in dry.output and "TTL on expires" in dry.output
    assert unique not in dst.list_tables()["TableNames"]  # a dry run creates nothing

    made = runner.invoke(admin, args)
    assert made.exit_code == 0, made.output
    assert f"created {unique} (eu-west-1)" in made.output
    desc = dst.describe_table(TableName=unique)["Table"]
    assert [k["AttributeName"] for k in desc["KeySchema"]] == ["pk", "sk"]
    gsis = {i["IndexName"]: i for i in desc["GlobalSecondaryIndexes"]}
    assert sorted(gsis) == ["by_email", "by_group"]
    assert gsis["by_group"]["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["name"]}
    assert [i["IndexName"] for i in desc["LocalSecondaryIndexes"]] == ["by_time"]
    ttl = dst.describe_time_to_live(TableName=unique)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires")
    tags = dst.list_tags_of_resource(ResourceArn=desc["TableArn"])["Tags"]
    assert tags == [{"Key": "team", "Value": "payments"}]

    again = runner.invoke(admin, args)
    assert again.exit_code == 0 and "exists and matches" in again.output, again.output

    # Fill it through the bridge, then verify: schemas and items agree.
    for i in range(5):
        item = {"pk": {"S": f"p{i}"}, "sk": {"S": "a"}, "email": {"S": f"{i}@x"}, "grp": {"S": "g"}, "ts": {"S": "1"}}
        src.put_item(TableName=unique, Item=item)
    publisher = build_publisher(load(PublishConfig, publish, {}, environ={}), threading.Event())
    applier = build_applier(load(ApplyConfig, apply, {}, environ={}), threading.Event())
    try:
        publisher.run(until_idle=1.0)
        applier.run(until_idle=1.0)
    finally:
        publisher.close()
        applier.close()
    checked = runner.invoke(admin, ["verify", "--config", str(publish), "--config", str(apply)])
    assert checked.exit_code == 0, checked.output
    assert "schema:" not in checked.output and "identical" in checked.output


def test_an_existing_target_is_compared_never_changed(moto_endpoint: str, unique: str, tmp_path: Path) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    _source(src, unique)
    # Same keys, but no indexes and no TTL: reported, not breaking.
    create_table(
        dst,
        unique,
        stream=False,
        key_schema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        attributes=[{"AttributeName": "pk", "AttributeType": S}, {"AttributeName": "sk", "AttributeType": S}],
    )
    publish, apply = _configs(tmp_path, moto_endpoint, unique, unique)
    runner = CliRunner()
    result = runner.invoke(admin, ["init-target", "--config", str(publish), "--config", str(apply)])
    assert result.exit_code == 0, result.output
    assert "exists (left as it is); 4 difference(s)" in result.output
    assert "global secondary index by_email: source has it, target missing" in result.output
    assert "local secondary index by_time: source has it, target missing" in result.output
    assert "TTL attribute: source expires, target off" in result.output
    assert not dst.describe_table(TableName=unique)["Table"].get("GlobalSecondaryIndexes")  # untouched
    checked = runner.invoke(admin, ["verify", "--config", str(publish), "--config", str(apply)])
    assert checked.exit_code == 0, checked.output  # both empty: the items agree
    assert "schema: global secondary index by_email: source has it, target missing" in checked.output

    # Another key schema breaks replication: exit 8, and the table stays as it is.
    other = f"{unique}-n"
    create_table(dst, other, stream=False)  # tenant S hash, user_id N range
    publish, apply = _configs(tmp_path / "other", moto_endpoint, unique, other)
    broken = runner.invoke(admin, ["init-target", "--config", str(publish), "--config", str(apply)])
    assert broken.exit_code == DIFFERENT_EXIT, broken.output
    assert "key schema: source pk HASH S, sk RANGE S, target tenant HASH S, user_id RANGE N (breaks replication)" in (
        broken.output
    )


def test_what_the_target_partition_refuses_is_left_out_and_said(moto_endpoint: str, unique: str) -> None:
    """A partition without tags on CreateTable (refused as AWS refuses: ValidationException): the table is
    created without them and a line says so. moto accepts everything, so a before-call hook refuses."""
    from botocore.awsrequest import AWSResponse

    from bridge.copy.schema import create_target, describe_schema

    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    _source(src, unique)
    refused: list[str] = []

    def no_tags(params: dict[str, Any], **_: Any) -> Any:
        if b'"Tags"' not in params.get("body", b""):  # the JSON request body
            return None
        refused.append("Tags")
        error = {"Code": "ValidationException", "Message": "Tags are not supported in this partition"}
        return AWSResponse(params.get("url", ""), 400, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    dst.meta.events.register("before-call.dynamodb.CreateTable", no_tags)
    source = describe_schema(src, unique)
    assert source is not None and source.tags == {"team": "payments"}
    skipped = create_target(dst, source, unique)
    assert refused == ["Tags"]
    assert skipped == ["Tags not set: the target refused it (ValidationException)"]
    desc = dst.describe_table(TableName=unique)["Table"]
    assert sorted(i["IndexName"] for i in desc["GlobalSecondaryIndexes"]) == ["by_email", "by_group"]
    assert dst.list_tags_of_resource(ResourceArn=desc["TableArn"]).get("Tags", []) == []
