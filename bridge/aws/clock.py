"""AWS's time, read from the ``Date`` header of a service response, and the host clock checked against it.

Copies (bootstrap, ``verify --repair``) are versioned "a margin before the copy was read". Taken from
the host's clock, a host running an hour fast would version its copies an hour into the future and
they would win against every real write of that hour, silently. The stream's own timestamps come
from DynamoDB's clock; so do copy versions, and a host clock that disagrees with it by more than the
margin stops the copy, since its other time-based decisions are then wrong too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.errors import ClockSkewError, SourceError


@dataclass(frozen=True)
class ServiceTime:
    aws_s: float  # the service's time (the Date header: whole seconds, rounded down)
    skew_s: float  # host clock minus the service's, from the middle of the call


def service_time(client: Any, table: str, *, clock: Callable[[], float] = time.time) -> ServiceTime:
    """AWS's time from one DescribeTable on ``table``; ``clock`` is the host's (injectable for tests)."""
    before = clock()
    try:
        response = client.describe_table(TableName=table)
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot read AWS's time (DescribeTable {table!r}): {exc}") from exc
    after = clock()
    header = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    if not header:
        raise SourceError(f"DescribeTable {table!r}: the response has no Date header to take AWS's time from")
    try:
        aws_s = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError) as exc:
        raise SourceError(f"DescribeTable {table!r}: unreadable Date header {header!r}") from exc
    # The header is rounded down to the second: its true time lies in [aws_s, aws_s + 1).
    return ServiceTime(aws_s, (before + after) / 2 - (aws_s + 0.5))


def checked_service_time(client: Any, table: str, margin_s: float, *, clock: Callable[[], float] = time.time) -> float:
    """AWS's time in epoch seconds, after refusing a host clock off by more than ``margin_s``."""
    now = service_time(client, table, clock=clock)
    if abs(now.skew_s) > margin_s:
        direction = "ahead of" if now.skew_s > 0 else "behind"
        raise ClockSkewError(
            f"this host's clock is {abs(now.skew_s):.0f} s {direction} AWS's (Date header of DynamoDB's "
            f"responses), more than the copy margin of {margin_s:.0f} s; fix the clock (NTP) and run again"
        )
    return now.aws_s
