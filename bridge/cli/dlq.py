"""``bridge dlq``: list, show, replay and purge dead-lettered failures.

Every command reads the retry queue (``--dlq``, default ``<queue>.dlq``) and the parked
queue beside it (``<queue>.dlq.parked``). Reading takes nothing away: each delivery is
held unacked while the command runs and given back to the broker when it ends (even if
it is killed). Only ``replay`` (for what it applied) and ``purge`` remove records.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from bridge import config
from bridge.cli.common import handled, log_level_option, setup_logging
from bridge.deadletter.records import (
    LOCAL_SUFFIX,
    FailureRecord,
    Kind,
    Parker,
    State,
    wrap_foreign,
)
from bridge.errors import ApplyError, ConfigError, DecodeError
from bridge.transport import Delivery, TransportURL
from bridge.transport.reliable import Backoff, ReliableTransport

F = TypeVar("F", bound=Callable[..., Any])
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# RabbitMQ stops delivering to a consumer at `prefetch` unacked messages; reading a whole
# queue without acking needs that raised (an AMQP prefetch count is 16 bits).
_MAX_AMQP_PREFETCH = 65_535
DEFAULT_QUARANTINE_DIR = config.ApplyConfig.model_fields["quarantine_dir"].default


def parse_age(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise click.BadParameter(f"{text!r} is not an age like 90s, 15m, 2h, 3d or 1w")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Age(click.ParamType):  # type: ignore[type-arg]
    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        return value if isinstance(value, float) else parse_age(str(value))


@dataclass(frozen=True)
class Filters:
    states: tuple[str, ...] = ()
    error: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    table: str | None = None
    kinds: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    def match(self, record: FailureRecord, now: float) -> bool:
        age = now - record.first_failed_at
        error = (self.error or "").lower()
        return all(
            (
                not self.states or record.state.value in self.states,
                not self.kinds or record.kind.value in self.kinds,
                not self.ids or record.id in self.ids,
                not error or error == record.error.lower() or error in record.message.lower(),
                self.older_than is None or age >= self.older_than,
                self.newer_than is None or age <= self.newer_than,
                self.table is None or record.table == self.table,
            )
        )

    def queues(self) -> tuple[bool, bool]:
        """Which of (retry queue, parked queue) can hold a matching record."""
        if not self.states:
            return True, True
        return "retrying" in self.states, bool({"parked", "quarantined"} & set(self.states))


@dataclass
class Held:
    queue: str  # "retry", "parked", or "local": a file in the quarantine directory
    transport: ReliableTransport | None
    delivery: Delivery | None
    record: FailureRecord
    path: Path | None = None  # "local": the file

    def describe(self, now: float) -> dict[str, Any]:
        where = {"file": str(self.path)} if self.path is not None else {}
        return {
            **self.record.describe(),
            "queue": self.queue,
            **where,
            "age_s": round(now - self.record.first_failed_at, 3),
        }

    def remove(self) -> None:
        """Done with it: ack the delivery, or delete the local file."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        elif self.transport is not None and self.delivery is not None:
            self.transport.ack(self.delivery)


def read_local(directory: Path | None) -> list[Held]:
    """Failure records no queue could hold (too large for it, or refused), kept as files by ``Parker``."""
    if directory is None or not directory.is_dir():
        return []
    held = []
    for path in sorted(directory.glob(f"*{LOCAL_SUFFIX}")):
        try:
            body = path.read_bytes()
        except OSError as exc:
            click.echo(f"cannot read {path}: {exc.strerror or exc}", err=True)
            continue
        try:
            record = FailureRecord.decode(body)
        except DecodeError as exc:
            record = wrap_foreign(body, str(exc))
        held.append(Held("local", None, None, record, path))
    return held


