"""Configuration: YAML file, then ``BRIDGE_*`` environment variables, then CLI flags.

One flat name per setting, the same everywhere: YAML key ``source_table``, env var
``BRIDGE_SOURCE_TABLE``, flag ``--source-table``. Validated with pydantic at start;
every problem is reported naming the key.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.errors import ConfigError

ENV_PREFIX = "BRIDGE_"
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"
_PROXY = r"^https?://[^\s]+$"


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Many tables in one process (docs/pipelines.md). Only in a file (a list of mappings has no sensible
    # env var or flag), and only at the top: load_pipelines() turns each entry into a config of its own.
    pipelines: list[dict[str, Any]] | None = Field(
        None,
        description="pipelines run by this one process: each a mapping of settings overriding the top-level ones",
        json_schema_extra={"yaml_only": True},
    )

    transport: str = Field(description="transport URL, e.g. amqp://guest:guest@host:5672//?queue=users")
    dead_letter: str | None = Field(None, description="dead-letter transport URL (default: <queue>.dlq beside it)")
    quarantine_dir: Path = Field(
        Path("bridge-quarantine"), description="local directory for failures the dead-letter queue refused"
    )
    until_idle: float | None = Field(None, ge=0, description="exit 0 once nothing arrived for this many seconds")
    max_paused: float | None = Field(
        None, gt=0, description="exit 9 after the line was paused on a systemic error this many seconds (default: wait)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_json: bool = Field(
        False, description="log one JSON object per line", json_schema_extra={"flag": "--log-json/--log-text"}
    )
    # Every AWS call of the source/target side (transports take their own from their URL).
    aws_connect_timeout: float = Field(5.0, gt=0, description="seconds to open a connection to an AWS endpoint")
    aws_read_timeout: float = Field(30.0, gt=0, description="seconds to wait for an AWS response")
    aws_max_attempts: int = Field(10, ge=1, le=100, description="attempts per AWS call (botocore adaptive retries)")
    # What an operator sees (docs/metrics.md).
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve /metrics, /healthz and /readyz on this port (0: any free port)"
    )
    metrics_host: str = Field("127.0.0.1", min_length=1, description="address the metrics port binds to")
    metrics: Literal["none", "emf"] = Field(
        "none", description="emf: also write the metrics as CloudWatch EMF lines to stdout"
    )
    metrics_interval: float = Field(60.0, gt=0, le=3600, description="seconds between two EMF line sets")
    # Attributes that never leave the source (docs/projection.md): the publisher drops them before signing;
    # bridge-apply and bridge verify need the same lists to keep them (exclude_mode keep) and compare alike.
    exclude_attributes: list[str] | None = Field(
        None, description="attributes never shipped (key attributes cannot be excluded)"
    )
    include_attributes: list[str] | None = Field(
        None, description="ship only these attributes (and the key attributes); the rest stay home"
    )

    @field_validator("pipelines")
    @classmethod
    def _only_through_the_loader(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("a file listing pipelines is read with load_pipelines() (this command takes one table)")
        return value

    @field_validator("exclude_attributes", "include_attributes", mode="before")
    @classmethod
    def _attribute_list(cls, value: Any) -> Any:
        # Env vars and flags give one string: "a,b".
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        return value

    @model_validator(mode="after")
    def _one_projection(self) -> Any:
        if self.exclude_attributes is not None and self.include_attributes is not None:
            raise ValueError("give exclude_attributes or include_attributes, not both")
        if self.include_attributes is not None and not self.include_attributes:
            raise ValueError("include_attributes names nothing; to ship only the keys name one of them")
        return self

    @field_validator("transport", "dead_letter")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"expected a URL like amqp://host/?queue=NAME, got {redact_userinfo(value)!r}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PublishConfig(_Common):
    source_table: str = Field(min_length=3, max_length=255, description="table whose stream is replicated")
    source_tables: list[str] | None = Field(
        None, description="tables (or patterns like orders-*) to publish, one pipeline each, expanded at start"
    )
    source_region: str = Field(description="region of the source table")
    source_endpoint: str | None = Field(None, description="endpoint URL override (emulators, VPC endpoints)")
    source_profile: str | None = Field(None, description="AWS profile for the source side")
    source_role_arn: str | None = Field(None, pattern=_ROLE_ARN, description="role to assume (STS) for the source")
    source_external_id: str | None = Field(
        None, min_length=2, max_length=1224, description="external id for assuming source_role_arn"
    )
    source_proxy: str | None = Field(None, pattern=_PROXY, description="HTTP(S) proxy for the source side's AWS calls")
    source_ssm_access_key_param: str | None = Field(None, description="SSM parameter holding the access key id")
    source_ssm_secret_key_param: str | None = Field(None, description="SSM parameter holding the secret key")
    source_ssm_region: str | None = Field(None, description="region of those SSM parameters (local side)")
    origin: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:-]+$", description="name of this replica in versions (default: source_region)"
    )
    timestamp_attribute: str | None = Field(None, description="application attribute holding the write time")
    signing_key: Path = Field(description="Ed25519 private key (bridge keygen)")
    checkpoint: str = Field(
        "bridge-checkpoints.sqlite", description="SQLite path, or dynamodb://TABLE (in the source account)"
    )
    start_position: Literal["trim-horizon", "latest"] = Field(
        "trim-horizon", description="where a shard without a checkpoint starts"
    )
    on_trimmed: Literal["fail", "trim-horizon"] = Field(
        "fail", description="when records were trimmed before being read: stop, or go on from the oldest"
    )
    compression: Literal["zstd", "zlib", "none"] = Field("zstd", description="envelope compression")
    batch_max_changes: int = Field(500, ge=1, le=10_000, description="changes per envelope at most")
    batch_max_bytes: int = Field(1024 * 1024, ge=1024, description="raw change bytes per envelope at most")
    batch_max_wait: float = Field(0.1, ge=0, le=60, description="seconds a change may wait for its batch to fill")
    ttl_deletes: Literal["replicate", "ignore"] = Field(
        "replicate", description="deletes made by DynamoDB TTL: ship them, or leave them to each replica's own TTL"
    )
    active_active: bool = Field(
        False,
        description="this table is also written by bridge-apply: never ship its writes",
        json_schema_extra={"flag": "--active-active/--one-way"},
    )
    attribute_prefix: str = Field(
        "_bridge",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="active-active: as bridge-apply's setting on this table",
    )
    tombstone_table: str | None = Field(
        None, description="active-active: bridge-apply's tombstone table for this table"
    )
    # Bootstrap: copy the items the table already holds (docs/bootstrap.md).
    bootstrap: bool = Field(False, description="copy existing items (parallel scan), then go on with the stream")
    bootstrap_force: bool = Field(
        False,
        description="copy again even if an earlier bootstrap completed",
        json_schema_extra={"flag": "--bootstrap-force"},
    )
    bootstrap_segments: int = Field(8, ge=1, le=1_000_000, description="parallel scan segments (resume units)")
    bootstrap_rcu: float | None = Field(None, gt=0, description="read capacity units per second for the scan")
    bootstrap_page_items: int | None = Field(None, ge=1, le=100_000, description="items per scan page")

    @property
    def origin_id(self) -> str:
        return self.origin or self.source_region

    @field_validator("source_tables", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if value is not None:
            raise ValueError("a config with source_tables is read with load_pipelines() (this command takes one table)")
        return value

    @model_validator(mode="after")
    def _projection_one_way(self) -> PublishConfig:
        if self.active_active and (self.exclude_attributes or self.include_attributes is not None):
            which = "exclude_attributes" if self.exclude_attributes else "include_attributes"
            raise ValueError(
                f"{which} cannot be used with active_active: each replica would keep attributes the other never"
                " receives, so the replicas could not converge"
            )
        return self


class ApplyConfig(_Common):
    target_table: str = Field(min_length=3, max_length=255, description="table the changes are applied to")
    target_region: str = Field(description="region of the target table")
    target_endpoint: str | None = Field(None, description="endpoint URL override (emulators, VPC endpoints)")
    target_profile: str | None = Field(None, description="AWS profile for the target side")
    target_role_arn: str | None = Field(None, pattern=_ROLE_ARN, description="role to assume (STS) for the target")
    target_external_id: str | None = Field(
        None, min_length=2, max_length=1224, description="external id for assuming target_role_arn"
    )
    target_proxy: str | None = Field(None, pattern=_PROXY, description="HTTP(S) proxy for the target side's AWS calls")
    target_ssm_access_key_param: str | None = Field(None, description="SSM parameter holding the access key id")
    target_ssm_secret_key_param: str | None = Field(None, description="SSM parameter holding the secret key")
    target_ssm_region: str | None = Field(None, description="region of those SSM parameters (local side)")
    trusted_keys: Path = Field(description="public key file or directory of *.pub keys")
    accept_tables: list[str] | None = Field(
        None, description="signed source tables whose envelopes are applied (default: target_table; * for any)"
    )
    accept_origins: list[str] = Field(["*"], description="signed origins whose envelopes are applied (* for any)")
    attribute_prefix: str = Field(
        "_bridge", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="prefix of bridge-owned attributes"
    )
    tombstone_table: str | None = Field(None, description="companion table for delete tombstones")
    tombstone_ttl_days: float = Field(14, gt=1, description="must outlive stream retention + transport delay")
    create: bool = Field(True, description="create companion resources (tombstone table) if missing")
    origin: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="this replica's origin name, to count echo traffic (default: target_region)",
    )
    workers: int = Field(8, ge=1, le=256, description="parallel writers (changes to one key stay in order)")
    # One Python process holds one core; last writer wins makes the order across consumers irrelevant
    # (docs/consistency.md), so more processes on one queue is safe. Default 1, not "cores": see
    # docs/design.md "Processes" (one summary line, one status file, pipelines: stay one process).
    processes: int = Field(
        1,
        ge=0,
        le=256,
        description="consumer processes on the queue, one supervised group (0: one per core; 1: this process)",
    )
    # Not the broker's QoS (the transport URL's `prefetch`): how many bridge-apply takes per batch.
    batch_messages: int = Field(
        16,
        ge=1,
        le=1000,
        description="messages taken per receive and applied as one batch (--prefetch: old name)",
        json_schema_extra={"aliases": ["--prefetch"]},
    )
    # Dead-letter retries (docs/dead-letters.md): in place first, then from the retry queue.
    transient_retries: int = Field(4, ge=0, le=20, description="in-place retries of a throttled/timed-out write")
    retry_max_attempts: int = Field(20, ge=1, le=1000, description="attempts before a failing change is parked")
    retry_max_age: float = Field(86_400, gt=0, description="seconds after the first failure a change is parked")
    retry_initial_delay: float = Field(10, gt=0, description="seconds before the first re-attempt (then doubling)")
    retry_max_delay: float = Field(900, gt=0, description="longest wait between two re-attempts, seconds")
    exclude_mode: Literal["drop", "keep"] = Field(
        "drop",
        description="drop: replicated items lack the excluded attributes; keep: the target's own values stay",
    )
    status_file: Path | None = Field(
        Path("bridge-apply-status.json"),
        description="where the last applied change and its lag are kept for `bridge status` (null: nowhere)",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        # `prefetch` meant two things (this and the broker's QoS in the URL); the old key still works.
        if isinstance(data, dict) and "prefetch" in data:
            data = dict(data)
            if "batch_messages" in data:
                raise ValueError("prefetch is the old name of batch_messages; give only batch_messages")
            data["batch_messages"] = data.pop("prefetch")
        return data

    @field_validator("accept_tables", "accept_origins", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # Env vars and flags give one string: "a,b".
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if isinstance(value, list) and not value:
            raise ValueError("names nothing; give table or origin names, or * for any")
        return value

    @property
    def accepted_tables(self) -> list[str]:
        return self.accept_tables if self.accept_tables is not None else [self.target_table]

    @model_validator(mode="after")
    def _retry_delays(self) -> ApplyConfig:
        if self.retry_max_delay < self.retry_initial_delay:
            raise ValueError("retry_max_delay must be at least retry_initial_delay")
        return self

    @model_validator(mode="after")
    def _keep_needs_a_list(self) -> ApplyConfig:
        if self.exclude_mode == "keep" and self.exclude_attributes is None and self.include_attributes is None:
            raise ValueError("exclude_mode keep needs exclude_attributes or include_attributes: the attributes to keep")
        return self

    @model_validator(mode="after")
    def _prefix(self) -> ApplyConfig:
        if self.tombstone_table == self.target_table:
            raise ValueError("tombstone_table must differ from target_table")
        return self


M = TypeVar("M", bound=BaseModel)
OLD_NAMES = {"prefetch": "batch_messages"}
_USERINFO = re.compile(r"([^/@:\s]*):[^@/\s]*@")


def redact_userinfo(text: str) -> str:
    """``user:password@`` anywhere in ``text`` -> ``user:***@``: a malformed URL may still hold a secret."""
    return _USERINFO.sub(r"\1:***@", text)


_ALL_SETTINGS = frozenset(PublishConfig.model_fields) | frozenset(ApplyConfig.model_fields)


def yaml_only(field: Any) -> bool:
    """A setting only a file can hold (``pipelines``): no env var, no flag."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get("yaml_only"))


