"""Wire size, encode and decode: the envelope against Seed B's format and against its own floor."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import orjson
import zstandard

from bridge.bench.context import Bench, discard_memory_queue
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import KEY, TIMESTAMP, BacklogStreams, ProfileWorkload, seed_b_message
from bridge.change import Change
from bridge.deadletter.records import Parker
from bridge.envelope import Batch, decode, encode, peek
from bridge.plugin.manager import open_transport
from bridge.publish.loop import Publisher
from bridge.publish.sender import envelope_id_for
from bridge.source.streams import StreamReader
from bridge.state.checkpoints import SqliteCheckpointStore
from bridge.transport.reliable import ReliableTransport

ORIGIN, TABLE = "cn-north-1", "profiles"
BATCH = 500  # the publisher's default batch_max_changes


def wire_bytes(bench: Bench) -> list[Figure]:
    """Envelope bytes per change from the real publisher (default batching) vs Seed B's bytes."""
    n = bench.scale.wire_changes
    workload = ProfileWorkload(seed=11)
    streams = BacklogStreams(workload, n)
    store = SqliteCheckpointStore(bench.workdir / f"wire-{bench.run_id}.sqlite")
    transport = ReliableTransport(open_transport(f"memory://bench-wire-{bench.run_id}", "publish"))
    publisher = Publisher(
        StreamReader(streams, streams.ARN, store),
        transport,
        bench.signer,
        Parker(None, bench.workdir / "quarantine"),
        table=TABLE,
        key_names=(KEY,),
        origin=ORIGIN,
        timestamp_attribute=TIMESTAMP,
    )
    try:
        stats = publisher.run(until_idle=0)
    finally:
        publisher.close()
        store.close()
        discard_memory_queue(f"memory://bench-wire-{bench.run_id}")
    seed_b = 0
    for position, op in enumerate(workload.ops(n)):
        data, partition_key = seed_b_message(workload.record(position, op))
        seed_b += len(data) + len(partition_key)
    ours, theirs = stats.wire_bytes / stats.changes, seed_b / n
    return [
        Figure(
            "wire_bytes_ratio",
            ours / theirs,
            "ratio",
            theirs,
            Goal("<=", 0.25),
            "B/change (Seed B)",
            measured=f"{ours:.1f} B/change",
            detail={
                "changes": stats.changes,
                "envelopes": stats.envelopes,
                "bridge_bytes_per_change": ours,
                "seed_b_bytes_per_change": theirs,
                "workload": "profiles: 80% inserts, 20% modifies, seed 11",
            },
        )
    ]


def change_batches(n: int) -> list[list[Change]]:
    """``n`` workload changes in batches of the publisher's default size."""
    workload = ProfileWorkload(seed=12)
    return [workload.changes(min(BATCH, n - start), start) for start in range(0, n, BATCH)]


def _best_rate(count: int, runs: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Best-of-``repeats`` rate of each run, the runs interleaved so noise hits them alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return [count / seconds for seconds in best]


def codec(bench: Bench) -> list[Figure]:
    """Encode and decode on one core (this thread), each against serialise/parse + (de)compress alone."""
    n, repeats = bench.scale.codec_changes, bench.scale.codec_repeats
    enc, enc_raw, envelopes = _encode_rates(bench, n, repeats)
    # Decode as bridge-apply's process does: only the received bytes are alive, not the
    # workload that made them (a larger heap makes the cyclic GC, and so decoding, slower).
    gc.collect()
    dec, dec_raw = _decode_rates(bench, envelopes, n, repeats)
    common = {"changes": n, "batch": BATCH, "repeats": repeats, "timing": "best of repeats, interleaved"}
    return [
        Figure(
            "encode_changes_per_s",
            enc,
            "changes/s",
            enc_raw,
            Goal(">=", 100_000),
            "changes/s",
            detail={**common, "baseline": "orjson.dumps of the built documents + zstd level 3"},
        ),
        Figure(
            "decode_changes_per_s",
            dec,
            "changes/s",
            dec_raw,
            Goal(">=", 80_000),
            "changes/s",
            detail={
                **common,
                "baseline": "zstd decompress + orjson.loads",
                "envelope_bytes_per_change": sum(map(len, envelopes)) / n,
            },
        ),
    ]


def _encode_rates(bench: Bench, n: int, repeats: int) -> tuple[float, float, list[bytes]]:
    batches = change_batches(n)
    signer = bench.signer
    zstd = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
    # The floor: the same documents, already built, serialised and compressed.
    docs = [
        {"changes": [c.to_wire() for c in batch], "created_ms": 0, "id": "x", "origin": ORIGIN, "table": TABLE}
        for batch in batches
    ]

    def bridge_encode() -> None:
        for batch in batches:  # what Sender does per envelope
            encode(
                Batch(envelope_id_for(ORIGIN, TABLE, batch), ORIGIN, TABLE, int(time.time() * 1000), tuple(batch)),
                signer,
            )

    def raw_encode() -> None:
        for doc in docs:
            zstd.compress(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))

    enc, enc_raw = _best_rate(n, [bridge_encode, raw_encode], repeats)
    envelopes = [encode(Batch(f"e{i}", ORIGIN, TABLE, 0, tuple(b)), signer) for i, b in enumerate(batches)]
    return enc, enc_raw, envelopes


def _decode_rates(bench: Bench, envelopes: list[bytes], n: int, repeats: int) -> tuple[float, float]:
    trust = bench.trust
    unzstd = zstandard.ZstdDecompressor()
    bodies = []
    for envelope in envelopes:
        header = peek(envelope)
        bodies.append(envelope[header.header_length : header.signed_length])

    def bridge_decode() -> None:
        for envelope in envelopes:
            decode(envelope, trust)

    def raw_decode() -> None:
        for body in bodies:
            orjson.loads(unzstd.decompress(body))

    dec, dec_raw = _best_rate(n, [bridge_decode, raw_decode], repeats)
    return dec, dec_raw
