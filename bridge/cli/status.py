"""``bridge status --config FILE``: how far behind a line is, read from its stores, no daemon needed.

Publisher config: per shard the checkpoint, when it was saved, and what waits after it in the stream
(read with a short GetRecords walk from the checkpoint: the stream is the only place that knows).
Applier config: the queue's depth, the retry and parked queues' depths, and the last applied change
with its lag (from the applier's status file, see :mod:`bridge.observe.statefile`).
Exit 0 when healthy; :class:`~bridge.errors.BehindError` (exit 12) when behind ``--max-lag`` /
``--max-depth`` or when dead letters wait.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bridge import config
from bridge.cli.common import handled
from bridge.errors import BehindError, BridgeError, ConfigError, SourceError
from bridge.observe.statefile import read_status_file

# A walk of the stream from the checkpoint stops after this many GetRecords calls per shard: the
# answer is then "at least N records" (the age of the oldest waiting record is exact either way).
MAX_READS_PER_SHARD = 5


@click.command("status")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), required=True, help="publish or apply config")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--max-lag",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="seconds: a shard whose oldest unpublished record is older, or a queue with nothing applied for longer,"
    " is behind",
)
@click.option("--max-depth", type=click.IntRange(min=0), help="messages waiting in the queue beyond which it is behind")
@handled
def status(config_file: str, as_json: bool, max_lag: float, max_depth: int | None) -> None:
    """Where a publisher or applier stands: checkpoints and backlog, or queue depths and the last change applied.

    Exits 0 when healthy, 12 when behind a threshold or when dead letters wait.
    """
    kind = config.kind_of(Path(config_file))
    pipelines: list[config.Pipeline[Any]]
    if kind == "publish":
        from bridge.wiring import expand_pipelines

        pipelines = list(expand_pipelines(config.load_pipelines(config.PublishConfig, config_file, {})))
    else:
        pipelines = list(config.load_pipelines(config.ApplyConfig, config_file, {}))
    if len(pipelines) == 1 and not pipelines[0].listed:
        report = _one(pipelines[0], max_lag, max_depth)
    else:
        report = {"kind": kind, "pipelines": [], "problems": []}
        for pipeline in pipelines:
            try:
                one = _one(pipeline, max_lag, max_depth)
            except BridgeError as exc:  # one pipeline's broken table must not hide the others' status
                one = {"kind": kind, "table": None, "healthy": False, "problems": [str(exc)], "error": str(exc)}
            one["pipeline"] = pipeline.name
            report["pipelines"].append(one)
            report["problems"] += [f"{pipeline.name}: {problem}" for problem in one["problems"]]
        report["healthy"] = not report["problems"]
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(report))
    if report["problems"]:
        raise BehindError("; ".join(report["problems"]))


def _one(pipeline: config.Pipeline[Any], max_lag: float, max_depth: int | None) -> dict[str, Any]:
    if isinstance(pipeline.cfg, config.PublishConfig):
        return publisher_status(pipeline.cfg, max_lag, namespace=pipeline.name if pipeline.listed else None)
    if pipeline.listed:
        # Among many, a pipeline whose target is gone says so (bridge-apply retries it apart from the others).
        _target_exists(pipeline.cfg)
    return applier_status(pipeline.cfg, max_lag, max_depth)


def _target_exists(cfg: config.ApplyConfig) -> None:
    from bridge.copy.schema import describe_schema
    from bridge.wiring import aws_side

    if describe_schema(aws_side(cfg, "target").client("dynamodb"), cfg.target_table, "target") is None:
        raise ConfigError(f"target table {cfg.target_table!r} does not exist")


def publisher_status(cfg: config.PublishConfig, max_lag: float, namespace: str | None = None) -> dict[str, Any]:
    """``namespace``: a listed pipeline's name, under which its checkpoints are kept."""
    from bridge.state.checkpoints import open_checkpoint_store
    from bridge.state.namespace import namespaced
    from bridge.wiring import aws_side, describe_source

    side = aws_side(cfg, "source")
    client = side.client("dynamodb")
    _, arn = describe_source(client, cfg.source_table)
    streams = side.client("dynamodbstreams")
    store = namespaced(open_checkpoint_store(cfg.checkpoint, lambda: client), namespace)
    try:
        stored = store.load(arn)
    finally:
        store.close()
    now = time.time()
    shards = []
    problems = []
    for info in _shards(streams, arn):
        shard_id = str(info["ShardId"])
        checkpoint = stored.get(shard_id)
        row: dict[str, Any] = {
            "shard": shard_id,
            "parent": info.get("ParentShardId"),
            "closed": "EndingSequenceNumber" in (info.get("SequenceNumberRange") or {}),
            "checkpoint": checkpoint.sequence_number if checkpoint else None,
            "finished": bool(checkpoint and checkpoint.finished),
            "checkpoint_age_s": _age(now, checkpoint.updated_at if checkpoint else None),
        }
        if row["finished"]:
            row |= {"records_waiting": 0, "more_waiting": False, "behind_s": 0.0}
        elif checkpoint is None and not stored and cfg.start_position == "latest":
            row |= {"records_waiting": None, "more_waiting": False, "behind_s": None, "note": "not started"}
        elif checkpoint is not None and checkpoint.sequence_number is None:
            # the marker a "latest" first start leaves: reading starts at the shard's tip
            row |= {"records_waiting": 0, "more_waiting": False, "behind_s": 0.0}
        else:
            row |= _waiting(streams, arn, shard_id, checkpoint.sequence_number if checkpoint else None, now)
        if row["behind_s"] is not None and row["behind_s"] > max_lag:
            problems.append(
                f"shard {shard_id}: oldest unpublished record is {row['behind_s']:.0f} s old (over {max_lag:.0f} s)"
            )
        shards.append(row)
    return {
        "kind": "publish",
        "table": cfg.source_table,
        "stream": arn,
        "checkpoint_store": cfg.checkpoint,
        "shards": shards,
        "healthy": not problems,
        "problems": problems,
    }


