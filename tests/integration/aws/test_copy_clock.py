"""Copies (bootstrap, verify --repair) are versioned from AWS's time, not the host's, and a host clock
off by more than the copy margin refuses to copy. The host clock is injected (the one parameter the
copy reads local time through); AWS's time is the Date header of real responses from the moto
server, which runs on this machine's true clock. Stream replication under skew is tested both ways in
tests/integration/rabbitmq/test_active_active.py and stays as it is."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.aws.clock import service_time
from bridge.copy.bootstrap import COPY_MARGIN_S, Bootstrap
from bridge.copy.verify import KeyDiff, Repairer, Side
from bridge.demo.workload import create_table
from bridge.envelope import Signer, TrustStore, decode
from bridge.errors import ClockSkewError
from bridge.plugin.manager import open_transport
from bridge.publish.sender import Sender
from bridge.state.scan_progress import open_scan_progress
from bridge.wiring import build_sender

pytestmark = pytest.mark.aws
KEYS = ("tenant", "user_id")
ORIGIN = "cn-north-1"
SIGNER = Signer.from_seed(bytes(range(32)))


@pytest.fixture
def source(moto_endpoint: str, unique: str) -> Any:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    create_table(client, unique, stream=False)
    for i in range(5):
        client.put_item(TableName=unique, Item={"tenant": {"S": "c"}, "user_id": {"N": str(i)}})
    return client


def skewed(offset_s: float) -> Any:
    return lambda: time.time() + offset_s


def sender_for(queue: str, tmp_path: Path, table: str) -> Sender:
    return build_sender(
        f"memory://{queue}", None, SIGNER, tmp_path / "q", origin=ORIGIN, table=table, stop=threading.Event()
    )


def copy(source: Any, table: str, tmp_path: Path, offset_s: float) -> Bootstrap:
    progress = open_scan_progress(str(tmp_path / f"cp{offset_s:+.0f}.sqlite"))
    return Bootstrap(
        source, table, KEYS, progress, lambda: sender_for(table, tmp_path, table),
        origin=ORIGIN, segments=1, display="none", force=True, clock=skewed(offset_s),
    )  # fmt: skip


def shipped_versions(queue: str) -> list[int]:
    transport = open_transport(f"memory://{queue}", "consume")
    try:
        got = transport.receive(100, timeout=0.5)
        for d in got:
            transport.ack(d)
    finally:
        transport.close()
    return [c.version.ts_us for d in got for c in decode(d.body, TrustStore.of(SIGNER)).changes]


@pytest.mark.parametrize("offset_s", [3600.0, -3600.0, COPY_MARGIN_S + 5])
def test_a_host_clock_off_by_more_than_the_margin_refuses_to_copy(
    source: Any, unique: str, tmp_path: Path, offset_s: float
) -> None:
    with pytest.raises(ClockSkewError, match="ahead of" if offset_s > 0 else "behind") as caught:
        copy(source, unique, tmp_path, offset_s).run()
    assert f"more than the copy margin of {COPY_MARGIN_S:.0f} s" in str(caught.value)
    assert shipped_versions(unique) == []  # nothing was copied


def test_copy_versions_come_from_awss_time_not_the_hosts(source: Any, unique: str, tmp_path: Path) -> None:
    """A host 45 s fast (within the margin) used to version its copies 45 s late: they beat writes of
    those 45 s. Now the copy's version is AWS's time minus the margin, whatever the host says."""
    before = service_time(source, unique).aws_s
    stats = copy(source, unique, tmp_path, 45.0).run()
    after = service_time(source, unique).aws_s + 1
    assert stats.complete and stats.items == 5
    versions = shipped_versions(unique)
    assert len(versions) == 5 and len(set(versions)) == 1
    assert (before - COPY_MARGIN_S) * 1e6 <= versions[0] <= (after - COPY_MARGIN_S) * 1e6


def test_repair_refuses_a_skewed_host_clock_before_reading_or_sending(source: Any, unique: str, tmp_path: Path) -> None:
    sender = sender_for(unique, tmp_path, unique)
    repairer = Repairer(
        sender, Side(source, unique, "source"), Side(source, unique, "target"), KEYS,
        origin=ORIGIN, clock=skewed(-3600),
    )  # fmt: skip
    try:
        with pytest.raises(ClockSkewError, match="behind AWS's"):
            repairer.repair([KeyDiff({"tenant": {"S": "c"}, "user_id": {"N": "1"}}, "only_in_source")])
    finally:
        sender.close()
    assert shipped_versions(unique) == []
