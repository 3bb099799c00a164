from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.config import ApplyConfig, PublishConfig, load, yaml_only
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,model", [("publish", PublishConfig), ("apply", ApplyConfig)])
def test_example_configs_are_valid(name: str, model: type) -> None:
    cfg = load(model, ROOT / "config" / f"{name}.example.yaml", {}, environ={})
    assert cfg.transport.startswith("amqps://")


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("source_table: from-file\nsource_region: r1\ntransport: memory://q\nsigning_key: k\n")
    env = {"BRIDGE_SOURCE_TABLE": "from-env", "BRIDGE_BATCH_MAX_CHANGES": "7"}
    cfg = load(PublishConfig, f, {"source_table": None}, environ=env)
    assert (cfg.source_table, cfg.batch_max_changes) == ("from-env", 7)
    cfg = load(PublishConfig, f, {"source_table": "from-flag"}, environ=env)
    assert cfg.source_table == "from-flag"
    assert cfg.origin_id == "r1"


def test_errors_name_every_bad_key(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("source_table: t1x\nsource_regoin: r1\ntransport: nourl\nsigning_key: k\nbatch_max_changes: 0\n")
    with pytest.raises(ConfigError) as info:
        load(PublishConfig, f, {}, environ={})
    msg = str(info.value)
    assert str(f) in msg
    for fragment in (
        "source_regoin: unknown setting",
        "source_region: required",
        "BRIDGE_SOURCE_REGION",
        "transport:",
        "batch_max_changes:",
    ):
        assert fragment in msg


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("source_table: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(PublishConfig, f, {}, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(PublishConfig, tmp_path / "nope.yaml", {}, environ={})


def test_check_config_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(admin, ["check-config", str(ROOT / "config" / "apply.example.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "valid apply configuration" in ok.output
    assert "CHANGE-ME" not in ok.output  # broker password redacted
    with_proxy = tmp_path / "proxy.yaml"
    with_proxy.write_text(
        "target_table: t1x\ntarget_region: r\ntrusted_keys: k\n"
        "target_proxy: http://user:proxy-secret@proxy:3128\n"
        "transport: kinesis://s?region=r&proxy=http://u:query-secret@p:3128\n"
    )
    shown = runner.invoke(admin, ["check-config", str(with_proxy)])
    assert shown.exit_code == 0, shown.output
    assert "proxy-secret" not in shown.output and "query-secret" not in shown.output
    assert "***" in shown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("target_table: t1x\n")
    result = runner.invoke(admin, ["check-config", str(bad)])
    assert result.exit_code == ConfigError.exit_code
    assert "target_region: required" in result.output


@pytest.mark.parametrize("command,model", [("publish", PublishConfig), ("apply", ApplyConfig)])
def test_each_setting_has_one_name_across_yaml_env_and_flag(command: str, model: type, tmp_path: Path) -> None:
    """Flags are generated from the models: one per setting, named after it, and nothing else but --config."""
    import importlib

    cli = importlib.import_module(f"bridge.cli.{command}").main
    options = {p.name: p for p in cli.params if isinstance(p, click.Option)}
    # --config and one-shot actions (not settings: nothing to keep in a file; --pipeline picks what runs)
    # child_index: hidden, set by the --processes supervisor for each child it starts.
    actions = {"config_file", "help", "reset_checkpoint", "pipeline", "child_index"}
    # Settings only a file can hold (a list of mappings: pipelines) have no flag and no env var.
    file_only = {n for n, f in model.model_fields.items() if yaml_only(f)}
    assert file_only <= {"pipelines"}, file_only
    assert set(options) - actions == set(model.model_fields) - file_only
    for name, field in model.model_fields.items():
        assert field.description, f"{name}: describe the setting (the flag's help and README say it)"
        if name in file_only:
            continue
        flags = options[name].opts
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        assert f"--{name.replace('_', '-')}" in flags or extra.get("flag"), (name, flags)
        assert field.description, f"{name}: describe the setting (the flag's help and README say it)"
    # The same setting, three ways, reaches the same field.
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    values = {"transport": "memory://q", "signing_key": "k", "trusted_keys": "k"}
    base = {n: values.get(n, "name-x") for n in required}
    f = tmp_path / "c.yaml"
    f.write_text("".join(f"{k}: {v}\n" for k, v in base.items()) + "batch_max_wait: 0.5\n" * (command == "publish"))
    from_file = load(model, f, {}, environ={})
    env = {f"BRIDGE_{k.upper()}": str(v) for k, v in base.items()}
    assert load(model, None, {}, environ=env) == load(model, None, base, environ={})
    assert from_file.transport == "memory://q"
    result = CliRunner().invoke(cli, ["--config", str(f), "--transport", "memory://", "--log-level", "bogus"])
    assert result.exit_code != 0 and "bogus" in result.output


def test_check_config_names_a_misspelt_table_key(tmp_path: Path) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text("source_tabel: t1x\nsource_region: r\ntransport: memory://q\nsigning_key: k\n")
    result = CliRunner().invoke(admin, ["check-config", str(f)])
    assert result.exit_code == ConfigError.exit_code
    assert "source_tabel: unknown setting (did you mean source_table?)" in result.output
    f.write_text("source_table: t1x\nsource_regoin: r\ntransport: memory://q\nsigning_key: k\n")
    result = CliRunner().invoke(admin, ["check-config", str(f)])
    assert "source_regoin: unknown setting (did you mean source_region?)" in result.output


def test_check_config_prints_effective_defaults_not_none() -> None:
    result = CliRunner().invoke(admin, ["check-config", str(ROOT / "config" / "apply.example.yaml")])
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "  origin: (us-west-2: the target_region)" in result.output
    assert "  tombstone_table: (users-bridge-tombstones)" in result.output
    assert "  dead_letter: (amqps://bridge:***@mq.example.com:5671/replication?queue=users.dlq" in result.output
    assert "  metrics_port: (off: /metrics, /healthz and /readyz not served)" in result.output