def _shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        try:
            description = streams.describe_stream(**kwargs)["StreamDescription"]
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"stream {arn}: DescribeStream failed: {exc}") from exc
        shards.extend(description.get("Shards") or [])
        if not description.get("LastEvaluatedShardId"):
            return shards
        kwargs["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]


def _waiting(streams: Any, arn: str, shard_id: str, after: str | None, now: float) -> dict[str, Any]:
    """Records after the checkpoint: how many (up to a few pages) and how old the oldest is."""
    kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id}
    if after is None:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
    count, oldest, more = 0, None, False
    try:
        iterator = streams.get_shard_iterator(**kwargs).get("ShardIterator")
        for _ in range(MAX_READS_PER_SHARD):
            if not iterator:
                break
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records = page.get("Records") or []
            if records and oldest is None:
                created = records[0].get("dynamodb", {}).get("ApproximateCreationDateTime")
                oldest = created.timestamp() if isinstance(created, datetime) else None
            count += len(records)
            iterator = page.get("NextShardIterator")
        else:
            more = bool(iterator) and count > 0
    except (ClientError, BotoCoreError) as exc:
        raise SourceError(f"stream {arn} shard {shard_id}: cannot read after the checkpoint: {exc}") from exc
    return {"records_waiting": count, "more_waiting": more, "behind_s": _age(now, oldest) or 0.0}


def applier_status(cfg: config.ApplyConfig, max_lag: float, max_depth: int | None) -> dict[str, Any]:
    from bridge.plugin.manager import plugin_set
    from bridge.transport import TransportURL

    plugins = plugin_set()
    main = plugins.open(cfg.transport, "consume")
    dlq_url = TransportURL.parse(cfg.dead_letter) if cfg.dead_letter else main.dead_letter_url()
    queues: dict[str, dict[str, Any]] = {}
    for name, url in (("queue", main.url), ("retry", dlq_url), ("parked", plugins.sibling(dlq_url, "parked"))):
        transport = main if name == "queue" else plugins.open(url, "dlq")
        try:
            depth = transport.depth()
        finally:
            with contextlib.suppress(Exception):
                transport.close()
        queues[name] = {
            "url": url.redacted(),
            "depth": depth,
            **({} if depth is not None else {"note": f"the {url.scheme} transport cannot report a depth"}),
        }
    now = time.time()
    written = read_status_file(cfg.status_file) if cfg.status_file is not None else None
    last = (written or {}).get("last_applied")
    problems = []
    waiting = queues["queue"]["depth"]
    if max_depth is not None and waiting is not None and waiting > max_depth:
        problems.append(f"{waiting} messages wait in the queue (over {max_depth})")
    if waiting and (last is None or now - float(last["applied_at"]) > max_lag):
        since = "nothing applied yet" if last is None else f"nothing applied for {now - last['applied_at']:.0f} s"
        problems.append(f"{waiting} messages wait and {since} (over {max_lag:.0f} s)")
    dead = {name: queues[name]["depth"] for name in ("retry", "parked") if queues[name]["depth"]}
    if dead:
        problems.append(
            "dead letters wait: "
            + ", ".join(f"{n} on the {q} queue" for q, n in dead.items())
            + " (bridge dlq list --config FILE)"
        )
    return {
        "kind": "apply",
        "table": cfg.target_table,
        **queues,
        "last_applied": None if last is None else {**last, "age_s": _age(now, last.get("applied_at"))},
        "status_file": {
            "path": str(cfg.status_file) if cfg.status_file else None,
            "age_s": _age(now, (written or {}).get("updated_at")),
        },
        "healthy": not problems,
        "problems": problems,
    }


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


def render(report: dict[str, Any]) -> str:
    if "pipelines" in report:
        parts = []
        for one in report["pipelines"]:
            if "error" in one:
                parts.append(f"pipeline {one['pipeline']}: FAILED: {one['error']}")
            else:
                parts.append(f"pipeline {one['pipeline']}: " + render(one))
        parts.append("healthy" if report["healthy"] else f"BEHIND ({len(report['problems'])} problem(s))")
        return "\n".join(parts)

    def s(value: Any, unit: str = "") -> str:
        return "unknown" if value is None else f"{value}{unit}"

    lines = []
    if report["kind"] == "publish":
        lines.append(
            f"publisher of {report['table']} ({report['stream']}), checkpoints in {report['checkpoint_store']}"
        )
        for row in report["shards"]:
            waiting = s(row["records_waiting"]) + ("+" if row.get("more_waiting") else "")
            lines.append(
                f"  {row['shard']}: checkpoint {s(row['checkpoint'])}{' (finished)' if row['finished'] else ''},"
                f" saved {s(row['checkpoint_age_s'], ' s')} ago; {waiting} records waiting,"
                f" oldest {s(row['behind_s'], ' s')} old{' (' + row['note'] + ')' if row.get('note') else ''}"
            )
    else:
        lines.append(f"applier of {report['table']}")
        for name in ("queue", "retry", "parked"):
            q = report[name]
            lines.append(f"  {name}: {q['url']}: {s(q['depth'])} waiting" + (f" ({q['note']})" if "note" in q else ""))
        last = report["last_applied"]
        if last is None:
            lines.append("  last applied: none recorded (status_file)")
        else:
            lines.append(f"  last applied: {last['age_s']} s ago, from {last['origin']}, lag {last['lag_s']} s")
    lines.append("healthy" if report["healthy"] else "BEHIND: " + "; ".join(report["problems"]))
    return "\n".join(lines)
