"""Last-writer-wins with tombstones, against real DynamoDB calls on moto's server."""

from __future__ import annotations

import dataclasses
from collections import Counter

import boto3
import pytest

from bridge.apply.loop import ApplyStats, ChangeApplier
from bridge.apply.target import TargetTable, Unsettled
from bridge.change import Change, Operation, Outcome, Version
from bridge.demo.workload import create_table
from bridge.errors import ConfigError, PermanentApplyError, SystemicError, TransientApplyError


@pytest.fixture
def target(moto_endpoint: str, unique: str) -> TargetTable:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    return TargetTable.open(client, unique)


KEY = {"tenant": {"S": "a"}, "user_id": {"N": "1"}}


def put(ts: int, name: str, origin: str = "r1", seq: int = 1) -> Change:
    return Change(KEY, Operation.PUT, Version(ts, origin, seq), {**KEY, "name": {"S": name}})


def delete(ts: int, origin: str = "r1", seq: int = 1) -> Change:
    return Change(KEY, Operation.DELETE, Version(ts, origin, seq))


def read(target: TargetTable) -> dict | None:
    item = target.client.get_item(TableName=target.table, Key=target.key_of(put(0, "")), ConsistentRead=True).get(
        "Item"
    )
    return target.user_item(item) if item else None


def test_newer_wins_older_is_stale_same_is_duplicate(target: TargetTable) -> None:
    assert target.apply(put(10, "first")) is Outcome.APPLIED
    assert target.apply(put(20, "second")) is Outcome.APPLIED
    assert target.apply(put(15, "late")) is Outcome.STALE
    assert target.apply(put(20, "second")) is Outcome.DUPLICATE
    assert read(target)["name"] == {"S": "second"}


def test_equal_timestamps_break_ties_by_origin_then_sequence(target: TargetTable) -> None:
    assert target.apply(put(10, "from-b", origin="us-west-2")) is Outcome.APPLIED
    # same timestamp, origin sorts lower: loses everywhere
    assert target.apply(put(10, "from-a", origin="cn-north-1")) is Outcome.STALE
    assert target.apply(put(10, "from-b-later", origin="us-west-2", seq=2)) is Outcome.APPLIED
    assert read(target)["name"] == {"S": "from-b-later"}


def test_origin_tie_break_matches_tuple_order_not_naive_string_order() -> None:
    # "us-east-1|..." > "us-east-10|..." as naive strings; the encoding must agree with the tuple.
    a, b = Version(5, "us-east-1", 9), Version(5, "us-east-10", 1)
    assert (a < b) == (a.encode() < b.encode())
    assert Version.decode(a.encode()) == a


def test_delete_leaves_tombstone_so_older_write_does_not_resurrect(target: TargetTable) -> None:
    assert target.apply(put(10, "alive")) is Outcome.APPLIED
    assert target.apply(delete(30)) is Outcome.APPLIED
    assert read(target) is None
    assert target.apply(put(20, "zombie")) is Outcome.STALE
    assert read(target) is None
    # a newer write after the delete is a real re-creation
    assert target.apply(put(40, "reborn")) is Outcome.APPLIED
    assert read(target)["name"] == {"S": "reborn"}
    tomb = target.client.get_item(TableName=target.tombstone_table, Key=target.key_of(put(0, "")))["Item"]
    assert int(tomb["_bridge_expires"]["N"]) > 0


def test_delete_before_any_put_still_blocks_older_put(target: TargetTable) -> None:
    assert target.apply(delete(30)) is Outcome.APPLIED
    assert target.apply(put(20, "late")) is Outcome.STALE
    assert read(target) is None
    assert target.apply(delete(30)) is Outcome.DUPLICATE


def test_stale_delete_keeps_newer_item(target: TargetTable) -> None:
    target.apply(put(50, "new"))
    assert target.apply(delete(40)) is Outcome.STALE
    assert read(target)["name"] == {"S": "new"}


def test_bridge_attributes_use_the_prefix_and_upstream_ones_are_dropped(target: TargetTable) -> None:
    change = Change(KEY, Operation.PUT, Version(1, "r", 1), {**KEY, "_bridge_v": {"S": "forged"}})
    target.apply(change)
    raw = target.client.get_item(TableName=target.table, Key=target.key_of(change))["Item"]
    assert raw["_bridge_v"] == {"S": Version(1, "r", 1).encode()}
    assert all(k in ("tenant", "user_id") or k.startswith("_bridge") for k in raw)


