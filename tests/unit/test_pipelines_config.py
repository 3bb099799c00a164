"""``pipelines:`` and ``source_tables`` in a config: defaults, overrides, names, refusals; the checkpoint namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.config import ApplyConfig, PublishConfig, load, load_pipelines
from bridge.errors import ConfigError
from bridge.state.checkpoints import SqliteCheckpointStore
from bridge.state.namespace import namespaced

TOP = "source_region: r1\nsigning_key: k\nbatch_max_changes: 50\ntransport: amqp://h/?queue=repl-{table}\n"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_top_level_settings_are_defaults_each_entry_overrides(tmp_path: Path) -> None:
    f = _file(
        tmp_path,
        TOP
        + "pipelines:\n"
        + "  - source_table: orders\n"
        + "  - name: users-eu\n    source_table: users\n    batch_max_changes: 7\n"
        + "    transport: amqp://h/?queue=users-eu\n",
    )
    found = load_pipelines(PublishConfig, f, {}, environ={})
    assert [p.name for p in found] == ["orders", "users-eu"]
    orders, users = (p.cfg for p in found)
    assert (orders.source_table, orders.batch_max_changes, orders.transport) == (
        "orders",
        50,
        "amqp://h/?queue=repl-orders",
    )
    assert (users.source_table, users.batch_max_changes, users.source_region) == ("users", 7, "r1")
    assert all(p.listed for p in found)
    # Flags override the top level (and so every pipeline not overriding them).
    flagged = load_pipelines(PublishConfig, f, {"batch_max_changes": 9}, environ={})
    assert [p.cfg.batch_max_changes for p in flagged] == [9, 7]
    only = load_pipelines(PublishConfig, f, {}, environ={}, select=("users-eu",))
    assert [p.name for p in only] == ["users-eu"]
    with pytest.raises(ConfigError, match=r"--pipeline nope: no such pipeline .*\(pipelines: orders, users-eu\)"):
        load_pipelines(PublishConfig, f, {}, environ={}, select=("nope",))
    with pytest.raises(ConfigError, match="lists pipelines: this command takes a config of one table"):
        load(PublishConfig, f, {}, environ={})


def test_one_table_config_is_one_unlisted_pipeline(tmp_path: Path) -> None:
    f = _file(tmp_path, TOP + "source_table: orders\n")
    [one] = load_pipelines(PublishConfig, f, {}, environ={})
    assert (one.name, one.listed, one.cfg.transport) == ("orders", False, "amqp://h/?queue=repl-{table}")


def test_source_tables_become_pattern_pipelines(tmp_path: Path) -> None:
    f = _file(tmp_path, TOP + 'source_tables: ["orders-*", users]\n')
    found = load_pipelines(PublishConfig, f, {}, environ={})
    assert [(p.name, p.pattern) for p in found] == [("orders-*", True), ("users", False)]
    assert found[1].cfg.transport == "amqp://h/?queue=repl-users"
    env = {"BRIDGE_SOURCE_TABLES": "a1x,b1x", **{f"BRIDGE_{k.upper()}": v for k, v in (("source_region", "r"),)}}
    from_env = load_pipelines(PublishConfig, _file(tmp_path, TOP), {}, environ=env)
    assert [p.name for p in from_env] == ["a1x", "b1x"]


def test_refusals_name_the_pipeline(tmp_path: Path) -> None:
    same = TOP.replace("repl-{table}", "one") + "pipelines:\n  - source_table: aaa\n  - source_table: bbb\n"
    with pytest.raises(ConfigError, match="pipelines aaa and bbb use the same transport"):
        load_pipelines(PublishConfig, _file(tmp_path, same), {}, environ={})
    twice = TOP + "pipelines:\n  - source_table: aaa\n  - source_table: aaa\n"
    with pytest.raises(ConfigError, match="pipeline name aaa used twice"):
        load_pipelines(PublishConfig, _file(tmp_path, twice), {}, environ={})
    bad = TOP + "pipelines:\n  - source_table: aaa\n    batch_max_changez: 3\n"
    with pytest.raises(ConfigError, match=r"pipelines\[0\] \(aaa\): batch_max_changez: unknown setting"):
        load_pipelines(PublishConfig, _file(tmp_path, bad), {}, environ={})
    key = TOP + "pipelines:\n  - source_table: aaa\n    active_active: true\n    exclude_attributes: [x]\n"
    with pytest.raises(ConfigError, match="could not converge"):
        load_pipelines(PublishConfig, _file(tmp_path, key), {}, environ={})


def test_apply_pipelines_get_a_status_file_each(tmp_path: Path) -> None:
    f = _file(
        tmp_path,
        "target_region: r\ntrusted_keys: k\ntransport: amqp://h/?queue={table}\n"
        "pipelines:\n  - target_table: aaa\n  - target_table: bbb\n    status_file: /tmp/b.json\n",
    )
    found = load_pipelines(ApplyConfig, f, {}, environ={})
    assert [str(p.cfg.status_file) for p in found] == ["bridge-apply-status.aaa.json", "/tmp/b.json"]
    result = CliRunner().invoke(admin, ["check-config", str(f)])
    assert result.exit_code == 0, result.output
    assert "valid apply configuration, 2 pipeline(s)" in result.output and "  pipeline bbb:" in result.output


def test_checkpoint_namespaces_keep_pipelines_apart(tmp_path: Path) -> None:
    store = SqliteCheckpointStore(tmp_path / "cp.sqlite")
    a, b, plain = namespaced(store, "a"), namespaced(store, "b"), namespaced(store, None)
    a.save("arn:stream", "shard-1", "100")
    b.save("arn:stream", "shard-1", "200")
    assert a.load("arn:stream")["shard-1"].sequence_number == "100"
    assert b.load("arn:stream")["shard-1"].sequence_number == "200"
    assert plain.load("arn:stream") == {}  # a one-table config's plain id is neither
    store.close()


@pytest.mark.parametrize("name,model", [("publish", PublishConfig), ("apply", ApplyConfig)])
def test_the_multi_table_examples_are_valid(name: str, model: type) -> None:
    path = Path(__file__).resolve().parents[2] / "config" / f"{name}.pipelines.example.yaml"
    found = load_pipelines(model, path, {}, environ={})
    assert len(found) == 3 and all(p.listed for p in found)
    assert all("{table}" not in p.cfg.transport for p in found if not p.pattern)


def test_dlq_commands_pick_one_pipeline(tmp_path: Path) -> None:
    f = _file(
        tmp_path,
        f"target_region: r\ntrusted_keys: k\ntransport: memory://{tmp_path.name}-{{table}}\n"
        f"quarantine_dir: {tmp_path / 'q'}\npipelines:\n  - target_table: aaa\n  - target_table: bbb\n",
    )
    runner = CliRunner()
    unnamed = runner.invoke(admin, ["dlq", "list", "--config", str(f), "--wait", "0.1"])
    assert unnamed.exit_code == ConfigError.exit_code
    assert "lists pipelines (aaa, bbb): say which with --pipeline NAME" in unnamed.output
    named = runner.invoke(admin, ["dlq", "list", "--config", str(f), "--pipeline", "bbb", "--wait", "0.1", "--json"])
    assert named.exit_code == 0, named.output
    assert named.output.strip() == "[]"


def test_daemons_refuse_an_unknown_pipeline(tmp_path: Path) -> None:
    from bridge.cli.publish import main as publish

    f = _file(tmp_path, TOP + "pipelines:\n  - source_table: aaa\n")
    result = CliRunner().invoke(publish, ["--config", str(f), "--pipeline", "zzz"])
    assert result.exit_code == ConfigError.exit_code
    assert "--pipeline zzz: no such pipeline" in result.output and "(pipelines: aaa)" in result.output


def test_lag_figures_stay_with_their_pipelines_table() -> None:
    import time

    from bridge.change import Outcome
    from bridge.observe import metrics
    from bridge.observe.emf import REPLICATION_LATENCY, EmfWriter

    a, b = EmfWriter("lag-table-a", "r"), EmfWriter("lag-table-b", "r")
    try:
        metrics.change_applied("lag-table-a", "o", int((time.time() - 2) * 1e6), Outcome.APPLIED)
        (doc_a,), (doc_b,) = a.documents(), b.documents()
        assert len(doc_a[REPLICATION_LATENCY]) == 1 and doc_a[REPLICATION_LATENCY][0] >= 2000
        assert REPLICATION_LATENCY not in doc_b
    finally:
        a.close()
        b.close()