class Browser:
    """Reads dead-letter queues whole and holds every delivery until :meth:`close`."""

    def __init__(
        self, dlq: TransportURL, limit: int, retry: bool = True, parked: bool = True, wait: float = 2.0
    ) -> None:
        from bridge.plugin.manager import plugin_set

        plugins = plugin_set()
        self.limit = limit
        self.wait = wait
        self.queues: list[tuple[str, ReliableTransport]] = []
        for name, wanted, url in (
            ("retry", retry, dlq),
            ("parked", parked, plugins.sibling(dlq, "parked") if parked else dlq),
        ):
            if wanted:
                transport = plugins.open(_holding_all(url, limit), "dlq")
                self.queues.append((name, ReliableTransport(transport, Backoff(0.2, 2.0, max_attempts=3))))
        self.truncated = False

    def read(self) -> list[Held]:
        held: list[Held] = []
        for name, transport in self.queues:
            count, wait = 0, self.wait  # a broker far away may take a moment to deliver the first one
            while count < self.limit:
                got = transport.receive(min(500, self.limit - count), timeout=wait)
                if not got:
                    break
                wait = min(self.wait, 0.5)
                count += len(got)
                for delivery in got:
                    try:
                        record = FailureRecord.decode(delivery.body)
                    except DecodeError as exc:
                        record = wrap_foreign(delivery.body, str(exc))
                    held.append(Held(name, transport, delivery, record))
            self.truncated = self.truncated or count >= self.limit
        return held

    def close(self) -> None:
        for _, transport in self.queues:
            transport.close()  # unacked deliveries go back to their queue


def _holding_all(url: TransportURL, limit: int) -> TransportURL:
    from bridge.plugin.manager import plugin_set

    return plugin_set().transport_class(url)(url).holding(limit)


@contextmanager
def browse(
    dlq: TransportURL, filters: Filters, limit: int, wait: float, local: Path | None = None
) -> Iterator[tuple[Browser, list[Held]]]:
    retry, parked = filters.queues()
    browser = Browser(dlq, limit, retry, parked, wait)
    try:
        held = browser.read() + read_local(local)
        now = time.time()
        yield browser, [h for h in held if filters.match(h.record, now)]
    finally:
        browser.close()
    if browser.truncated:
        click.echo(f"note: read the first {limit} records of a queue; more may exist (raise --limit)", err=True)


def settings_of(config_file: str, pipeline: str | None = None) -> dict[str, Any]:
    """The config file's settings; of one pipeline (``--pipeline``) when the file lists ``pipelines:``."""
    data = config.read_yaml(Path(config_file))
    if data.get("pipelines") is None and data.get("source_tables") is None:
        return data
    model: type[config.PublishConfig] | type[config.ApplyConfig] = (
        config.PublishConfig if config.kind_of(Path(config_file)) == "publish" else config.ApplyConfig
    )
    found = config.load_pipelines(model, config_file, {}, select=(pipeline,) if pipeline else ())
    if len(found) != 1 or found[0].pattern:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"{config_file} lists pipelines ({names}): say which with --pipeline NAME (a table name)")
    return found[0].cfg.model_dump(exclude_none=True)


def dlq_url(dlq: str | None, config_file: str | None, pipeline: str | None = None) -> TransportURL:
    """--dlq, else the config file's dead_letter, else the default beside its transport."""
    if dlq:
        return TransportURL.parse(dlq)
    if not config_file:
        raise ConfigError("say which dead-letter queue: --dlq URL or --config FILE (an apply or publish config)")
    data = settings_of(config_file, pipeline)
    if data.get("dead_letter"):
        return TransportURL.parse(str(data["dead_letter"]))
    if not data.get("transport"):
        raise ConfigError(f"{config_file} has neither dead_letter nor transport")
    from bridge.plugin.manager import open_transport

    return open_transport(str(data["transport"]), "dlq").dead_letter_url()


def quarantine_dir(given: str | None, config_file: str | None, pipeline: str | None = None) -> Path | None:
    """--quarantine-dir, else the config file's quarantine_dir (or its default), where it exists."""
    if given:
        return Path(given)
    if config_file:
        return Path(str(settings_of(config_file, pipeline).get("quarantine_dir") or DEFAULT_QUARANTINE_DIR))
    return None