def test_key_schema_mismatch_is_systemic_and_names_the_keys(target: TargetTable) -> None:
    # Every change of the source table has its key schema: a mismatch concerns all of them.
    bad = Change({"id": {"S": "x"}}, Operation.PUT, Version(1, "r", 1), {"id": {"S": "x"}})
    with pytest.raises(SystemicError, match="key schema mismatch"):
        target.apply(bad)
    wrong_type = Change({"tenant": {"S": "a"}, "user_id": {"S": "1"}}, Operation.DELETE, Version(1, "r", 1))
    with pytest.raises(SystemicError, match="user_id is S"):
        target.apply(wrong_type)


def test_oversize_item_is_a_permanent_error(target: TargetTable) -> None:
    big = Change(KEY, Operation.PUT, Version(1, "r", 1), {**KEY, "blob": {"S": "x" * 420_000}})
    with pytest.raises(PermanentApplyError):
        target.apply(big)
    assert read(target) is None


def test_no_create_refuses_missing_tombstone_table(moto_endpoint: str, unique: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    with pytest.raises(ConfigError, match="--no-create"):
        TargetTable.open(client, unique, create=False)
    with pytest.raises(ConfigError, match="does not exist"):
        TargetTable.open(client, unique + "-missing")


def test_delete_interrupted_between_its_two_writes_is_finished_by_redelivery(target: TargetTable) -> None:
    target.apply(put(10, "alive"))
    # the crash left only the tombstone written
    tomb = {**target.key_of(put(0, "")), "_bridge_v": {"S": delete(30).version.encode()}}
    target.client.put_item(TableName=target.tombstone_table, Item=tomb)
    assert read(target) is not None
    # the first delivery had recorded the delete (its tombstone): the redelivery finishes it as a duplicate
    assert target.apply(delete(30)) is Outcome.DUPLICATE
    assert read(target) is None


def keyed(n: int) -> dict:
    return {"tenant": {"S": "batch"}, "user_id": {"N": str(n)}}


def test_put_cut_short_before_its_tombstone_read_is_checked_again_on_redelivery(target: TargetTable) -> None:
    assert target.apply(delete(30)) is Outcome.APPLIED
    # the first delivery made its put, then died before reading the tombstone
    first = target.start(put(20, "zombie"))
    assert isinstance(first, Unsettled)
    assert read(target) is not None
    # the redelivery finds its own version there: a duplicate, which still reads the tombstone
    assert target.apply(put(20, "zombie")) is Outcome.STALE
    assert read(target) is None


def test_older_put_that_replaced_an_unsettled_older_put_is_undone_with_it(target: TargetTable) -> None:
    assert target.apply(delete(30)) is Outcome.APPLIED
    first = target.start(put(10, "zombie-1"))
    assert isinstance(first, Unsettled)
    # replaces the first before the first's undo: it saw an old image, so it reads no tombstone
    assert target.start(put(20, "zombie-2")) is Outcome.APPLIED
    tombs = target.read_tombstones([first.key])
    assert target.settle(first, tombs.get(target.key_id(first.key))) is Outcome.STALE
    assert read(target) is None  # no older write survives the newer delete
    # and the bridge knows both REMOVEs of its stream are its own (no echo)
    tomb = target.client.get_item(TableName=target.tombstone_table, Key=first.key, ConsistentRead=True)["Item"]
    assert len(tomb[target.deleted_attr]["SS"]) == 2


def test_undo_keeps_a_put_newer_than_the_tombstone(target: TargetTable) -> None:
    assert target.apply(delete(30)) is Outcome.APPLIED
    first = target.start(put(10, "zombie"))
    assert isinstance(first, Unsettled)
    assert target.start(put(40, "reborn")) is Outcome.APPLIED
    assert target.settle(first, target.read_tombstones([first.key]).get(target.key_id(first.key))) is Outcome.STALE
    assert read(target)["name"] == {"S": "reborn"}


def test_applier_reads_tombstones_in_batches_of_100_after_the_puts(target: TargetTable) -> None:
    calls: Counter[str] = Counter()
    target.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
    n = 250
    for i in range(0, n, 7):  # newer deletes of every 7th key arrived first
        assert target.apply(Change(keyed(i), Operation.DELETE, Version(30, "r1", i))) is Outcome.APPLIED
    calls.clear()
    stats = ApplyStats()
    applier = ChangeApplier(target, stats, workers=8)
    try:
        changes = [
            Change(keyed(i), Operation.PUT, Version(20, "r1", i), {**keyed(i), "x": {"N": "1"}}) for i in range(n)
        ]
        changes.append(Change(keyed(1), Operation.PUT, Version(21, "r1", 1000), {**keyed(1), "x": {"N": "2"}}))
        assert applier.apply([(c, i) for i, c in enumerate(changes)]) == []
    finally:
        applier.shutdown()
    undone = len(range(0, n, 7))
    assert (stats.applied, stats.stale) == (n + 1 - undone, undone)
    assert calls["BatchGetItem"] == 3 and calls["GetItem"] == 0  # 250 distinct keys: 100 + 100 + 50
    assert calls["PutItem"] == n + 1 and calls["DeleteItem"] == undone
    for i in range(n):
        item = target.client.get_item(TableName=target.table, Key=target.key_of_keys(keyed(i))).get("Item")
        assert (item is None) == (i % 7 == 0)


class UnprocessedHalf:
    """The DynamoDB client, except that BatchGetItem leaves half its keys (at least one) unprocessed
    ``rounds`` times: moto never answers UnprocessedKeys."""

    def __init__(self, client: object, rounds: int) -> None:
        self._client, self.rounds, self.calls = client, rounds, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict) -> dict:
        self.calls += 1
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        if self.rounds:
            self.rounds -= 1
            half = len(keys) // 2
            answer: dict = {"Responses": {table: []}}
            if half:
                answer = self._client.batch_get_item(RequestItems={table: {**request, "Keys": keys[:half]}})
            answer["UnprocessedKeys"] = {table: {**request, "Keys": keys[half:]}}
            return answer
        return self._client.batch_get_item(RequestItems=RequestItems)


