"""Three tables in one process each side, SIGKILLed mid-run: nothing lost, every table identical.

Real parts: moto's server, RabbitMQ (a queue per table), bridge-publish and bridge-apply processes
running three pipelines each (tables with S hash; N hash + S range; B hash keys), killed with SIGKILL
once changes flow, stopped with SIGTERM at the end (every pipeline drains: exit 0).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from bridge.cli.admin import main as admin
from bridge.copy.compare import compare_tables
from tests.helpers import no_failures_anywhere, start, wait_until
from tests.integration.end_to_end.test_pipelines import SCHEMAS, Writer, configs, create, key_names
from tests.integration.end_to_end.test_sigkill import kill_and_restart, target_count

pytestmark = [pytest.mark.aws, pytest.mark.rabbitmq]


def test_three_tables_in_one_process_survive_sigkill(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    tables = {kind: f"{unique}-{kind}" for kind in SCHEMAS}
    for kind, table in tables.items():
        create(src, table, kind, stream=True)
    publish_file, apply_file = configs(tmp_path, moto_endpoint, amqp_url, unique)
    # The targets are made by init-target: the pattern expanded, each apply pipeline paired with its source.
    made = CliRunner().invoke(admin, ["init-target", "--config", str(publish_file), "--config", str(apply_file)])
    assert made.exit_code == 0, made.output
    assert made.output.count("created ") == 3, made.output
    for kind, table in tables.items():
        assert dst.describe_table(TableName=table)["Table"]["KeySchema"] == SCHEMAS[kind][0]
    publish, apply = ["--config", str(publish_file)], ["--config", str(apply_file)]
    log = tmp_path / "bridge.log"
    pub = start("bridge.cli.publish", publish, log)
    app = start("bridge.cli.apply", apply, log)
    # Paced, so both kills land while the tables are still being written.
    writer = Writer(src, tables, ops=600, seed=5, rate=50)
    writer.start()

    def applied() -> list[int]:
        return [target_count(dst, t) for t in tables.values()]

    try:
        wait_until("changes applied in every table", lambda: min(applied()) >= 3, timeout=120)
        pub = kill_and_restart(pub, "bridge.cli.publish", publish, log)
        writing_at_kills = [writer.is_alive()]
        before = sum(applied())
        wait_until("more applied after the publisher's restart", lambda: sum(applied()) > before + 5, timeout=120)
        app = kill_and_restart(app, "bridge.cli.apply", apply, log)
        writing_at_kills.append(writer.is_alive())
        writer.join(timeout=300)
        assert not writer.is_alive() and writer.error is None, writer.error
        deadline = time.monotonic() + 180
        diffs = {}
        while time.monotonic() < deadline:
            diffs = {k: compare_tables(src, t, dst, t, key_names(k)) for k, t in tables.items()}
            if all(d.identical for d in diffs.values()):
                break
            time.sleep(1)
    finally:
        for proc in (pub, app):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (pub, app)]
    output = log.read_text()
    for kind, diff in diffs.items():
        assert diff.identical, f"{tables[kind]}: {diff.count} keys differ\n{output[-3000:]}"
        assert diff.compared >= 10, (kind, diff.compared)
    assert codes == [0, 0], output[-3000:]  # SIGTERM drains every pipeline
    assert writing_at_kills == [True, True]  # both kills landed mid-run
    assert f"source_tables {unique}-*: {tables['b']}, {tables['n']}, {tables['s']}" in output
    assert "guest:guest" not in output
    for table in tables.values():
        assert no_failures_anywhere(f"{amqp_url}?queue={table}.dlq") == []
    # bridge verify takes the same pipeline configs, one pipeline at a time.
    both = ["verify", "--config", str(publish_file), "--config", str(apply_file)]
    checked = CliRunner().invoke(admin, [*both, "--pipeline", tables["n"]])
    assert checked.exit_code == 0 and "identical" in checked.output, checked.output
    unnamed = CliRunner().invoke(admin, both)
    assert unnamed.exit_code == 2 and "say which with --pipeline NAME" in unnamed.output, unnamed.output