def common(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--quarantine-dir",
                "local_dir",
                type=click.Path(file_okay=False),
                help="also the failure records kept as files there, which no queue could hold (default: from --config)",
            ),
            click.option(
                "--dlq",
                "dlq",
                metavar="URL",
                help="retry queue URL (default: from --config); the parked queue beside it (NAME.parked) is read too",
            ),
            click.option("--config", "config_file", type=click.Path(dir_okay=False), help="apply config (YAML)"),
            click.option("--pipeline", help="which pipeline, when the config lists pipelines: (docs/pipelines.md)"),
            click.option(
                "--state",
                "states",
                multiple=True,
                type=click.Choice([s.value for s in State]),
                help="only records in this state (repeatable)",
            ),
            click.option("--error", help="only records whose error class is this, or whose message contains it"),
            click.option("--older-than", type=Age(), help="only records that first failed longer ago than AGE (2h)"),
            click.option("--newer-than", type=Age(), help="only records that first failed within AGE"),
            click.option("--table", help="only records from this source table"),
            click.option(
                "--kind",
                "kinds",
                multiple=True,
                type=click.Choice([k.value for k in Kind]),
                help="only records of this kind (repeatable)",
            ),
            click.option("--id", "ids", multiple=True, help="only the record with this id (repeatable)"),
            click.option(
                "--limit",
                type=click.IntRange(1, 1_000_000),
                default=10_000,
                show_default=True,
                help="records read per queue",
            ),
            click.option(
                "--wait",
                type=click.FloatRange(0.01, 60),
                default=2.0,
                show_default=True,
                help="seconds to wait for a queue's first record (an empty queue costs this much)",
            ),
            log_level_option,
        ]
    ):
        fn = option(fn)
    return fn


