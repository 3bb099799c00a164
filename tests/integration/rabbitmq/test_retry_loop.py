"""The retry loop inside bridge-apply: poison changes are parked after N attempts while everything
around them applies; throttling storms drain; a pass over the retry queue is bounded and safe.

Real parts: moto's server for the target table, the in-process memory transport for the bulk
runs, and the real RabbitMQ for the storm. moto never throttles, so throttling is injected on the
real client (see ``Throttle``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.apply.retry import RetryPolicy
from bridge.change import Version
from bridge.deadletter.records import FailureRecord, Kind, State
from bridge.demo.workload import create_table
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.wiring import build_applier
from tests.deadletter_support import (
    STRANGER,
    Throttle,
    apply_config,
    envelope,
    put,
    records_on,
    send,
    stored,
    trusted_dir,
)

FAST_RETRIES = {"transient_retries": 1, "retry_initial_delay": 0.05, "retry_max_delay": 0.2}


@pytest.fixture
def target(moto_endpoint: str, unique: str) -> tuple[Any, str]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    return client, unique


def good_changes(count: int, keys: int = 200) -> list[Any]:
    """``count`` puts over ``keys`` items, each item's versions rising."""
    return [put(n % keys, ts=2_000_000 + n, name={"S": f"v{n}"}) for n in range(count)]


