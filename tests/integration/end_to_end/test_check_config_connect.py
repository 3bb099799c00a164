"""`bridge check-config --connect` against a real RabbitMQ and moto: what a new operator runs first."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.demo.workload import create_table
from bridge.envelope import keygen
from bridge.errors import ConfigError, KeyFileError


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_connect_checks_plugin_keys_broker_and_tables(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    create_table(src, unique)
    private, public = keygen(tmp_path / "keys")
    transport = f"transport: {amqp_url}?queue={unique}\n"
    pub_cfg = tmp_path / "publish.yaml"
    pub_cfg.write_text(
        f"source_table: {unique}\nsource_region: cn-north-1\nsource_endpoint: {moto_endpoint}\n"
        f"signing_key: {private}\n{transport}"
    )
    runner = CliRunner()
    ok = runner.invoke(admin, ["check-config", str(pub_cfg), "--connect"])
    assert ok.exit_code == 0, ok.output
    assert "transport plugin: ok, amqp" in ok.output
    assert "signing key: ok, Ed25519 private key" in ok.output
    assert "broker: ok, amqp://guest:***@" in ok.output and "0 message(s) waiting" in ok.output
    assert f"source table and stream: ok, {unique}: keys tenant, user_id; stream arn:aws-cn:dynamodb:" in ok.output
    assert "guest:guest" not in ok.output

    private.chmod(0o644)
    exposed = runner.invoke(admin, ["check-config", str(pub_cfg), "--connect"])
    assert exposed.exit_code == KeyFileError.exit_code
    assert "signing key: FAILED (KeyFileError)" in exposed.output and "chmod 600" in exposed.output

    app_cfg = tmp_path / "apply.yaml"
    app_cfg.write_text(
        f"target_table: {unique}-missing\ntarget_region: us-west-2\ntarget_endpoint: {moto_endpoint}\n"
        f"trusted_keys: {public}\n{transport}"
    )
    missing = runner.invoke(admin, ["check-config", str(app_cfg), "--connect"])
    assert missing.exit_code == ConfigError.exit_code
    assert "trusted keys: ok, 1 Ed25519 public key(s)" in missing.output
    assert "target table: FAILED" in missing.output and "does not exist" in missing.output