def _filters(kw: dict[str, Any]) -> Filters:
    return Filters(
        tuple(kw.pop("states")),
        kw.pop("error"),
        kw.pop("older_than"),
        kw.pop("newer_than"),
        kw.pop("table"),
        tuple(kw.pop("kinds")),
        tuple(kw.pop("ids")),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dlq() -> None:
    """Dead-lettered failures: list, show, replay, purge (docs/dead-letters.md)."""


@dlq.command("list")
@common
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per failure record")
@handled
def list_(
    dlq: str | None, config_file: str | None, limit: int, wait: float, log_level: str, as_json: bool, **kw: Any
) -> None:
    """List failure records (nothing is removed)."""
    setup_logging(log_level.upper())
    filters = _filters(kw)
    now = time.time()
    pipeline = kw.pop("pipeline")
    local = quarantine_dir(kw.pop("local_dir"), config_file, pipeline)
    with browse(dlq_url(dlq, config_file, pipeline), filters, limit, wait, local) as (_, held):
        rows = [h.describe(now) for h in held]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no failure records")
        return
    table = Table("id", "queue", "state", "kind", "error", "attempts", "first failed", "table", "changes", "message")
    for row in rows:
        table.add_row(
            row["id"],
            row["queue"],
            row["state"],
            row["kind"],
            row["error"],
            str(row["attempts"]),
            f"{_when(row['first_failed_at'])} ({_ago(row['age_s'])} ago)",
            row["table"] or "",
            str(len(row["changes"]) or ""),
            row["message"][:120],
        )
    Console(width=200).print(table)
    by_state = Counter(r["state"] for r in rows)
    click.echo(", ".join(f"{n} {state}" for state, n in sorted(by_state.items())))


@dlq.command()
@click.argument("record_id")
@common
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--trusted-keys", type=click.Path(exists=True), help="verify and decode the payload with these keys")
@click.option("--payload-out", type=click.Path(dir_okay=False), help="write the raw payload bytes to this file")
@handled
def show(
    record_id: str,
    dlq: str | None,
    config_file: str | None,
    limit: int,
    wait: float,
    log_level: str,
    as_json: bool,
    trusted_keys: str | None,
    payload_out: str | None,
    **kw: Any,
) -> None:
    """Show one failure record; with --trusted-keys, the changes it holds (nothing is removed)."""
    setup_logging(log_level.upper())
    filters = _filters(kw)
    now = time.time()
    pipeline = kw.pop("pipeline")
    local = quarantine_dir(kw.pop("local_dir"), config_file, pipeline)
    with browse(dlq_url(dlq, config_file, pipeline), filters, limit, wait, local) as (_, held):
        found = [h for h in held if h.record.id == record_id]
    if not found:
        raise ConfigError(f"no failure record with id {record_id!r}")
    h = max(found, key=lambda x: (x.record.attempts, x.record.last_failed_at))  # copies after a crash
    doc = h.describe(now)
    doc["copies"] = len(found)
    doc["content"] = _content(h.record, trusted_keys)
    if payload_out:
        Path(payload_out).write_bytes(h.record.payload)
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in doc.items():
        if key != "content":
            click.echo(f"{key:>16}: {_when(value) if key.endswith('_at') and value else value}")
    click.echo(f"{'content':>16}:")
    for line in orjson.dumps(doc["content"], option=orjson.OPT_INDENT_2).decode().splitlines():
        click.echo(f"    {line}")


def _content(record: FailureRecord, trusted_keys: str | None) -> dict[str, Any]:
    """What the payload holds, verified when keys are given; never trusted otherwise."""
    from bridge.envelope import TrustStore, decode, peek

    if record.kind in (Kind.CHANGE, Kind.RECORD):
        try:
            return {"unsigned": True, "json": orjson.loads(record.payload)}
        except orjson.JSONDecodeError:
            return {"unsigned": True, "error": "payload is not JSON"}
    try:
        header = peek(record.payload)
    except DecodeError as exc:
        return {"envelope": None, "error": str(exc)}
    info: dict[str, Any] = {
        "key_id": header.key_id,
        "compression": header.compression.value,
        "bytes": len(record.payload),
    }
    if not trusted_keys:
        info["verified"] = False
        return info
    try:
        batch = decode(record.payload, TrustStore.load(trusted_keys))
    except DecodeError as exc:
        return {**info, "verified": False, "error": f"{type(exc).__name__}: {exc}"}
    indices = record.changes or tuple(range(len(batch.changes)))
    return {
        **info,
        "verified": True,
        "envelope_id": batch.envelope_id,
        "origin": batch.origin,
        "table": batch.table,
        "changes_in_envelope": len(batch.changes),
        "changes": [{"index": i, **batch.changes[i].to_wire()} for i in indices if i < len(batch.changes)],
    }


@dlq.command()
@common
@click.option("--trusted-keys", type=click.Path(), help="public key file or directory (default: from --config)")
@click.option("--target-table", help="table to apply to (default: from --config)")
@click.option("--target-region")
@click.option("--target-endpoint")
@click.option("--target-profile")
@click.option("--attribute-prefix")
@click.option("--tombstone-table")
@click.option("--workers", type=int)
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="also apply single unsigned changes (kind change): only if you trust everyone who can write"
    " to the dead-letter queue",
)
@click.option("--dry-run", is_flag=True, help="say what would be replayed; change nothing")
@handled
def replay(
    dlq: str | None,
    config_file: str | None,
    limit: int,
    wait: float,
    log_level: str,
    allow_unsigned: bool,
    dry_run: bool,
    **kw: Any,
) -> None:
    """Apply failure records again through the normal apply path (last writer wins).

    Envelopes are verified again with the trusted keys, so a quarantined envelope
    applies once the key that signed it is trusted. Records that apply are removed;
    those that still fail stay, with the new error (transient failures go back to the
    automatic retry loop with a fresh budget).
    """
    setup_logging(log_level.upper())
    filters = _filters(kw)
    pipeline = kw.pop("pipeline")
    local = quarantine_dir(kw.pop("local_dir"), config_file, pipeline)
    overrides = {k: v for k, v in kw.items() if v is not None}
    url = dlq_url(dlq, config_file, pipeline)
    if not config_file:
        overrides.setdefault("transport", url.raw)  # not used: the schema wants one
    if config_file and pipeline:
        cfg = config.load_pipelines(config.ApplyConfig, config_file, overrides, select=(pipeline,))[0].cfg
    else:
        cfg = config.load(config.ApplyConfig, config_file, overrides)
    with browse(url, filters, limit, wait, local) as (_, held):
        _replay(cfg, url, held, allow_unsigned, dry_run)


