"""Reading a whole table: parallel scan segments, paced to a read-capacity budget.

Shared by the bootstrap copy and ``bridge verify``. DynamoDB splits a table into
``TotalSegments`` disjoint parts for a parallel scan; each part is read page by page with
``ExclusiveStartKey``, so a page's ``LastEvaluatedKey`` is a resumable position.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws.errors import failure
from bridge.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")

RCU_BYTES = 4096  # one read capacity unit reads 4 KB (strongly consistent; eventually: two)


class ReadBudget:
    """A token bucket of read capacity units per second, shared by every scan thread.

    A scan reserves what it expects its page to cost (what its previous page cost) and settles
    the difference once the page is back, so the bucket may run into debt that later calls wait
    off: the budget holds on average, and a single page can exceed it. ``rcu_per_s=None`` means
    no limit.
    """

    def __init__(
        self,
        rcu_per_s: float | None,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if rcu_per_s is not None and rcu_per_s <= 0:
            raise ConfigError(f"read capacity budget must be positive, got {rcu_per_s}")
        self.rate = rcu_per_s
        self.burst = max(rcu_per_s or 0.0, 1.0)  # one second's worth
        self.stop = stop or threading.Event()
        self._clock = clock
        self._sleep = sleep or self.stop.wait
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()
        self.spent = 0.0

    def reserve(self, expected: float) -> None:
        """Block until ``expected`` units (at most one second's worth) are available, and take them."""
        if self.rate is None:
            return
        need = min(expected, self.burst)
        while not self.stop.is_set():
            with self._lock:
                self._refill()
                if self._tokens >= need:
                    self._tokens -= expected
                    return
                wait_s = (need - self._tokens) / self.rate
            self._sleep(wait_s)

    def settle(self, reserved: float, actual: float) -> None:
        """The call that reserved ``reserved`` units cost ``actual``."""
        with self._lock:
            self.spent += actual
            if self.rate is not None:
                self._tokens -= actual - reserved

    def _refill(self) -> None:
        now = self._clock()
        assert self.rate is not None
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item (boto3 form), as capacity is charged: names plus values."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(inner.encode())
    if tag == "N":
        return len(str(inner).lstrip("-").replace(".", "")) // 2 + 1
    if tag == "B":
        return len(inner)
    if tag in ("SS", "NS", "BS"):
        return sum(_value_size({tag[0]: x}) for x in inner)
    if tag == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if tag == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    return 1  # BOOL, NULL


def scan_cost(items: Sequence[dict[str, Any]], consistent: bool) -> float:
    """Capacity a scan page costs: the items' total size rounded up to 4 KB, halved unless consistent."""
    units = max(1, math.ceil(sum(item_size(i) for i in items) / RCU_BYTES))
    return units * (1.0 if consistent else 0.5)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]  # boto3 form (binary as bytes)
    next_key: dict[str, Any] | None  # LastEvaluatedKey: where the next page starts; None: segment done
    rcu: float


def scan_segment(
    client: Any,
    table: str,
    segment: int,
    total: int,
    *,
    start_key: dict[str, Any] | None = None,
    budget: ReadBudget | None = None,
    consistent: bool = False,
    page_items: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Page]:
    """Pages of one parallel-scan segment, from ``start_key`` (exclusive) to its end.

    Each page is charged to ``budget`` at the larger of what DynamoDB reports
    (``ReturnConsumedCapacity``) and the estimate from the items' sizes (emulators report
    less than AWS would charge).
    """
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Segment": segment,
        "TotalSegments": total,
        "ConsistentRead": consistent,
        "ReturnConsumedCapacity": "TOTAL",
    }
    if page_items:
        kwargs["Limit"] = page_items
    if start_key:
        kwargs["ExclusiveStartKey"] = start_key
    expected = 1.0
    while stop is None or not stop.is_set():
        if budget is not None:
            budget.reserve(expected)
        try:
            response = client.scan(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise failure(exc, f"scan of table {table!r} segment {segment}/{total} failed", SourceError) from exc
        items = list(response.get("Items") or [])
        reported = float((response.get("ConsumedCapacity") or {}).get("CapacityUnits") or 0.0)
        cost = max(reported, scan_cost(items, consistent))
        if budget is not None:
            budget.settle(expected, cost)
        expected = cost
        next_key = response.get("LastEvaluatedKey") or None
        yield Page(items, next_key, cost)
        if next_key is None:
            return
        kwargs["ExclusiveStartKey"] = next_key


def run_parallel(fn: Callable[[int], T], jobs: Sequence[int], workers: int, stop: threading.Event) -> list[T]:
    """``fn(job)`` for every job on ``workers`` threads; the first failure stops the rest and is raised."""
    if not jobs:
        return []
    results: list[T] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="scan") as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            stop.set()  # the other threads finish their page and return
            for f in futures:
                f.cancel()
            exc = failed.exception()
            assert exc is not None
            raise exc
        results = [f.result() for f in futures]
    return results


def describe_counts(client: Any, table: str) -> tuple[int, int]:
    """(ItemCount, TableSizeBytes) from DescribeTable: estimates DynamoDB refreshes about every 6 hours."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise ConfigError(f"table {table!r} does not exist") from exc
        raise failure(exc, f"cannot describe table {table!r}", SourceError) from exc
    except BotoCoreError as exc:
        raise failure(exc, f"cannot describe table {table!r}", SourceError) from exc
    return int(desc.get("ItemCount") or 0), int(desc.get("TableSizeBytes") or 0)