def _gather(
    model: type[BaseModel], path: str | Path | None, overrides: dict[str, Any], environ: dict[str, str] | None
) -> dict[str, Any]:
    """file < env < overrides, not validated yet."""
    data: dict[str, Any] = {}
    if path is not None:
        data.update(read_yaml(Path(path)))
    env = os.environ if environ is None else environ
    for name, field in model.model_fields.items():
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and not yaml_only(field):
            data[name] = value
    for old, new in OLD_NAMES.items():  # the model's own validator tells old from new and refuses both
        value = env.get(ENV_PREFIX + old.upper())
        if new in model.model_fields and value is not None:
            data[old] = value
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def load(
    model: type[M], path: str | Path | None, overrides: dict[str, Any], environ: dict[str, str] | None = None
) -> M:
    """Build ``model`` from file < env < overrides (CLI flags; ``None`` means not given)."""
    data = _gather(model, path, overrides, environ)
    if data.get("pipelines") is not None or data.get("source_tables") is not None:
        which = "pipelines" if data.get("pipelines") is not None else "source_tables"
        raise ConfigError(f"{path or 'the configuration'} lists {which}: this command takes a config of one table")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
GLOB = re.compile(r"[*?\[]")


class Pipeline(BaseModel, Generic[M]):
    """One line of a deployment: a name and its whole config (top-level defaults, then its overrides).

    ``source_table`` may still be a pattern (``orders-*``): :func:`bridge.wiring.expand_pipelines`
    lists the source tables at start and makes one pipeline per match.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    cfg: M
    listed: bool  # from a pipelines:/source_tables list (checkpoints namespaced), not a one-table config

    @property
    def pattern(self) -> bool:
        table = getattr(self.cfg, "source_table", None)
        return bool(table and GLOB.search(table))


def load_pipelines(
    model: type[M],
    path: str | Path | None,
    overrides: dict[str, Any],
    environ: dict[str, str] | None = None,
    select: tuple[str, ...] = (),
) -> list[Pipeline[M]]:
    """Every pipeline a config names (a one-table config is one pipeline, named after its table).

    The top-level settings (file < env < flags) are the defaults; each ``pipelines:`` entry overrides
    them, ``name`` defaulting to its table. ``source_tables`` adds one pipeline per pattern (expanded
    at start). ``{table}`` in ``transport``/``dead_letter`` becomes the pipeline's table, and one
    process refuses two pipelines on the same transport. ``select``: run only these (``--pipeline``).
    """
    data = _gather(model, path, overrides, environ)
    entries = data.pop("pipelines", None)
    patterns = data.pop("source_tables", None)
    where = f" in {path}" if path else ""
    table_key = "source_table" if "source_table" in model.model_fields else "target_table"
    if entries is None and patterns is None:
        cfg = _validate(model, data, path, "")
        found = [Pipeline[M](name=str(getattr(cfg, table_key)), cfg=cfg, listed=False)]
    else:
        if entries is not None and not isinstance(entries, list):
            raise ConfigError(f"invalid configuration{where}: pipelines: expected a list of mappings")
        raw: list[dict[str, Any]] = []
        for i, entry in enumerate(entries or []):
            if not isinstance(entry, dict):
                raise ConfigError(f"invalid configuration{where}: pipelines[{i}]: expected a mapping of settings")
            raw.append({str(k).replace("-", "_"): v for k, v in entry.items()})
        if isinstance(patterns, str):
            patterns = [v for v in patterns.replace(",", " ").split() if v]
        raw += [{"source_table": pattern} for pattern in patterns or []]
        defaults = {k: v for k, v in data.items() if k != table_key}
        found = []
        for i, entry in enumerate(raw):
            merged = {**defaults, **entry}
            name = merged.pop("name", None) or merged.get(table_key)
            label = f"pipelines[{i}]" + (f" ({name})" if name else "")
            if "pipelines" in merged or "source_tables" in merged:
                raise ConfigError(f"invalid configuration{where}: {label}: pipelines cannot nest")
            if not name or (not _PIPELINE_NAME.match(str(name)) and not GLOB.search(str(name))):
                raise ConfigError(
                    f"invalid configuration{where}: {label}: name must be 1-100 characters of A-Z a-z 0-9 . _ -"
                )
            table = merged.get(table_key)
            for key in ("transport", "dead_letter"):
                if isinstance(merged.get(key), str) and table and not GLOB.search(str(table)):
                    merged[key] = merged[key].replace("{table}", str(table))
            cfg = _validate(model, merged, path, label + ": ")
            status = getattr(cfg, "status_file", None)
            if status is not None and "status_file" not in entry:
                # One file per pipeline, so `bridge status` tells them apart: bridge-apply-status.NAME.json.
                cfg = cfg.model_copy(update={"status_file": status.with_name(f"{status.stem}.{name}{status.suffix}")})
            found.append(Pipeline[M](name=str(name), cfg=cfg, listed=True))
        if not found:
            raise ConfigError(f"invalid configuration{where}: pipelines: lists no pipeline")
    names = [p.name for p in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"invalid configuration{where}: pipeline name {', '.join(twice)} used twice")
    if select:
        unknown = [n for n in select if n not in names]
        if unknown:
            raise ConfigError(
                f"--pipeline {', '.join(unknown)}: no such pipeline{where} (pipelines: {', '.join(names)})"
            )
        found = [p for p in found if p.name in select]
    refuse_shared_transports(found)
    return found


def refuse_shared_transports(pipelines: list[Pipeline[Any]]) -> None:
    """Two pipelines of one process on one queue would take each other's messages (or mix tables)."""
    seen: dict[str, str] = {}
    for p in pipelines:
        if p.pattern:
            continue  # its URL is known once the pattern is expanded
        url = p.cfg.transport
        if url in seen:
            raise ConfigError(
                f"pipelines {seen[url]} and {p.name} use the same transport {redact_userinfo(url)}; give each its"
                " own queue or stream (e.g. ?queue=repl-{table})"
            )
        seen[url] = p.name