def _replay(cfg: config.ApplyConfig, url: TransportURL, held: list[Held], allow_unsigned: bool, dry_run: bool) -> None:
    from bridge.apply.loop import ApplyStats
    from bridge.apply.retry import reattempt
    from bridge.change import Change
    from bridge.envelope import Scope, TrustStore
    from bridge.plugin.manager import open_transport
    from bridge.wiring import build_change_applier, retry_policy

    skipped = [h for h in held if h.record.kind is Kind.RECORD or (h.record.kind is Kind.CHANGE and not allow_unsigned)]
    todo = [h for h in held if h not in skipped]
    for h in skipped:
        why = (
            "unsigned (use --allow-unsigned)" if h.record.kind is Kind.CHANGE else "a stream record: fix the publisher"
        )
        click.echo(f"skipped {h.record.id}: {why}", err=True)
    if dry_run or not todo:
        planned = {"records": len(todo), "skipped": len(skipped), "dry_run": dry_run}
        click.echo(orjson.dumps({"replay": planned}).decode())
        return
    trust = TrustStore.load(cfg.trusted_keys, accept=Scope.of(cfg.accepted_tables, cfg.accept_origins))
    policy = retry_policy(cfg)
    stats = ApplyStats()
    applier = build_change_applier(cfg, stats)  # bridge-apply's target: its local origin included
    parker = Parker(
        ReliableTransport(open_transport(url, "dlq"), Backoff(0.2, 2.0, max_attempts=5)),
        cfg.quarantine_dir,
        opener=open_transport,
    )
    still: Counter[str] = Counter()
    done = 0
    try:
        for h in todo:
            record = h.record
            if record.kind is Kind.CHANGE:
                failures = applier.apply([(Change.from_wire(orjson.loads(record.payload)), 0)])
                left = [record.again(f.error, State.PARKED) for f in failures]
                stats.recovered += 1 - len(failures)
            else:
                result = reattempt(record, trust, applier.apply, policy, fresh=True)
                left = result.records
                stats.recovered += result.recovered
            if h.path is not None and left:
                _keep_beside(h.path, left)  # no queue could hold it before either
            else:
                for queue, group in parker.group(left):
                    parker.put(queue, group)  # raises before the old copy is acked: nothing lost
                h.remove()
            if left:
                still.update(r.state.value for r in left)
            else:
                done += 1
    finally:
        applier.shutdown()
        parker.close()
    summary: dict[str, Any] = {
        "records": len(todo),
        "resolved": done,
        "still_failing": dict(still),
        "skipped": len(skipped),
        "changes_applied": stats.applied,
        "already_there": stats.duplicates + stats.stale,
        "echo_received": applier.target.echoes,
    }
    click.echo(orjson.dumps({"replay": summary}).decode())
    if still:
        states = ", ".join(f"{n} {state}" for state, n in still.items())
        raise ApplyError(f"{sum(still.values())} record(s) still failing ({states}); see `bridge dlq list`")


@dlq.command()
@common
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@handled
def purge(
    dlq: str | None, config_file: str | None, limit: int, wait: float, log_level: str, yes: bool, **kw: Any
) -> None:
    """Delete failure records for good (asks first, unless --yes)."""
    setup_logging(log_level.upper())
    filters = _filters(kw)
    pipeline = kw.pop("pipeline")
    local = quarantine_dir(kw.pop("local_dir"), config_file, pipeline)
    with browse(dlq_url(dlq, config_file, pipeline), filters, limit, wait, local) as (_, held):
        if not held:
            click.echo("no matching failure records; nothing purged")
            return
        by_state = Counter(h.record.state.value for h in held)
        what = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        if not yes and not click.confirm(f"Purge {len(held)} failure record(s) ({what})? This cannot be undone"):
            click.echo("nothing purged")
            sys.exit(1)
        for h in held:
            h.remove()
    click.echo(f"purged {len(held)} failure record(s) ({what})")


def _keep_beside(path: Path, records: list[FailureRecord]) -> None:
    """A local record that still fails is rewritten where it was (atomically), with its new error."""
    paths = []
    for record in records:
        target = path.with_name(f"{record.id}{LOCAL_SUFFIX}")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(record.encode())
        os.replace(tmp, target)
        paths.append(target)
    if path not in paths:
        path.unlink(missing_ok=True)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
