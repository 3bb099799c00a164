"""``bridge demo``: the whole bridge on an embedded default, no AWS account needed.

Two emulated regions (moto's server on loopback, one child process each), a source table with a stream, a mixed
workload, bridge-publish and bridge-apply in threads, RabbitMQ when one answers on
127.0.0.1:5672 and an in-process transport otherwise. Ends by comparing the tables.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.aws import AwsSide
from bridge.change import Change, Operation, Outcome
from bridge.config import ApplyConfig, PublishConfig
from bridge.copy.compare import compare_tables
from bridge.demo.cleanup import deleting_queues, describe_queue
from bridge.demo.emulator import moto_server
from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from bridge.observe.server import MetricsServer
from bridge.wiring import build_applier, build_publisher

SOURCE_REGION, TARGET_REGION = "cn-north-1", "us-west-2"
TABLE = "users"


@dataclass
class DemoResult:
    identical: bool
    summary: dict[str, Any]


def rabbitmq_answers(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_thread(fn: Any, errors: list[BaseException], name: str) -> threading.Thread:
    """Run ``fn`` in a thread; an exception is kept in ``errors`` for the caller to raise."""

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def default_transport(name: str) -> str:
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    return f"amqp://guest:guest@127.0.0.1:5672//?queue={queue}" if rabbitmq_answers() else f"memory://{queue}"


def emulator_credentials() -> None:
    """The emulator accepts any key; never sign its requests with a user's real credentials."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "demo"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "demo"


def run_demo(
    changes: int = 400, transport: str | None = None, console: Console | None = None, seed: int = 7, rate: float = 50.0
) -> DemoResult:
    console = console or Console(stderr=True)
    emulator_credentials()
    owned = transport is None  # queues the demo named itself are deleted at the end
    transport = transport or default_transport("bridge-demo")
    with (
        moto_server() as src_endpoint,
        moto_server() as dst_endpoint,
        tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp,
        deleting_queues(transport if owned else None),
    ):
        work = Path(tmp)
        console.print(
            f"[bold]ddb-bridge demo[/]: {TABLE} {SOURCE_REGION} -> {TARGET_REGION} via "
            f"{transport.split('?')[0].split('://')[0]}:// {describe_queue(transport, owned)}"
        )
        src, dst = AwsSide(SOURCE_REGION, src_endpoint), AwsSide(TARGET_REGION, dst_endpoint)
        src_db, dst_db = src.client("dynamodb"), dst.client("dynamodb")
        create_table(src_db, TABLE)
        create_table(dst_db, TABLE, stream=False)
        keygen(work / "keys")
        common: dict[str, Any] = {"transport": transport, "quarantine_dir": work / "quarantine"}
        pcfg = PublishConfig(
            source_table=TABLE,
            source_region=SOURCE_REGION,
            source_endpoint=src_endpoint,
            signing_key=work / "keys" / "bridge.key",
            checkpoint=str(work / "cp.sqlite"),
            timestamp_attribute="updated_at",
            **common,
        )
        acfg = ApplyConfig(
            target_table=TABLE,
            target_region=TARGET_REGION,
            target_endpoint=dst_endpoint,
            trusted_keys=work / "keys" / "bridge.pub",
            **common,
        )
        lags: list[float] = []
        applied = [0]

        def on_applied(change: Change, outcome: Outcome) -> None:
            applied[0] += 1
            if outcome is Outcome.APPLIED and change.op is Operation.PUT:
                lags.append(time.time() - change.version.ts_us / 1e6)

        stop_pub, stop_app = threading.Event(), threading.Event()
        publisher = build_publisher(pcfg, stop_pub, measure_raw=True)
        applier = build_applier(acfg, stop_app, on_applied=on_applied)
        errors: list[BaseException] = []
        server = MetricsServer(applier.health, "127.0.0.1", 0)
        console.print(f"metrics while it runs: {server.url}/metrics (probes: /healthz, /readyz)")
        threads = [start_thread(publisher.run, errors, "publish"), start_thread(applier.run, errors, "apply")]
        workload = Workload(seed=seed)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        started = time.monotonic()
        with Progress(*columns, console=console, transient=False) as progress:
            write_task = progress.add_task("written  ", total=changes)
            apply_task = progress.add_task("replicated", total=changes)
            for i, op in enumerate(workload.ops(changes)):
                # paced: the lag shown is replication's, not a queue in front of a saturated emulator
                if rate > 0:
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                run_op(src_db, TABLE, op)
                progress.advance(write_task)
                progress.update(apply_task, completed=min(applied[0], changes))
            deadline = time.monotonic() + 120
            diff = compare_tables(src_db, TABLE, dst_db, TABLE, ("tenant", "user_id"))
            while not diff.identical and time.monotonic() < deadline and not errors:
                progress.update(apply_task, completed=min(applied[0], changes))
                time.sleep(0.5)
                diff = compare_tables(src_db, TABLE, dst_db, TABLE, ("tenant", "user_id"))
            progress.update(apply_task, completed=changes if diff.identical else min(applied[0], changes))
        elapsed = time.monotonic() - started
        stop_pub.set()
        for t in threads[:1]:
            t.join(30)
        stop_app.set()
        threads[1].join(30)
        publisher.close()
        applier.close()
        server.close()
        if errors:
            raise errors[0]
        diff = compare_tables(src_db, TABLE, dst_db, TABLE, ("tenant", "user_id"))
        pstats, astats = publisher.stats, applier.stats
        summary = {
            "changes_written": changes,
            "stream_records": pstats.records,
            "envelopes": pstats.envelopes,
            "applied": astats.applied,
            "duplicates": astats.duplicates,
            "stale": astats.stale,
            "dead_lettered": astats.dead_lettered + pstats.bad_records + pstats.oversize,
            "lag_p50_ms": round(percentile(lags, 50) * 1000, 1),
            "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
            "wire_bytes": pstats.wire_bytes,
            "raw_stream_json_bytes": pstats.raw_stream_bytes,
            "wire_vs_raw": round(pstats.wire_bytes / pstats.raw_stream_bytes, 3) if pstats.raw_stream_bytes else None,
            "items_compared": diff.compared,
            "elapsed_s": round(elapsed, 1),
        }
        table = Table(title="replication summary", show_header=False)
        for k, v in summary.items():
            table.add_row(k, str(v))
        console.print(table)
        if diff.identical:
            console.print(f"[bold green]identical[/]: {diff.compared} items in {TABLE} match in both regions")
        else:
            console.print(
                f"[bold red]DIFFERENT[/]: {len(diff.only_in_source)} missing in target, "
                f"{len(diff.only_in_target)} extra in target, {len(diff.different)} differ"
            )
        return DemoResult(diff.identical, summary)


def percentile(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return max(values[0], 0.0)
    return max(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 0.0)
