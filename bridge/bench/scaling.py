"""``apply_scaling``: bridge-apply on N processes over 1 process, N = cores (``--processes N``).

Real parts but the target: the real ``bridge-apply`` command (as a user starts it, with
``--processes 1`` and then ``--processes N``), envelopes pre-loaded on RabbitMQ, and
:mod:`bridge.bench.stub` as the DynamoDB endpoint, in its own process: it answers at once, so the
target is not the bottleneck (moto is, at ~120 writes/s). Throughput is the stub's count of
PutItems into the run's table over the time between its first and its last, so each process's
start-up and ``until_idle`` wait stay out of it. The two sides alternate, best of ``repeats`` each.

On a machine of C cores the N processes share them with the stub and the broker, so the figure is
bounded below N; docs/benchmarks.md records what it was on 2 cores.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from bridge.bench.apply import ORIGIN, REGION, phases
from bridge.bench.context import Bench
from bridge.bench.report import Figure, Goal
from bridge.bench.stub import stub_server, stub_stats
from bridge.change import Change
from bridge.envelope import Batch, Signer, encode
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage

# Small envelopes and a small QoS so the messages spread over the consumers (each takes at most
# PREFETCH unacked), the same on both sides.
SCALING_ENVELOPE_CHANGES = 100
PREFETCH = 4
BATCH_MESSAGES = 2
_RUN_TIMEOUT_S = 600


def scaling(bench: Bench) -> list[Figure]:
    bench.require_amqp("apply_scaling")
    cores = os.cpu_count() or 1
    n = max(2, cores)  # on one core, still two: the figure then shows what a second process costs
    scale = bench.scale
    changes = phases(scale.scaling_changes)["insert"]
    private, public = bench.key_files
    signer = Signer.from_file(private)
    best = {1: 0.0, n: 0.0}
    cpu = {1: 0.0, n: 0.0}  # CPU seconds of the whole process group in its best run, start-up included
    with stub_server(0, 17) as endpoint:
        for attempt in range(scale.scaling_repeats):
            for processes in (1, n):
                label = f"scaling-{processes}-{attempt}"
                bench.say(
                    f"apply_scaling: bridge-apply --processes {processes}, {len(changes):,} changes"
                    f" ({attempt + 1}/{scale.scaling_repeats})"
                )
                rate, spent = _run(bench, endpoint, signer, public, changes, processes, label)
                if rate > best[processes]:
                    best[processes], cpu[processes] = rate, spent
    return [
        Figure(
            "apply_scaling",
            best[n] / best[1],
            "ratio",
            best[1],
            Goal(">=", 1.7) if cores >= 2 else None,
            "changes/s",
            measured=f"{best[n]:,.0f} changes/s on {n} processes",
            detail={
                "processes": n,
                "cores": cores,
                "changes": len(changes),
                "repeats": scale.scaling_repeats,
                "changes_per_s": {"1": best[1], str(n): best[n]},
                # user + system CPU of bridge-apply and its children per change (start-up included):
                # whether one process was bound by its core or by waiting
                "group_cpu_us_per_change": {"1": 1e6 * cpu[1] / len(changes), str(n): 1e6 * cpu[n] / len(changes)},
                "endpoint": "bridge.bench.stub (own process, answers at once, conditions not evaluated)",
                "transport": "RabbitMQ, envelopes pre-loaded",
            },
        )
    ]


def _run(
    bench: Bench,
    endpoint: str,
    signer: Signer,
    public: Path,
    changes: list[Change],
    processes: int,
    label: str,
) -> tuple[float, float]:
    """Changes/s, and CPU seconds of the process group, of one ``bridge-apply --processes N --until-idle``
    run over a pre-loaded queue."""
    table = bench.table_name(label)
    url = f"{bench.queue_url(bench.queue(label))}&prefetch={PREFETCH}"
    size = SCALING_ENVELOPE_CHANGES
    transport = open_transport(url, "publish")
    try:
        transport.publish(
            [
                OutgoingMessage(
                    encode(Batch(f"{label}-{i}", ORIGIN, "profiles", 0, tuple(changes[i : i + size])), signer),
                    f"{label}-{i}",
                    "bench",
                )
                for i in range(0, len(changes), size)
            ]
        )
    finally:
        transport.close()
    workdir = bench.workdir / label
    workdir.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "bridge.cli.apply",
        "--target-table",
        table,
        "--target-region",
        REGION,
        "--target-endpoint",
        endpoint,
        "--transport",
        url,
        "--trusted-keys",
        str(public),
        "--accept-tables",
        "profiles",
        "--quarantine-dir",
        str(workdir / "quarantine"),
        "--status-file",
        str(workdir / "status.json"),
        "--batch-messages",
        str(BATCH_MESSAGES),
        "--workers",
        str(bench.scale.apply_workers),
        "--until-idle",
        "1",
        "--log-level",
        "WARNING",
        "--processes",
        str(processes),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, timeout=_RUN_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"apply_scaling: bridge-apply exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the group's children were waited for: counted
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = stub_stats(endpoint, table)
    if stats["count"] < len(changes):
        raise RuntimeError(f"apply_scaling: {stats['count']} of {len(changes)} changes reached the target")
    return float(stats["count"]) / max(1e-6, float(stats["last"]) - float(stats["first"])), spent
