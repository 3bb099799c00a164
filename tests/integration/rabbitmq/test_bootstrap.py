"""Bootstrap: copying the items a table holds while its stream is replicated; resumable and paced.

Real parts: moto's server for DynamoDB and its stream, real RabbitMQ and real bridge-publish /
bridge-apply processes (SIGKILL) for the end-to-end runs, the in-process memory transport for the
resume accounting. Seeded items are written before the table's stream is enabled, so only the
copy can bring them to the target: the stream cannot replay them.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from bridge.config import ApplyConfig
from bridge.copy.bootstrap import COPY_MARGIN_S, Bootstrap, ProgressMeter, SegmentState, scanned_change
from bridge.copy.compare import compare_tables
from bridge.copy.scan import ReadBudget
from bridge.deadletter.records import FailureRecord
from bridge.demo.emulator import moto_server
from bridge.demo.workload import create_table
from bridge.envelope import Signer, keygen
from bridge.plugin.manager import open_transport, plugin_set
from bridge.publish.sender import Sender
from bridge.source.records import parse_record
from bridge.state.scan_progress import open_scan_progress
from bridge.transport import TransportURL
from bridge.wiring import build_applier, build_sender
from tests.helpers import start, wait_identical

KEYS = ("tenant", "user_id")
ORIGIN = "cn-north-1"
SIGNER = Signer.from_seed(bytes(range(32)))


def item(i: int, rng: random.Random | None = None, **extra: Any) -> dict[str, Any]:
    rng = rng or random.Random(i)
    return {
        "tenant": {"S": f"tenant-{i % 256}"},
        "user_id": {"N": str(i)},
        "name": {"S": f"user {i}"},
        "score": {"N": str(rng.randrange(10**6))},
        "tags": {"SS": [f"t{rng.randrange(9)}", "x"]},
        "blob": {"B": rng.randbytes(8)},
        **extra,
    }


def key_of(i: int) -> dict[str, Any]:
    # Many partition keys: parallel scan segments split the partition-key hash space.
    return {"tenant": {"S": f"tenant-{i % 256}"}, "user_id": {"N": str(i)}}


def seed(client: Any, table: str, ids: range, **extra: Any) -> None:
    """BatchWriteItem, 25 at a time (several times faster than PutItem on the emulator)."""
    ids_list = list(ids)
    for start_at in range(0, len(ids_list), 25):
        requests = [{"PutRequest": {"Item": item(i, **extra)}} for i in ids_list[start_at : start_at + 25]]
        while requests:
            response = client.batch_write_item(RequestItems={table: requests})
            requests = response.get("UnprocessedItems", {}).get(table, [])


def existing_table(client: Any, table: str, n: int) -> None:
    """A table that held ``n`` items before its stream was enabled (what a bootstrap is for)."""
    create_table(client, table, stream=False)
    seed(client, table, range(n))
    client.update_table(
        TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )


# -- versions of scanned copies ---------------------------------------------------------------------


def stream_put(image: dict[str, Any], when: Any, seq: int, timestamp_attribute: str | None = None) -> Any:
    record = {
        "eventName": "MODIFY",
        "dynamodb": {"SequenceNumber": str(seq), "ApproximateCreationDateTime": when, "NewImage": image},
    }
    return parse_record(record, key_names=KEYS, origin=ORIGIN, timestamp_attribute=timestamp_attribute)


@settings(max_examples=300, deadline=None)
@given(
    start_s=st.floats(1.6e9, 2.0e9),
    read_after=st.floats(0, 86_400),
    write_after=st.floats(0, 3600),
    skew=st.floats(-(COPY_MARGIN_S - 1.01), COPY_MARGIN_S - 1.01),
    seq=st.integers(1, 10**30),
)
def test_a_scanned_copy_loses_to_every_stream_write_made_after_it_was_read(
    start_s: float, read_after: float, write_after: float, skew: float, seq: int
) -> None:
    """Stream time is truncated to the second and taken from DynamoDB's clock (skewed from ours):
    a write after the read must still carry a newer version than the copy, whatever the delays."""
    copy = scanned_change(
        item(1),
        key_names=KEYS,
        origin=ORIGIN,
        timestamp_attribute=None,
        not_after_us=int((start_s - COPY_MARGIN_S) * 1_000_000),
        where="bootstrap/0/0",
    )
    written_at = start_s + read_after + write_after + skew  # by DynamoDB's clock
    stream_time = dt.datetime.fromtimestamp(int(written_at), dt.timezone.utc)  # truncated to the second
    later = stream_put(item(1, score={"N": "1"}), stream_time, seq)
    assert later.version > copy.version


def test_a_scanned_copy_takes_the_items_timestamp_and_loses_the_tie_to_the_streams_record() -> None:
    image = item(7, updated_at={"N": "1700000000.250000"})
    copy = scanned_change(
        image, key_names=KEYS, origin=ORIGIN, timestamp_attribute="updated_at", not_after_us=1, where="bootstrap/0/3"
    )
    assert copy.version.ts_us == 1_700_000_000_250_000 and copy.version.seq == 0
    same_write = stream_put(image, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), 5, "updated_at")
    assert same_write.version > copy.version  # equal time: the stream's sequence number breaks the tie
    assert copy.position is not None and copy.position.shard_id == "bootstrap/0/3"


def test_scanned_copies_of_different_items_get_different_envelope_ids() -> None:
    """All copies of one run share a version, so the position (key) must tell envelopes apart."""
    from bridge.publish.sender import envelope_id_for

    copies = [
        scanned_change(
            item(i), key_names=KEYS, origin=ORIGIN, timestamp_attribute=None, not_after_us=5, where="bootstrap/5/0"
        )
        for i in range(4)
    ]
    assert envelope_id_for(ORIGIN, "t", copies[:2]) != envelope_id_for(ORIGIN, "t", copies[2:])


# -- pacing and progress display ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_read_budget_holds_the_rate_on_average() -> None:
    clock = FakeClock()
    budget = ReadBudget(10.0, clock=clock, sleep=clock.sleep)
    expected = 1.0
    for _ in range(40):  # pages of 5 RCU at 10 RCU/s: 200 RCU take about 20 s
        budget.reserve(expected)
        budget.settle(expected, 5.0)
        expected = 5.0
    assert budget.spent == 200
    assert 18.0 <= clock.now <= 20.0  # the first second's burst is free


def test_no_budget_never_waits() -> None:
    clock = FakeClock()
    budget = ReadBudget(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        budget.reserve(50.0)
        budget.settle(50.0, 50.0)
    assert clock.now == 0.0


def test_progress_bar_shows_items_rate_and_eta_on_a_terminal() -> None:
    out = io.StringIO()
    meter = ProgressMeter("bar", 1000, 100, 30.0, "users", console=Console(file=out, force_terminal=True, width=160))
    meter.advance(300, 2, 8)
    meter.close()
    text = out.getvalue()
    assert "400/1000" in text and "items/s" in text and "2/8 segments" in text


def test_progress_is_logged_when_not_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    meter = ProgressMeter("log", 1000, 0, 0.0, "users")
    with caplog.at_level(logging.INFO, logger="bridge.copy.bootstrap"):
        meter.advance(250, 1, 4)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "250 of about 1000 items" in line and "ETA" in line and "1/4 segments" in line


# -- saved positions ----------------------------------------------------------------------------------


def test_a_saved_position_keeps_binary_and_number_keys_exactly(tmp_path: Path) -> None:
    state = SegmentState({"id": {"B": b"\x00\xff\x10"}, "n": {"N": "12345678901234567890.5"}}, 40, 2, False)
    store = open_scan_progress(str(tmp_path / "cp.sqlite"))
    store.save("bootstrap:t", "segment/3", state.to_doc(), state.pages)
    store.close()
    assert (
        SegmentState.from_doc(open_scan_progress(str(tmp_path / "cp.sqlite")).load("bootstrap:t")["segment/3"]) == state
    )


def test_a_late_save_never_moves_progress_back(tmp_path: Path) -> None:
    store = open_scan_progress(str(tmp_path / "cp.sqlite"))
    store.save("bootstrap:t", "segment/0", {"pages": 5}, 5)
    store.save("bootstrap:t", "segment/0", {"pages": 3}, 3)
    assert store.load("bootstrap:t") == {"segment/0": {"pages": 5}}
    store.reset("bootstrap:t")
    assert store.load("bootstrap:t") == {}


# -- resume accounting (in process, memory transport) ---------------------------------------------------


class StoppingSender(Sender):
    """A real sender that asks the copy to stop after ``after`` confirmed sends (a clean stop)."""

    sends = 0
    after = 0
    stop: threading.Event

    def send(self, changes: Any) -> None:
        super().send(changes)
        StoppingSender.sends += 1
        if StoppingSender.sends == StoppingSender.after:
            StoppingSender.stop.set()


def make_bootstrap(
    client: Any,
    table: str,
    spec: str,
    queue: str,
    tmp_path: Path,
    stop: threading.Event,
    *,
    stop_after: int = 0,
    force: bool = False,
    factory: Any = None,
) -> Bootstrap:
    StoppingSender.sends, StoppingSender.after, StoppingSender.stop = 0, stop_after, stop

    def make_sender() -> Sender:
        plain = build_sender(f"memory://{queue}", None, SIGNER, tmp_path / "q", origin=ORIGIN, table=table, stop=stop)
        return StoppingSender(plain.transport, SIGNER, plain.parker, origin=ORIGIN, table=table)

    return Bootstrap(
        client,
        table,
        KEYS,
        open_scan_progress(spec, factory),
        make_sender,
        origin=ORIGIN,
        timestamp_attribute="updated_at",
        segments=4,
        workers=1,
        page_items=20,
        force=force,
        stop=stop,
        display="none",
    )


@pytest.mark.aws
@pytest.mark.parametrize("store", ["sqlite", "dynamodb"])
def test_a_stopped_copy_resumes_from_its_saved_positions_and_a_finished_one_is_not_redone(
    moto_endpoint: str, unique: str, tmp_path: Path, store: str
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name=ORIGIN)
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    existing_table(src, unique, 160)
    create_table(dst, unique, stream=False)
    spec = str(tmp_path / "cp.sqlite") if store == "sqlite" else f"dynamodb://{unique}-cp"
    factory = (lambda: src) if store == "dynamodb" else None
    run = f"bootstrap:{unique}"

    first = make_bootstrap(src, unique, spec, unique, tmp_path, threading.Event(), stop_after=4, factory=factory)
    stats1 = first.run()
    first.close()
    assert not stats1.complete and stats1.pages == 4 and 0 < stats1.items < 160  # one worker: four pages, stopped
    saved = open_scan_progress(spec, factory).load(run)
    assert sum(doc["items"] for name, doc in saved.items() if name != "run") == stats1.items
    finished = sum(1 for name, doc in saved.items() if name != "run" and doc["finished"])
    partial = sum(1 for name, doc in saved.items() if name != "run" and not doc["finished"] and doc["next_key"])
    assert finished + partial >= 1

    second = make_bootstrap(src, unique, spec, unique, tmp_path, threading.Event(), factory=factory)
    stats2 = second.run()
    second.close()
    assert stats2.complete
    assert stats2.items == 160 - stats1.items  # nothing confirmed is read again
    assert (stats2.segments_skipped, stats2.segments_resumed) == (finished, partial)

    third = make_bootstrap(src, unique, spec, unique, tmp_path, threading.Event(), factory=factory)
    stats3 = third.run()
    third.close()
    assert stats3.already_complete and stats3.items == 0

    # Everything confirmed reaches the target through the normal apply path.
    cfg = ApplyConfig(
        target_table=unique,
        target_region="us-west-2",
        target_endpoint=moto_endpoint,
        trusted_keys=tmp_path / "trusted.pub",
        transport=f"memory://{unique}",
        quarantine_dir=tmp_path / "q",
    )
    cfg.trusted_keys.write_bytes(SIGNER.public_pem())
    applier = build_applier(cfg, threading.Event())
    applier.run(until_idle=1.0)
    applier.close()
    diff = compare_tables(src, unique, dst, unique, KEYS)
    assert diff.identical and diff.compared == 160

    forced = make_bootstrap(src, unique, spec, unique, tmp_path, threading.Event(), force=True, factory=factory)
    stats4 = forced.run()
    forced.close()
    assert stats4.complete and stats4.items == 160


@pytest.mark.aws
def test_an_item_with_a_malformed_timestamp_is_parked_with_the_reason(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name=ORIGIN)
    existing_table(src, unique, 20)
    src.put_item(TableName=unique, Item=item(99, updated_at={"S": "last tuesday"}))
    boot = make_bootstrap(src, unique, str(tmp_path / "cp.sqlite"), unique, tmp_path, threading.Event())
    stats = boot.run()
    boot.close()
    assert stats.complete and stats.items == 21 and stats.parked == 1
    dlq = TransportURL.parse(f"memory://{unique}.dlq")
    deliveries = [
        d
        for url in (dlq, plugin_set().sibling(dlq, "parked"))
        for d in open_transport(url, "dlq").receive(10, timeout=0.5)
    ]
    (record,) = [FailureRecord.decode(d.body) for d in deliveries]
    assert "item.updated_at" in record.message and "last tuesday" in record.message
    assert json.loads(record.payload)["user_id"] == {"N": "99"}


# -- end to end: real processes, RabbitMQ ---------------------------------------------------------------


def bridge_args(
    endpoint: str, table: str, url: str, tmp_path: Path, target_endpoint: str | None = None
) -> tuple[list[str], list[str]]:
    private, public = keygen(tmp_path / "keys")
    publish = [
        "--source-table",
        table,
        "--source-region",
        ORIGIN,
        "--source-endpoint",
        endpoint,
        "--transport",
        url,
        "--signing-key",
        str(private),
        "--checkpoint",
        str(tmp_path / "cp.sqlite"),
        "--quarantine-dir",
        str(tmp_path / "q"),
        "--bootstrap",
    ]
    apply = [
        "--target-table",
        table,
        "--target-region",
        "us-west-2",
        "--target-endpoint",
        target_endpoint or endpoint,
        "--transport",
        url,
        "--trusted-keys",
        str(public),
        "--quarantine-dir",
        str(tmp_path / "q"),
    ]
    return publish, apply


def start_cmd(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def progress_of(tmp_path: Path, table: str) -> dict[str, Any]:
    store = open_scan_progress(str(tmp_path / "cp.sqlite"))
    try:
        return store.load(f"bootstrap:{table}")
    finally:
        store.close()


def last_json(output: bytes) -> dict[str, Any]:
    return dict(json.loads(output.decode().strip().splitlines()[-1]))


class Writer(threading.Thread):
    """Keeps updating, deleting and re-creating seeded items (PutItem/UpdateItem/DeleteItem)."""

    def __init__(self, client: Any, table: str, n: int, seed: int = 5) -> None:
        super().__init__(daemon=True)
        self.client, self.table, self.n = client, table, n
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                i = self.rng.randrange(self.n + self.n // 10)  # some keys beyond the seeded ones: inserts
                roll = self.rng.random()
                if roll < 0.3:
                    self.client.delete_item(TableName=self.table, Key=key_of(i))
                elif roll < 0.6:
                    self.client.update_item(
                        TableName=self.table,
                        Key=key_of(i),
                        UpdateExpression="SET score = :s, #n = :n",
                        ExpressionAttributeNames={"#n": "name"},
                        ExpressionAttributeValues={":s": {"N": str(self.rng.randrange(999))}, ":n": {"S": "renamed"}},
                    )
                else:
                    self.client.put_item(TableName=self.table, Item=item(i, self.rng))
                self.writes += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def settle(src: Any, dst: Any, table: str, timeout: float) -> Any:
    """Wait until the target caught up, then compare item by item. Item counts (cheap on the
    emulator) are watched first: full scans while the applier works would slow it down."""
    deadline = time.monotonic() + timeout

    def count(client: Any) -> int:
        return int(client.describe_table(TableName=table)["Table"]["ItemCount"])

    while time.monotonic() < deadline and count(dst) != count(src):
        time.sleep(2.0)
    return wait_identical(src, dst, table, KEYS, timeout=max(deadline - time.monotonic(), 1.0))


def run_bootstrap_under_writes(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path, n: int, extra: list[str], timeout: float
) -> None:
    """Source on the session's emulator, target on one of its own (two regions, two servers)."""
    with moto_server() as target_endpoint:
        src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name=ORIGIN)
        dst = boto3.client("dynamodb", endpoint_url=target_endpoint, region_name="us-west-2")
        existing_table(src, unique, n)
        create_table(dst, unique, stream=False)
        url = f"{amqp_url}?queue={unique}"
        publish, apply = bridge_args(moto_endpoint, unique, url, tmp_path, target_endpoint)
        log = tmp_path / "bridge.log"
        app = start("bridge.cli.apply", apply, log)
        # the child owns the log file handle for its lifetime
        stderr = open(log, "ab")  # noqa: SIM115
        pub = subprocess.Popen(
            [*start_cmd("bridge.cli.publish"), *publish, *extra], stdout=subprocess.PIPE, stderr=stderr
        )
        writer = Writer(src, unique, n)
        writer.start()
        try:
            deadline = time.monotonic() + timeout
            # Stream-time versions (no timestamp attribute): the case the copy's version rule is for.
            while not progress_of(tmp_path, unique).get("run", {}).get("complete"):
                assert pub.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "bootstrap did not finish"
                time.sleep(0.5)
            writes_during_copy = writer.writes
            # and a few more writes after it (observed, not slept for)
            while writer.writes < writes_during_copy + 10 and writer.error is None:
                assert time.monotonic() < deadline + 60, "the writer stalled"
                time.sleep(0.05)
        finally:
            writer.stop.set()
            writer.join(30)
        assert writer.error is None, writer.error
        assert writes_during_copy > 20
        try:
            diff = settle(src, dst, unique, timeout)
        finally:
            for proc in (pub, app):
                proc.send_signal(signal.SIGTERM)
            out, _ = pub.communicate(timeout=60)
            app.wait(60)
        example = diff.different[:3] or diff.only_in_source[:3] or diff.only_in_target[:3]
        assert diff.identical, f"{diff.count} keys differ, e.g. {example}\n{log.read_text()[-3000:]}"
        assert pub.returncode == 0 and app.returncode == 0, log.read_text()[-3000:]
        summary = last_json(out)
        assert summary["bootstrap"]["complete"] and summary["bootstrap"]["items"] >= n * 0.6

        verify = subprocess.run(
            [
                *start_cmd("bridge.cli.admin"),
                "verify",
                "--source-table",
                unique,
                "--source-region",
                ORIGIN,
                "--source-endpoint",
                moto_endpoint,
                "--target-table",
                unique,
                "--target-region",
                "us-west-2",
                "--target-endpoint",
                target_endpoint,
                "--json",
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        result = json.loads(verify.stdout)
        assert verify.returncode == 0 and result["identical"], verify.stdout[-2000:] + verify.stderr[-2000:]
        assert result["source_items"] == result["target_items"] == diff.compared


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_bootstrap_while_a_writer_updates_and_deletes_ends_identical(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    # Paced (pages of 50 at 4 RCU/s, a few seconds) so the writer has time to change what is being copied.
    run_bootstrap_under_writes(
        moto_endpoint,
        amqp_url,
        unique,
        tmp_path,
        n=600,
        extra=["--bootstrap-segments", "4", "--bootstrap-page-items", "50", "--bootstrap-rcu", "4"],
        timeout=180,
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.rabbitmq
@pytest.mark.aws
def test_bootstrap_of_20000_items_while_a_writer_updates_and_deletes_ends_identical(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    run_bootstrap_under_writes(
        moto_endpoint, amqp_url, unique, tmp_path, n=20_000, extra=["--bootstrap-segments", "8"], timeout=900
    )


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_a_killed_bootstrap_resumes_without_rereading_finished_segments(
    moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path
) -> None:
    n = 400
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name=ORIGIN)
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    existing_table(src, unique, n)
    create_table(dst, unique, stream=False)
    publish, apply = bridge_args(moto_endpoint, unique, f"{amqp_url}?queue={unique}", tmp_path)
    # 32 segments on 16 threads (two waves), pages of 15 items, each charged about 1 RCU, at 8 RCU/s:
    # the copy takes ~8 s, and the first wave of segments finishes well before the second.
    publish += ["--bootstrap-segments", "32", "--bootstrap-page-items", "15", "--bootstrap-rcu", "8"]
    log = tmp_path / "bridge.log"
    pub = start("bridge.cli.publish", publish, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            docs = progress_of(tmp_path, unique)
            finished = [name for name, doc in docs.items() if name != "run" and doc["finished"]]
            if len(finished) >= 4:
                break
            assert pub.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        pub.send_signal(signal.SIGKILL)
        pub.wait(30)
    finally:
        if pub.poll() is None:
            pub.kill()
    docs = progress_of(tmp_path, unique)  # durable: what the killed process had saved
    assert not docs["run"]["complete"], "killed too late: the copy had finished"
    finished = {name for name, doc in docs.items() if name != "run" and doc["finished"]}
    saved_items = sum(doc["items"] for name, doc in docs.items() if name != "run")
    assert 0 < saved_items < n and finished

    resumed = subprocess.run(
        [*start_cmd("bridge.cli.publish"), *publish, "--until-idle", "2"], capture_output=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    stats = last_json(resumed.stdout)["bootstrap"]
    assert stats["complete"] and stats["segments_skipped"] == len(finished)
    assert stats["items"] == n - saved_items  # finished segments and confirmed pages are not read again
    assert {name for name, doc in progress_of(tmp_path, unique).items() if name != "run"} == {
        f"segment/{i}" for i in range(32)
    }

    again = subprocess.run(
        [*start_cmd("bridge.cli.publish"), *publish, "--until-idle", "1"], capture_output=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert last_json(again.stdout)["bootstrap"]["already_complete"]

    app = start("bridge.cli.apply", apply, log)
    try:
        diff = wait_identical(src, dst, unique, KEYS, timeout=120)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(60)
    assert diff.identical and diff.compared == n, log.read_text()[-3000:]
