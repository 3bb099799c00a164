"""``bridge bench``: measure every stage against the limit that bounds it (docs/benchmarks.md)."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import click

from bridge.cli.common import handled

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@click.command("bench")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the figures as JSON")
@click.option("--quick", is_flag=True, help="small sizes (about a minute): proves the bench runs; rough numbers")
@click.option("--only", help="comma-separated figures (JSON keys) or stages to run, e.g. codec,lag_p99_s")
@click.option(
    "--amqp-url",
    envvar="BRIDGE_AMQP_URL",
    default=DEFAULT_AMQP_URL,
    show_default=True,
    help="RabbitMQ for the relay, lag and memory figures (vhost included, no queue)",
)
@handled
def bench(json_path: str | None, quick: bool, only: str | None, amqp_url: str) -> None:
    """Measure throughput, wire size, lag and memory, each against a raw baseline from the same run."""
    from rich.console import Console

    from bridge.bench.context import FULL, QUICK, Bench
    from bridge.bench.figures import run, select
    from bridge.bench.report import render, write_json

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    select(names)  # unknown names fail before anything starts
    console = Console(stderr=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp,
        Bench(QUICK if quick else FULL, Path(tmp), amqp_url, console) as session,
    ):
        figures = run(session, names)
    elapsed = time.monotonic() - started
    caption = (
        f"{'quick' if quick else 'full'} run, {elapsed:.0f} s; {machine()}; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    out = Console()
    render(figures, out if out.is_terminal else Console(width=150), caption)
    if json_path:
        write_json(figures, Path(json_path))
    missed = [f.key for f in figures if f.met is False]
    if missed:
        console.print(f"goals missed: {', '.join(missed)} (docs/benchmarks.md says what bounds each)")


def machine() -> str:
    """CPU count and model, memory, Python: what a recorded run must name."""
    model = "unknown CPU"
    memory = "? GiB"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, {memory} RAM, Python {platform.python_version()}"
