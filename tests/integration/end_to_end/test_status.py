"""`bridge status --json` against real stores: RabbitMQ depths, moto's stream, the applier's status file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from bridge.errors import BehindError
from tests.helpers import start, wait_identical, wait_until

KEYS = ("tenant", "user_id")


def status(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "status", "--config", str(config), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, BehindError.exit_code), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_status_shows_a_backlog_growing_while_the_applier_is_stopped_and_drained_after(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    common = f"quarantine_dir: {tmp_path / 'q'}\ntransport: {amqp_url}?queue={unique}"
    pub_cfg, app_cfg = tmp_path / "publish.yaml", tmp_path / "apply.yaml"
    pub_cfg.write_text(
        f"source_table: {unique}\nsource_region: cn-north-1\nsource_endpoint: {moto_endpoint}\n"
        f"signing_key: {private}\ncheckpoint: {tmp_path / 'cp.sqlite'}\ntimestamp_attribute: updated_at\n{common}\n"
    )
    app_cfg.write_text(
        f"target_table: {unique}\ntarget_region: us-west-2\ntarget_endpoint: {moto_endpoint}\n"
        f"trusted_keys: {public}\nstatus_file: {tmp_path / 'apply-status.json'}\n"
        f"{common}&prefetch=4\n"  # a stopped applier holds only 4 deliveries: the rest stay ready on the queue
    )
    log = tmp_path / "bridge.log"
    pub = start("bridge.cli.publish", ["--config", str(pub_cfg)], log)
    app = start("bridge.cli.apply", ["--config", str(app_cfg)], log)
    # drawn as written: each op stamps its updated_at when drawn, and last writer wins by it
    ops = iter(Workload(seed=3, keys=40).ops(220))
    try:
        for _ in range(40):
            op = next(ops)
            run_op(src, unique, op)
        assert wait_identical(src, dst, unique, KEYS, timeout=120).identical, log.read_text()[-3000:]
        wait_until("drained", lambda: status(app_cfg)[0] == 0 and status(app_cfg)[1]["last_applied"] is not None, 30)
        code, report = status(app_cfg, "--max-depth", "0")
        assert code == 0 and report["queue"]["depth"] == 0 and report["retry"]["depth"] == 0
        assert report["parked"]["depth"] == 0
        assert 0 <= report["last_applied"]["lag_s"] < 60 and report["last_applied"]["origin"] == "cn-north-1"
        code, report = status(pub_cfg)
        assert code == 0 and len(report["shards"]) == 1
        assert report["shards"][0]["records_waiting"] == 0 and report["shards"][0]["checkpoint"]

        app.send_signal(signal.SIGSTOP)
        depths: list[int] = []
        # a backlog that grows: seen waiting, then more waiting (a chunk of writes between two looks)
        while not (len(depths) >= 2 and 0 < depths[-2] < depths[-1]):
            assert len(depths) < 12, depths
            for _ in range(8):
                run_op(src, unique, next(ops))
                time.sleep(0.15)  # longer than batch_max_wait: an envelope each
            code, report = status(app_cfg, "--max-depth", "0")
            depths.append(report["queue"]["depth"])
            assert code == BehindError.exit_code or depths[-1] == 0, report
        assert not report["healthy"] and "messages wait in the queue" in report["problems"][0]
        assert report["last_applied"] is not None  # from before the stop

        # the publisher stopped too: records wait in the stream, behind its checkpoint
        pub.send_signal(signal.SIGSTOP)
        for _ in range(10):
            run_op(src, unique, next(ops))
        code, report = status(pub_cfg, "--max-lag", "0")
        assert code == BehindError.exit_code and report["shards"][0]["records_waiting"] >= 10
        pub.send_signal(signal.SIGCONT)
        app.send_signal(signal.SIGCONT)

        wait_until("the backlog to drain", lambda: status(app_cfg, "--max-depth", "0")[0] == 0, 120)
        code, report = status(app_cfg, "--max-depth", "0")
        assert report["queue"]["depth"] == 0 and report["healthy"]
        wait_until("the publisher to catch up", lambda: status(pub_cfg, "--max-lag", "0")[0] == 0, 60)
        for cfg, first in ((app_cfg, f"applier of {unique}"), (pub_cfg, f"publisher of {unique}")):
            text = subprocess.run(
                [sys.executable, "-m", "bridge.cli.admin", "status", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert text.returncode == 0 and text.stdout.startswith(first), text.stdout + text.stderr
            assert text.stdout.rstrip().endswith("healthy") and "guest:guest" not in text.stdout
        diff = wait_identical(src, dst, unique, KEYS, timeout=120)
        assert diff.identical, f"{diff}\n{log.read_text()[-5000:]}"
    finally:
        for proc in (pub, app):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (pub, app)]
    assert codes == [0, 0], log.read_text()[-3000:]