def test_unprocessed_keys_are_asked_again_until_answered(target: TargetTable) -> None:
    keys = [target.key_of_keys(keyed(i)) for i in range(40)]
    for i in range(0, 40, 3):
        assert target.apply(Change(keyed(i), Operation.DELETE, Version(30, "r1", i))) is Outcome.APPLIED
    flaky = UnprocessedHalf(target.client, rounds=3)
    found = dataclasses.replace(target, client=flaky).read_tombstones(keys)
    assert flaky.calls == 4
    assert sorted(int(key_id[1][2]) for key_id in found) == list(range(0, 40, 3))


def test_keys_left_unprocessed_too_long_are_a_transient_error(target: TargetTable) -> None:
    flaky = UnprocessedHalf(target.client, rounds=10**6)
    with pytest.raises(TransientApplyError, match="unprocessed"):
        dataclasses.replace(target, client=flaky).read_tombstones([target.key_of_keys(keyed(i)) for i in range(4)])


def test_put_answers_skip_botocores_typed_parsing_and_errors_do_not(target: TargetTable) -> None:
    item = {**KEY, "bin": {"B": b"\x00\xff"}}
    target.client.put_item(TableName=target.table, Item=item)
    old = target.client.put_item(TableName=target.table, Item=item, ReturnValues="ALL_OLD")["Attributes"]
    assert old["bin"] == {"B": "AP8="}  # wire form: only whether an item was replaced matters to _put
    with pytest.raises(target.client.exceptions.ConditionalCheckFailedException) as refused:
        target.client.put_item(
            TableName=target.table,
            Item=item,
            ConditionExpression="attribute_not_exists(tenant)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert refused.value.response["Item"]["bin"] == {"B": b"\x00\xff"}  # botocore's, as before
    binary = Change(KEY, Operation.PUT, Version(50, "r1", 1), {**KEY, "bin": {"B": "AP8="}})
    assert target.apply(binary) is Outcome.APPLIED
    assert target.apply(binary) is Outcome.DUPLICATE
