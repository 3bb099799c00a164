"""``bridge demo --bidirectional``: two emulated regions writing the same keys, converging.

Each region runs a publisher (active-active) and an applier in threads; writers at both
sides update and delete an overlapping key space at once. The demo ends when the tables
match, and reports echo traffic (changes that came back to their origin): 0.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.apply.loop import Applier
from bridge.aws import AwsSide
from bridge.config import ApplyConfig, PublishConfig
from bridge.copy.compare import compare_tables
from bridge.demo.cleanup import deleting_queues
from bridge.demo.emulator import moto_server
from bridge.demo.oneway import DemoResult, default_transport, emulator_credentials, start_thread
from bridge.demo.workload import create_table
from bridge.envelope import keygen
from bridge.publish.loop import Publisher
from bridge.wiring import build_applier, build_publisher

TABLE = "users"
REGIONS = ("cn-north-1", "us-west-2")
KEYS = ("tenant", "user_id")


def _writer(client: Any, region: str, seed: int, changes: int, rate: float, keys: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    for i in range(changes):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        key = {"tenant": {"S": "shared"}, "user_id": {"N": str(rng.randrange(keys))}}
        roll = rng.random()
        if roll < 0.15:
            client.delete_item(TableName=TABLE, Key=key)
        elif roll < 0.45:
            client.update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression="SET last_writer = :w, n = :n",
                ExpressionAttributeValues={":w": {"S": region}, ":n": {"N": str(i)}},
            )
        else:
            client.put_item(
                TableName=TABLE,
                Item={**key, "last_writer": {"S": region}, "n": {"N": str(i)}, "note": {"S": f"written in {region}"}},
            )


def run_bidirectional_demo(
    changes: int = 200,
    transport: str | None = None,
    console: Console | None = None,
    seed: int = 7,
    rate: float = 20.0,
    keys: int = 20,
) -> DemoResult:
    console = console or Console(stderr=True)
    emulator_credentials()
    # one queue per direction; those the demo named itself are deleted at the end
    queues = {
        r: (transport.replace("{region}", r) if transport else default_transport(f"bridge-demo-{r}")) for r in REGIONS
    }
    owned = [] if transport else list(queues.values())
    with (
        moto_server() as ep_a,
        moto_server() as ep_b,
        tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp,
        deleting_queues(*owned),
    ):
        work = Path(tmp)
        endpoints = dict(zip(REGIONS, (ep_a, ep_b), strict=True))
        console.print(
            f"[bold]ddb-bridge demo --bidirectional[/]: {TABLE} in {REGIONS[0]} <-> {REGIONS[1]}, "
            f"both writing {keys} shared keys"
        )
        clients = {r: AwsSide(r, endpoints[r]).client("dynamodb") for r in REGIONS}
        for r in REGIONS:
            create_table(clients[r], TABLE)
            keygen(work / r)
        stops = [threading.Event() for _ in range(4)]
        publishers: list[Publisher] = []
        appliers: list[Applier] = []
        for i, (here, there) in enumerate((REGIONS, REGIONS[::-1])):
            common: dict[str, Any] = {"quarantine_dir": work / "quarantine"}
            publishers.append(
                build_publisher(
                    PublishConfig(
                        source_table=TABLE,
                        source_region=here,
                        source_endpoint=endpoints[here],
                        transport=queues[here],
                        signing_key=work / here / "bridge.key",
                        checkpoint=str(work / f"{here}.sqlite"),
                        active_active=True,
                        **common,
                    ),
                    stops[i],
                )
            )
            appliers.append(
                build_applier(
                    ApplyConfig(
                        target_table=TABLE,
                        target_region=here,
                        target_endpoint=endpoints[here],
                        transport=queues[there],
                        trusted_keys=work / there / "bridge.pub",
                        **common,
                    ),
                    stops[2 + i],
                )
            )
        errors: list[BaseException] = []
        loops: list[Publisher | Applier] = [*publishers, *appliers]
        threads = [start_thread(loop.run, errors, type(loop).__name__) for loop in loops]
        started = time.monotonic()
        writers = [
            threading.Thread(target=_writer, args=(clients[r], r, seed + n, changes, rate, keys))
            for n, r in enumerate(REGIONS)
        ]
        with console.status("both regions writing the same keys..."):
            for w in writers:
                w.start()
            for w in writers:
                w.join()
        deadline = time.monotonic() + 120
        diff = compare_tables(clients[REGIONS[0]], TABLE, clients[REGIONS[1]], TABLE, KEYS)
        with console.status("waiting for the regions to converge..."):
            while not diff.identical and time.monotonic() < deadline and not errors:
                time.sleep(0.5)
                diff = compare_tables(clients[REGIONS[0]], TABLE, clients[REGIONS[1]], TABLE, KEYS)
        elapsed = time.monotonic() - started
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(30)
        for loop in loops:
            loop.close()
        if errors:
            raise errors[0]
        summary: dict[str, Any] = {"writes_per_region": changes, "items": diff.compared, "elapsed_s": round(elapsed, 1)}
        for r, pub, app in zip(REGIONS, publishers, appliers, strict=True):
            assert pub.guard is not None
            guard = pub.guard.stats
            summary[f"{r}: shipped"] = guard.local_writes
            summary[f"{r}: own writes not echoed"] = guard.own_writes_suppressed
            summary[f"{r}: conflicts repaired"] = guard.repairs
            summary[f"{r}: applied / stale / duplicate"] = (
                f"{app.stats.applied} / {app.stats.stale} / {app.stats.duplicates}"
            )
            summary[f"{r}: echo received"] = app.target.echoes
        table = Table(title="active-active summary", show_header=False)
        for k, v in summary.items():
            table.add_row(k, str(v))
        console.print(table)
        echo = sum(app.target.echoes for app in appliers)
        if diff.identical and echo == 0:
            console.print(f"[bold green]identical[/]: {diff.compared} items match in both regions; echo traffic 0")
        else:
            console.print(f"[bold red]DIFFERENT[/]: {diff.count} keys differ; echo traffic {echo}")
        return DemoResult(diff.identical and echo == 0, summary)
