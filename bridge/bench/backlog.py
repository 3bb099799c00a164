"""``python -m bridge.bench.backlog``: bridge-publish over a scripted 100,000-record backlog.

The peak-memory figure runs this as its own process: the publisher bridge-publish builds
(StreamReader, Publisher, the transport and dead-letter parking, a SQLite checkpoint), reading
a scripted one-shard stream instead of the emulator, which would need ~15 minutes to hold such
a backlog. It prints one JSON line: changes published, seconds, and the process's peak RSS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import orjson

import bridge.cli.publish  # noqa: F401 - the same modules in memory as the real bridge-publish
from bridge.bench.workloads import KEY, TIMESTAMP, BacklogStreams, ProfileWorkload
from bridge.deadletter.records import Parker
from bridge.envelope import Signer
from bridge.plugin.manager import open_transport
from bridge.publish.loop import Publisher
from bridge.source.streams import StreamReader
from bridge.state.checkpoints import open_checkpoint_store
from bridge.transport.reliable import ReliableTransport


def peak_rss_kb(pid: int | str = "self") -> int:
    """VmHWM: the most resident memory the process ever had, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


@click.command()
@click.option("--records", type=int, required=True)
@click.option("--transport", required=True)
@click.option("--signing-key", type=click.Path(dir_okay=False), required=True)
@click.option("--checkpoint", required=True)
@click.option("--quarantine-dir", type=click.Path(file_okay=False), required=True)
def main(records: int, transport: str, signing_key: str, checkpoint: str, quarantine_dir: str) -> None:
    streams = BacklogStreams(ProfileWorkload(seed=16), records)
    main_transport = open_transport(transport, "publish")
    dlq = ReliableTransport(open_transport(main_transport.dead_letter_url(), "dlq"))
    store = open_checkpoint_store(checkpoint)
    publisher = Publisher(
        StreamReader(streams, streams.ARN, store),
        ReliableTransport(main_transport),
        Signer.from_file(signing_key),
        Parker(dlq, Path(quarantine_dir), opener=open_transport),
        table="profiles",
        key_names=(KEY,),
        origin="cn-north-1",
        timestamp_attribute=TIMESTAMP,
    )
    started = time.perf_counter()
    try:
        stats = publisher.run(until_idle=0)
    finally:
        publisher.close()
        store.close()
    sys.stdout.write(
        orjson.dumps(
            {
                "changes": stats.changes,
                "envelopes": stats.envelopes,
                "seconds": time.perf_counter() - started,
                "peak_rss_kb": peak_rss_kb(),
            }
        ).decode()
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