@pytest.mark.aws
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("good", [2_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_poison_change_is_parked_after_n_attempts_while_good_changes_around_it_apply(
    good: int, target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    attempts = 4
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url, retry_max_attempts=attempts, **FAST_RETRIES)
    changes = good_changes(good)
    transient_poison = put(900_000, ts=3_000_000, name={"S": "always throttled"})
    permanent_poison = put(900_001, ts=3_000_000, blob={"S": "x" * 420_000})  # over the 400 KB item limit
    # the poison sits in the middle of the second envelope, with good changes on both sides
    changes[150:150] = [transient_poison, permanent_poison]
    bodies = [envelope(changes[i : i + 100], eid=f"env{i}") for i in range(0, len(changes), 100)]
    send(url, bodies)

    applier = build_applier(cfg, threading.Event())
    throttle = Throttle(applier.target.client, lambda user_id: user_id == 900_000)
    try:
        stats = applier.run(until_idle=1.0)
    finally:
        applier.close()

    latest = {c.keys["user_id"]["N"]: c for c in changes[:150] + changes[152:]}
    items = stored(client, table)
    assert {str(k) for k in items} == set(latest)  # every good item there, no poison
    for user_id, change in latest.items():
        assert items[int(user_id)]["_bridge_v"]["S"] == change.version.encode()
    # every good change was written exactly once: nothing re-applied around the poison
    per_key = {int(c.keys["user_id"]["N"]) for c in changes} - {900_000, 900_001}
    assert all(throttle.sent[k] == good // 200 for k in per_key)
    assert throttle.sent[900_000] == 0 and throttle.refused == attempts * (1 + cfg.transient_retries)
    assert stats.applied == good and stats.dead_lettered == 2
    assert (stats.retried, stats.recovered, stats.parked) == (attempts - 1, 0, 2)

    assert records_on(cfg.transport + ".dlq") == []  # nothing left retrying
    parked = {r.error: r for r in records_on(cfg.transport + ".dlq.parked")}
    assert set(parked) == {"TransientApplyError", "ItemTooLargeError"}  # a permanent error with its own reason
    throttled, too_big = parked["TransientApplyError"], parked["ItemTooLargeError"]
    assert throttled.state is State.PARKED and throttled.attempts == attempts
    assert f"gave up after {attempts} attempt(s)" in throttled.message
    assert "ProvisionedThroughputExceededException" in throttled.message
    assert too_big.attempts == 1 and "item limit" in too_big.message
    for record in (throttled, too_big):  # each names its one change in the signed envelope it came in
        assert record.kind is Kind.CHANGES and record.envelope_id == "env100" and record.payload == bodies[1]
    assert (throttled.changes, too_big.changes) == ((50,), (51,))
    assert throttled.first_failed_at < throttled.last_failed_at


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_throttling_storm_ends_with_everything_applied_and_nothing_in_the_dlq(
    target: tuple[Any, str], tmp_path: Path, amqp_url: str, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, f"{amqp_url}?queue={unique}", **FAST_RETRIES)
    changes = [put(n, ts=5_000_000 + n, name={"S": "storm"}) for n in range(300)]
    send(cfg.transport, [envelope(changes[i : i + 50], eid=f"storm{i}") for i in range(0, 300, 50)])

    applier = build_applier(cfg, threading.Event())
    # The first 700 writes are refused: all 300 changes fail twice (once in place), and the
    # first re-attempts of 50 of them fail again. Then the storm is over.
    storm = {"left": 700}

    def throttled(_: int) -> bool:
        storm["left"] -= 1
        return storm["left"] >= 0

    throttle = Throttle(applier.target.client, throttled)
    try:
        stats = applier.run(until_idle=1.0)
    finally:
        applier.close()

    assert throttle.refused == 700
    assert set(stored(client, table)) == set(range(300))
    assert stats.dead_lettered == 300  # the storm outlasted the in-place retries: the DLQ took over
    assert stats.recovered == 300 and stats.retried == 350 and stats.parked == 0
    assert stats.applied == 300
    assert records_on(cfg.transport.replace(f"queue={unique}", f"queue={unique}.dlq")) == []
    assert records_on(cfg.transport.replace(f"queue={unique}", f"queue={unique}.dlq.parked")) == []


def _retrying(payload: bytes, changes: tuple[int, ...], **fields: Any) -> FailureRecord:
    now = time.time()
    base: dict[str, Any] = {"first_failed_at": now - 5, "last_failed_at": now - 5, "retry_at": now - 1}
    return FailureRecord(
        Kind.CHANGES, State.RETRYING, "TransientApplyError", "throttled", payload, changes=changes, **{**base, **fields}
    )


@pytest.mark.aws
def test_a_pass_puts_back_what_is_not_due_and_moves_what_must_not_be_retried(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url, retry_max_delay=120)
    now = time.time()
    body = envelope([put(1), put(2)])
    not_due = _retrying(body, (0,), retry_at=now + 60)
    forged_far = _retrying(body, (1,), retry_at=now + 10 * 365 * 86400)  # beyond what any policy sets
    already_parked = _retrying(body, (0,)).with_(state=State.PARKED)
    unsigned = FailureRecord(Kind.CHANGE, State.RETRYING, "TransientApplyError", "x", b'{"op":"put"}')
    wrong_key = _retrying(envelope([put(3)], signer=STRANGER), (0,))
    out_of_range = _retrying(body, (7,))
    dlq = open_transport(url + ".dlq", "dlq")
    dlq.publish(
        [
            OutgoingMessage(r.encode(), r.id, r.id)
            for r in (not_due, forged_far, already_parked, unsigned, wrong_key, out_of_range)
        ]
    )
    dlq.publish([OutgoingMessage(b"not a failure record", "junk", "junk")])

    applier = build_applier(cfg, threading.Event())
    try:
        assert applier.retry is not None
        report = applier.retry.sweep()
    finally:
        applier.close()

    assert report.looked_at == 7  # each once: the pass stopped when it met its own put-backs
    assert stored(client, table) == {}  # nothing here may be applied
    back = {r.id: r for r in records_on(url + ".dlq")}
    assert set(back) == {not_due.id, forged_far.id}
    assert back[not_due.id].retry_at == not_due.retry_at and back[not_due.id].checked_at is not None
    assert back[forged_far.id].retry_at is not None and back[forged_far.id].retry_at <= time.time() + 120
    moved = {r.id: r for r in records_on(url + ".dlq.parked")}
    assert {already_parked.id, unsigned.id, wrong_key.id, out_of_range.id} < set(moved)
    assert moved[unsigned.id].state is State.PARKED and "not signed" in moved[unsigned.id].message
    assert moved[wrong_key.id].state is State.QUARANTINED and STRANGER.key_id in moved[wrong_key.id].message
    assert moved[out_of_range.id].state is State.QUARANTINED and "[7]" in moved[out_of_range.id].message
    (junk,) = [r for r in moved.values() if r.id.startswith("foreign-")]
    assert junk.payload == b"not a failure record" and junk.state is State.QUARANTINED


@pytest.mark.aws
def test_a_record_put_back_is_not_swallowed_by_a_broker_that_remembers_ids_for_five_minutes(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    """Models real SQS FIFO: a deduplication id used in the last 300 s is accepted and then dropped,
    even after the first copy was deleted. moto forgets an id once its message is deleted, so the
    SQS tests cannot show this; ``memory://...?dedup_window=300`` keeps the 5-minute rule."""
    client, table = target
    trusted_dir(tmp_path)
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, f"memory://{unique}?dedup_window=300")
    dlq_url = f"memory://{unique}.dlq?dedup_window=300"
    not_due = _retrying(envelope([put(1)]), (0,), retry_at=time.time() + 60)
    open_transport(dlq_url, "dlq").publish([OutgoingMessage(not_due.encode(), not_due.id, not_due.id)])

    for _ in range(2):  # each pass takes the record and puts it back, changed (checked_at)
        applier = build_applier(cfg, threading.Event())
        try:
            assert applier.retry is not None
            assert applier.retry.sweep().put_back == 1, "the record was lost: put back under an id already used"
        finally:
            applier.close()

    (back,) = records_on(dlq_url)
    assert back.id == not_due.id and back.retry_at == not_due.retry_at


@pytest.mark.aws
def test_replaying_an_old_failure_never_overwrites_newer_data(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(tmp_path, client.meta.endpoint_url, table, url, **FAST_RETRIES)
    old = envelope([put(1, ts=10, name={"S": "old"}), put(2, ts=10, name={"S": "only"})], eid="old")
    record = _retrying(old, (0, 1))
    open_transport(url + ".dlq", "dlq").publish([OutgoingMessage(record.encode(), record.id, record.id)])
    send(url, [envelope([put(1, ts=20, name={"S": "new"})], eid="new")])

    applier = build_applier(cfg, threading.Event())
    try:
        applier.process(applier.source.receive(10, 1.0))  # the newer write lands first
        assert applier.retry is not None
        applier.retry.sweep()
    finally:
        applier.close()

    items = stored(client, table)
    assert items[1]["name"] == {"S": "new"} and items[2]["name"] == {"S": "only"}
    assert items[1]["_bridge_v"]["S"] == Version(20, "cn-north-1", 20).encode()
    assert (applier.stats.retried, applier.stats.recovered, applier.stats.stale) == (2, 2, 1)
    assert records_on(url + ".dlq") == [] and records_on(url + ".dlq.parked") == []


@pytest.mark.aws
def test_until_idle_leaves_distant_retries_on_the_queue_for_the_next_run(
    target: tuple[Any, str], tmp_path: Path, unique: str
) -> None:
    client, table = target
    trusted_dir(tmp_path)
    url = f"memory://{unique}"
    cfg = apply_config(
        tmp_path,
        client.meta.endpoint_url,
        table,
        url,
        transient_retries=0,
        retry_initial_delay=3600,
        retry_max_delay=3600,
    )
    send(url, [envelope([put(1), put(2)], eid="later")])
    applier = build_applier(cfg, threading.Event())
    Throttle(applier.target.client, lambda user_id: user_id == 2)
    started = time.monotonic()
    try:
        stats = applier.run(until_idle=0.5)
    finally:
        applier.close()
    assert time.monotonic() - started < 60  # did not wait an hour for the re-attempt
    assert stats.applied == 1 and stats.dead_lettered == 1
    (waiting,) = records_on(url + ".dlq")
    assert waiting.state is State.RETRYING and waiting.changes == (1,)
    assert waiting.retry_at is not None and waiting.retry_at - waiting.last_failed_at >= 1800  # equal jitter


def test_retry_policy_backs_off_exponentially_with_jitter_and_gives_up() -> None:
    policy = RetryPolicy(max_attempts=5, max_age_s=100, initial_delay_s=1, max_delay_s=8)
    for attempts, step in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (10**9, 8)):
        delays = [policy.delay(attempts) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 10  # jittered, not one value
    now = time.time()
    fresh = FailureRecord(Kind.CHANGES, State.RETRYING, "E", "m", b"", first_failed_at=now, last_failed_at=now)
    assert policy.schedule(fresh).state is State.RETRYING
    assert now + 0.5 <= (policy.schedule(fresh).retry_at or 0) <= now + 1
    assert policy.schedule(fresh.with_(attempts=5)).state is State.PARKED
    aged = fresh.with_(first_failed_at=now - 101)
    assert policy.schedule(aged).state is State.PARKED and "gave up after 10" in policy.schedule(aged).message
