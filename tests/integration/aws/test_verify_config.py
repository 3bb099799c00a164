"""`bridge verify --config`: each side reached as its daemon reaches it (here: a role in another account)."""

from __future__ import annotations

from pathlib import Path

import boto3
import orjson
import pytest
from click.testing import CliRunner

from bridge.aws import AwsSide
from bridge.cli.admin import main as admin
from bridge.demo.workload import create_table

ROLE = "arn:aws:iam::111111111111:role/bridge-source-reader"


def put_items(client: object, table: str, n: int) -> None:
    for i in range(n):
        client.put_item(  # type: ignore[attr-defined]
            TableName=table, Item={"tenant": {"S": "t"}, "user_id": {"N": str(i)}, "name": {"S": f"n{i}"}}
        )


@pytest.mark.aws
def test_verify_takes_each_side_from_the_daemons_configs(
    moto_endpoint: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    # The source table lives in the role's account: reachable only through source_role_arn.
    source = AwsSide("cn-north-1", moto_endpoint, role_arn=ROLE).client("dynamodb")
    target = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(source, unique)
    create_table(target, unique, stream=False)
    put_items(source, unique, 7)
    put_items(target, unique, 7)
    pub_cfg, app_cfg = tmp_path / "publish.yaml", tmp_path / "apply.yaml"
    pub_cfg.write_text(
        f"source_table: {unique}\nsource_region: cn-north-1\nsource_endpoint: {moto_endpoint}\n"
        f"source_role_arn: {ROLE}\nsigning_key: {tmp_path / 'k'}\ntransport: memory://{unique}\n"
    )
    app_cfg.write_text(
        f"target_table: {unique}\ntarget_region: us-west-2\ntarget_endpoint: {moto_endpoint}\n"
        f"trusted_keys: {tmp_path / 'k.pub'}\ntransport: memory://{unique}\n"
    )
    runner = CliRunner()
    ok = runner.invoke(admin, ["verify", "--config", str(pub_cfg), "--config", str(app_cfg), "--json"])
    assert ok.exit_code == 0, ok.output
    result = orjson.loads(ok.stdout.strip().splitlines()[-1])
    assert (result["identical"], result["source_items"], result["target_items"]) == (True, 7, 7)

    # the same flags without the role cannot see the source table: the config's role was used
    flags = ["--source-table", unique, "--source-region", "cn-north-1", "--source-endpoint", moto_endpoint]
    without = runner.invoke(admin, ["verify", *flags, "--config", str(app_cfg), "--json"])
    assert without.exit_code != 0 and unique in without.output
    # and flags override the files
    with_role = runner.invoke(admin, ["verify", *flags, "--source-role-arn", ROLE, "--config", str(app_cfg)])
    assert with_role.exit_code == 0, with_role.output
    assert "identical" in with_role.output

    missing = runner.invoke(admin, ["verify", "--config", str(app_cfg)])
    assert missing.exit_code == 2 and "--source-table, or --config with a publish config" in missing.output
