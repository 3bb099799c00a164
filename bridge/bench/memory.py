"""Peak RSS of a real bridge-publish and a real bridge-apply process with a large backlog.

* publish: ``python -m bridge.bench.backlog``, the publisher bridge-publish builds, reading a
  scripted stream of the whole backlog (the emulator would need ~15 minutes to hold it) and
  publishing it to RabbitMQ. It reports its own VmHWM when done.
* apply: ``python -m bridge.cli.apply`` (bridge-apply itself) against that backlog on RabbitMQ,
  applying into an emulated table. The emulator applies ~100-200 writes/s, so it is stopped
  after a time window; its VmHWM is sampled from /proc while it runs. What it holds at once is
  bounded by the prefetch (16 envelopes decoded, 64 received), which it reaches within seconds.
* baseline: a bare interpreter importing the same modules (the floor no code change moves).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bridge.bench.backlog import peak_rss_kb
from bridge.bench.context import Bench
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import ATTRIBUTES, KEY_SCHEMA
from bridge.demo.workload import create_table
from bridge.errors import BridgeError

TARGET_REGION = "us-west-2"
_PUBLISH_TIMEOUT_S = 240
_START_TIMEOUT_S = 60


def peak_rss(bench: Bench) -> list[Figure]:
    bench.require_amqp("peak_rss_mb")
    backlog, window = bench.scale.backlog, bench.scale.apply_window_s
    queue = bench.queue("backlog")
    url = bench.queue_url(queue)
    private, public = bench.key_files
    log = bench.workdir / "memory.log"
    bench.say(f"memory: bridge-publish's publisher, a {backlog:,}-record backlog -> RabbitMQ")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.bench.backlog",
            "--records",
            str(backlog),
            "--transport",
            url,
            "--signing-key",
            str(private),
            "--checkpoint",
            str(bench.workdir / "backlog.sqlite"),
            "--quarantine-dir",
            str(bench.workdir / "quarantine"),
        ],
        capture_output=True,
        timeout=_PUBLISH_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BridgeError(f"memory figure: the publisher exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    published = orjson.loads(done.stdout.splitlines()[-1])
    if published["changes"] != backlog:
        raise BridgeError(f"memory figure: published {published['changes']} of {backlog} changes")
    table = bench.table_name("memory")
    target = bench.aws("target", TARGET_REGION).client("dynamodb")
    create_table(target, table, stream=False, key_schema=KEY_SCHEMA, attributes=ATTRIBUTES)
    bench.say(f"memory: bridge-apply on that backlog for {window:g} s")
    apply_kb = _sample_apply(bench, table, url, public, log, window)
    applied = target.scan(TableName=table, Select="COUNT")["Count"]  # one page is plenty here
    floor_kb = _import_floor()
    publish_mb, apply_mb = published["peak_rss_kb"] / 1024, apply_kb / 1024
    return [
        Figure(
            "peak_rss_mb",
            max(publish_mb, apply_mb),
            "MB",
            floor_kb / 1024,
            Goal("<=", 150),
            "MB",
            detail={
                "publish_peak_rss_mb": publish_mb,
                "apply_peak_rss_mb": apply_mb,
                "backlog_changes": backlog,
                "publish_seconds": published["seconds"],
                "apply_window_s": window,
                "applied_in_window": applied,
                "baseline": "python importing bridge.cli.publish and bridge.cli.apply",
                "publish_source": "scripted one-shard stream (bridge.bench.workloads.BacklogStreams)",
            },
        )
    ]


def _sample_apply(bench: Bench, table: str, url: str, public: Path, log: Path, window: float) -> int:
    args = [
        sys.executable,
        "-m",
        "bridge.cli.apply",
        "--target-table",
        table,
        "--target-region",
        TARGET_REGION,
        "--target-endpoint",
        bench.emulator("target"),
        "--transport",
        url,
        "--trusted-keys",
        str(public),
        "--accept-tables",  # the backlog is signed as the scripted source table's
        "profiles",
        "--quarantine-dir",
        str(bench.workdir / "quarantine"),
        "--log-level",
        "WARNING",
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    target = bench.aws("target", TARGET_REGION).client("dynamodb")
    try:
        # The window opens with the first applied item: start-up (imports, the tombstone
        # table) is not what a backlog costs.
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not target.scan(TableName=table, Select="COUNT", Limit=1)["Count"] and proc.poll() is None:
            if time.monotonic() > deadline:
                raise BridgeError(f"memory figure: bridge-apply applied nothing in {_START_TIMEOUT_S} s; see {log}")
            peak = max(peak, peak_rss_kb(proc.pid))
            time.sleep(0.2)
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                peak = max(peak, peak_rss_kb(proc.pid))
            except (OSError, RuntimeError):
                break  # exited between poll() and the read
            time.sleep(0.1)
    finally:
        # SIGKILL, not SIGTERM: finishing the in-flight 16 envelopes against the emulator
        # would take minutes, and nothing here depends on a clean stop.
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    if proc.returncode not in (-signal.SIGKILL, None) or not peak:
        raise BridgeError(f"memory figure: bridge-apply exited {proc.returncode}; see {log}: {log.read_text()[-2000:]}")
    return peak


def _import_floor() -> int:
    code = (
        "import bridge.cli.publish, bridge.cli.apply, bridge_amqp; from bridge.bench.backlog import peak_rss_kb;"
        " print(peak_rss_kb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
    return int(out.stdout)