def _validate(model: type[M], data: dict[str, Any], path: str | Path | None, label: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        text = _describe(exc, path)
        if label:
            text = text.replace(": ", f": {label}", 1)
        raise ConfigError(text) from exc


def kind_of(path: Path) -> Literal["publish", "apply"]:
    """Which daemon a config file is for, by its table key; a misspelt one is named with a suggestion."""
    data = read_yaml(path)
    entries = data.get("pipelines")
    keys = set(data).union(*(e for e in (entries if isinstance(entries, list) else []) if isinstance(e, dict)))
    if "source_table" in keys or "source_tables" in keys:
        return "publish"
    if "target_table" in keys:
        return "apply"
    hints = [f"{key}: unknown setting{_did_you_mean(key)}" for key in data if key not in _ALL_SETTINGS]
    problem = "; ".join(hints) if hints else "neither source_table (publish) nor target_table (apply) is set"
    raise ConfigError(f"{path}: cannot tell publish from apply config: {problem}")


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_ALL_SETTINGS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _describe(exc: ValidationError, path: str | Path | None) -> str:
    where = f" in {path}" if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting" + _did_you_mean(key)
        elif err["type"] == "missing":
            msg = f"required (set it in the file, as {ENV_PREFIX}{key.upper()}, or as --{key.replace('_', '-')})"
        problems.append(f"{key}: {msg}")
    return f"invalid configuration{where}: " + "; ".join(problems)
