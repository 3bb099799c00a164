"""`prefetch` meant two things; now the apply setting is `batch_messages` (messages per receive, one
batch) and `prefetch` is only the transport URL's broker QoS. Old configs keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli.apply import main as apply_main
from bridge.config import ApplyConfig, load
from bridge.errors import ConfigError

REQUIRED = {
    "target_table": "users",
    "target_region": "us-west-2",
    "trusted_keys": "/k.pub",
    "transport": "amqp://h/?queue=q&prefetch=64",
}


def test_batch_messages_is_the_per_batch_take_and_prefetch_its_old_name(tmp_path: Path) -> None:
    assert load(ApplyConfig, None, REQUIRED, environ={}).batch_messages == 16
    old = tmp_path / "old.yaml"
    old.write_text("prefetch: 8\n")
    assert load(ApplyConfig, old, REQUIRED, environ={}).batch_messages == 8
    both = tmp_path / "both.yaml"
    both.write_text("prefetch: 8\nbatch_messages: 4\n")
    with pytest.raises(ConfigError, match="prefetch is the old name of batch_messages"):
        load(ApplyConfig, both, REQUIRED, environ={})
    env = {"BRIDGE_BATCH_MESSAGES": "32"}
    assert load(ApplyConfig, None, REQUIRED, environ=env).batch_messages == 32
    assert load(ApplyConfig, None, REQUIRED, environ={"BRIDGE_PREFETCH": "12"}).batch_messages == 12


@pytest.mark.parametrize("flag", ["--batch-messages", "--prefetch"])
def test_the_flag_and_its_old_name(flag: str) -> None:
    result = CliRunner().invoke(apply_main, [flag, "0", *[f"--{k.replace('_', '-')}={v}" for k, v in REQUIRED.items()]])
    assert result.exit_code == 2
    assert "batch_messages: Input should be greater than or equal to 1" in result.output
