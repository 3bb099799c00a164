"""Turning a ``kinesis://STREAM?...`` URL into validated settings, once, at construction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.aws import AWS_PARAMS, AwsSide, param_flag, param_number
from bridge.errors import ConfigError
from bridge.transport import TransportURL
from bridge.transport.params import UrlParams

_STREAM = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_CONSUMER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
KNOWN_PARAMS = AWS_PARAMS | {
    "create",
    "shards",
    "retention_hours",
    "checkpoint",
    "consumer",
    "poll_interval",
    "read_ahead",
    "put_attempts",
}


@dataclass(frozen=True)
class KinesisSettings:
    stream: str
    side: AwsSide
    #: Create the stream on first use if it is missing (``create=false``: fail with ConfigError).
    create: bool = True
    #: Shards of a stream we create; 0 = on-demand capacity mode.
    shards: int = 1
    #: Retention of a stream we create, in hours (24 is Kinesis' default; up to 8760).
    retention_hours: int = 24
    #: Consumer checkpoints: a SQLite path or ``dynamodb://TABLE`` (in the stream's account and region).
    checkpoint: str = ""
    #: Names this consumer's checkpoints, so several appliers can read one stream independently.
    consumer: str = ""
    #: Pause after a GetRecords that found nothing (Kinesis allows 5 GetRecords/s per shard).
    poll_interval: float = 0.5
    #: Records one GetRecords may fetch ahead of what the caller asked for (buffered per shard).
    read_ahead: int = 100
    #: PutRecords calls per batch while some records keep failing (throttled), before giving up to core.
    put_attempts: int = 10

    @classmethod
    def from_url(cls, url: TransportURL) -> KinesisSettings:
        where = url.redacted()
        params = url.params
        stream = url.netloc or url.path.strip("/")
        if not _STREAM.match(stream):
            raise ConfigError(
                f"{where}: stream name {stream!r} must be 1-128 characters of a-z A-Z 0-9 _ . -"
                " (kinesis://STREAM?region=REGION)"
            )
        if url.path.strip("/") and url.netloc:
            raise ConfigError(f"{where}: put the stream name in the host part only (kinesis://STREAM?...)")
        UrlParams(url, KNOWN_PARAMS)  # the policy of every transport: unknown parameters are warned about
        shards_text = params.get("shards", "1")
        shards = (
            0 if shards_text == "on-demand" else param_number(params, "shards", 1, where, minimum=1, maximum=10_000)
        )
        consumer = params.get("consumer", "")
        if consumer and not _CONSUMER.match(consumer):
            raise ConfigError(f"{where}: consumer must be 1-64 characters of A-Z a-z 0-9 _ . : -")
        return cls(
            stream=stream,
            side=AwsSide.from_params(params, what=where),
            create=param_flag(params, "create", True, where),
            shards=shards,
            retention_hours=param_number(params, "retention_hours", 24, where, minimum=24, maximum=8760),
            checkpoint=params.get("checkpoint") or f"bridge-kinesis-{stream}.sqlite",
            consumer=consumer,
            poll_interval=param_number(params, "poll_interval", 0.5, where, minimum=0.2, maximum=60),
            read_ahead=param_number(params, "read_ahead", 100, where, minimum=1, maximum=10_000),
            put_attempts=param_number(params, "put_attempts", 10, where, minimum=1, maximum=100),
        )
