"""boto3 clients for one side (source, target, transport), built one way everywhere.

A side's credentials come from exactly one base source, optionally followed by a role:

1. keys read from two SSM parameters (``ssm_access_key_param`` + ``ssm_secret_key_param``), read once
   at start with the machine's *own* credentials in ``ssm_region`` (the local region): how Seed B
   keeps the other partition's IAM keys;
2. keys from two named environment variables (``access_key_env`` + ``secret_key_env``), so each side
   can hold different static keys in one process environment;
3. a named ``profile``;
4. otherwise boto3's default chain (env, profile, SSO, container/instance role).

With ``role_arn`` set, that role is then assumed through STS (with ``external_id`` if given) using
the base credentials, and re-assumed shortly before the temporary credentials expire
(botocore's ``AssumeRoleCredentialFetcher`` + ``DeferredRefreshableCredentials``, the machinery
behind ``role_arn`` in ``~/.aws/config``).

Every client uses botocore's adaptive retry mode (throttling and 5xx are retried with client-side
rate limiting), explicit connect/read timeouts (the internet hop between partitions can otherwise
hang a socket for minutes), TLS certificate verification, and ``proxy`` for both HTTP and HTTPS
endpoints (an HTTPS endpoint is reached through the proxy with CONNECT, so TLS stays end to end).
The SSM client that reads keys is local: it never uses the side's proxy, endpoint or role.
STS and SSM are reached at their regional endpoints; botocore's standard ``AWS_ENDPOINT_URL_STS`` /
``AWS_ENDPOINT_URL_SSM`` (or a ``services`` section in the AWS config file) point them elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import boto3
import botocore.config
import botocore.credentials
import botocore.session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from bridge.aws.errors import (
    CONNECTION_ERRORS,
    THROTTLING_CODES,
    TRANSIENT_CODES,
    ErrorClass,
    classify,
    describe,
    error_code,
)
from bridge.errors import BridgeError, ConfigError, RecoverableTransportError, TransportError
from bridge.transport import TransportURL

__all__ = [
    "AWS_PARAMS",
    "CONNECTION_ERRORS",
    "RETRYABLE_CODES",
    "AwsSide",
    "AwsTransportURL",
    "aws_boundary",
    "error_code",
    "is_throttling",
    "map_client_error",
    "param_flag",
    "param_number",
]

#: Throttling and service faults (kept for callers of the transports; :mod:`bridge.aws.errors` decides).
RETRYABLE_CODES = THROTTLING_CODES | TRANSIENT_CODES

#: URL / config parameters that :meth:`AwsSide.from_params` understands.
AWS_PARAMS = frozenset(
    {
        "region",
        "endpoint_url",
        "profile",
        "role_arn",
        "external_id",
        "role_session_name",
        "proxy",
        "ca_bundle",
        "ssm_access_key_param",
        "ssm_secret_key_param",
        "ssm_region",
        "access_key_env",
        "secret_key_env",
        "session_token_env",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
    }
)

N = TypeVar("N", int, float)

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
# Loose on purpose (emulators and new partitions): catches URLs and typos with spaces or capitals.
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AwsSide:
    """How to reach AWS for one side of the bridge (see the module docstring for credentials)."""

    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    max_attempts: int = 10
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_pool_connections: int = 32
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str = "ddb-bridge"
    # May hold user:password: never in repr() or logs.
    proxy: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    ssm_access_key_param: str | None = None
    ssm_secret_key_param: str | None = None
    ssm_region: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    session_token_env: str | None = None
    # One session per side: building one may read SSM or assume a role.
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, what: str, **defaults: Any) -> AwsSide:
        """Build a side from flat settings (URL query parameters or ``source_*`` config values).

        ``what`` names the owner in error messages (a redacted URL, or ``"source side"``);
        ``defaults`` supply values for keys missing (or None) in ``params``. Unknown keys are ignored:
        the caller decides whether they are its own.
        """
        values = {**defaults, **{k: v for k, v in params.items() if k in AWS_PARAMS and v not in (None, "")}}
        region = values.pop("region", None)
        if not region:
            raise ConfigError(f"{what}: region is required (e.g. region=us-west-2)")
        try:
            for name, kind in (("max_attempts", int), ("connect_timeout", float), ("read_timeout", float)):
                if name in values:
                    values[name] = kind(values[name])
        except ValueError as exc:
            raise ConfigError(f"{what}: {name} must be a number, got {values[name]!r}") from exc
        kwargs: dict[str, Any] = {k: (v if isinstance(v, int | float) else str(v)) for k, v in values.items()}
        try:
            return cls(str(region), **kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if not _REGION.match(self.region):
            raise ConfigError(f"region {self.region!r} is not a region name like us-west-2 or cn-north-1")
        if self.ssm_region is not None and not _REGION.match(self.ssm_region):
            raise ConfigError(f"ssm_region {self.ssm_region!r} is not an AWS region name")
        for name in ("endpoint_url", "proxy"):
            value = getattr(self, name)
            if value is not None:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {_mask(value)!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("connect_timeout and read_timeout must be positive seconds")
        if self.role_arn is not None and not _ROLE_ARN.match(self.role_arn):
            raise ConfigError(f"role_arn {self.role_arn!r} is not a role ARN (arn:aws:iam::123456789012:role/NAME)")
        if self.external_id is not None and not 2 <= len(self.external_id) <= 1224:
            raise ConfigError("external_id must be 2-1224 characters")
        if self.external_id is not None and self.role_arn is None:
            raise ConfigError("external_id is only used with role_arn")
        if not _SESSION_NAME.match(self.role_session_name):
            raise ConfigError(f"role_session_name {self.role_session_name!r}: 2-64 characters of A-Z a-z 0-9 +=,.@_-")
        ssm = (self.ssm_access_key_param, self.ssm_secret_key_param)
        env = (self.access_key_env, self.secret_key_env)
        if (ssm[0] is None) != (ssm[1] is None):
            raise ConfigError("ssm_access_key_param and ssm_secret_key_param go together")
        if (env[0] is None) != (env[1] is None):
            raise ConfigError("access_key_env and secret_key_env go together")
        if self.session_token_env is not None and env[0] is None:
            raise ConfigError("session_token_env is only used with access_key_env and secret_key_env")
        for name in ("access_key_env", "secret_key_env", "session_token_env"):
            value = getattr(self, name)
            if value is not None and not _ENV_NAME.match(value):
                raise ConfigError(f"{name} must name an environment variable, got {value!r}")
        sources = [n for n, on in (("profile", self.profile), ("ssm_*_param", ssm[0]), ("*_key_env", env[0])) if on]
        if len(sources) > 1:
            raise ConfigError(f"choose one credential source, not {' and '.join(sources)}")
        if self.ssm_region is not None and ssm[0] is None:
            raise ConfigError("ssm_region is only used with ssm_access_key_param/ssm_secret_key_param")

    @property
    def credential_source(self) -> str:
        """Where credentials come from, for log lines (never the secrets themselves)."""
        base = self._base_source
        return f"{base}, assuming {self.role_arn}" if self.role_arn else base

    @property
    def _base_source(self) -> str:
        if self.ssm_access_key_param:
            base = f"SSM parameters {self.ssm_access_key_param}, {self.ssm_secret_key_param}"
        elif self.access_key_env:
            base = f"environment variables {self.access_key_env}, {self.secret_key_env}"
        elif self.profile:
            base = f"profile {self.profile}"
        else:
            base = "the default credential chain"
        return base

    def config(self, *, local: bool = False) -> botocore.config.Config:
        """The botocore client config; ``local`` clients (SSM key reads) skip the proxy."""
        return botocore.config.Config(
            retries={"mode": "adaptive", "total_max_attempts": self.max_attempts},  # first try included
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            proxies={"http": self.proxy, "https": self.proxy} if self.proxy and not local else None,
        )

    def session(self) -> boto3.session.Session:
        """The side's session (built once: SSM keys are read and the role is set up here)."""
        with self._lock:
            session = self._cache.get("session")
            if session is None:
                session = self._cache["session"] = self._build_session()
            return session

    def client(self, service: str) -> Any:
        session = self.session()
        with self._lock:  # boto3 sessions are not thread-safe; their clients are
            return session.client(
                service,
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=self.config(),
                verify=self.ca_bundle,
            )

    # -- credentials ---------------------------------------------------------------------------

    def _build_session(self) -> boto3.session.Session:
        base = self._base_session()
        if self.role_arn is None:
            return base
        source = base.get_credentials()
        if source is None:
            raise ConfigError(f"no credentials to assume {self.role_arn} with (from {self._base_source})")
        extra: dict[str, Any] = {"RoleSessionName": self.role_session_name}
        if self.external_id:
            extra["ExternalId"] = self.external_id

        def sts_client(service: str, **keys: Any) -> Any:
            # The role lives on the far side: reach STS like the side's services (proxy, timeouts),
            # in the side's region (and so its partition), at the regional endpoint.
            return base.client(service, region_name=self.region, config=self.config(), verify=self.ca_bundle, **keys)

        fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=self.role_arn,
            extra_args=extra,
        )
        assumed = botocore.credentials.DeferredRefreshableCredentials(
            method="assume-role",
            refresh_using=fetcher.fetch_credentials,
        )
        core = botocore.session.Session()
        core.get_component("credential_provider").insert_before("env", _Fixed(assumed))
        return boto3.session.Session(botocore_session=core, region_name=self.region)

    def _base_session(self) -> boto3.session.Session:
        if self.ssm_access_key_param and self.ssm_secret_key_param:
            access_key, secret_key = self._keys_from_ssm(self.ssm_access_key_param, self.ssm_secret_key_param)
            return boto3.session.Session(
                aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=self.region
            )
        if self.access_key_env and self.secret_key_env:
            return boto3.session.Session(
                aws_access_key_id=_env(self.access_key_env),
                aws_secret_access_key=_env(self.secret_key_env),
                aws_session_token=_env(self.session_token_env) if self.session_token_env else None,
                region_name=self.region,
            )
        try:
            return boto3.session.Session(profile_name=self.profile, region_name=self.region)
        except BotoCoreError as exc:  # ProfileNotFound
            raise ConfigError(f"AWS profile {self.profile!r}: {exc}") from exc

    def _keys_from_ssm(self, access_param: str, secret_param: str) -> tuple[str, str]:
        # The machine's own credentials and region: the keys are for the *other* side.
        local = boto3.session.Session(region_name=self.ssm_region)
        try:
            ssm = local.client("ssm", config=self.config(local=True))
            values = [
                ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
                for name in (access_param, secret_param)
            ]
        except NoRegionError as exc:
            raise ConfigError("reading keys from SSM needs ssm_region (or a default region)") from exc
        except ClientError as exc:
            if error_code(exc) in RETRYABLE_CODES:
                raise RecoverableTransportError(f"reading keys from SSM was throttled: {exc}") from exc
            raise ConfigError(f"cannot read keys from SSM parameters {access_param}, {secret_param}: {exc}") from exc
        except CONNECTION_ERRORS:
            raise
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigError(f"no local credentials to read SSM parameters {access_param}: {exc}") from exc
        return str(values[0]).strip(), str(values[1]).strip()


class _Fixed(botocore.credentials.CredentialProvider):  # type: ignore[misc]
    """Hands botocore one credentials object (here: the refreshing assumed-role ones)."""

    METHOD = "ddb-bridge"
    CANONICAL_NAME = "ddb-bridge"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._credentials


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} (named for AWS keys) is not set")
    return value


# -- errors at the boundary ---------------------------------------------------------------------


def is_throttling(exc: ClientError) -> bool:
    return classify(exc) in (ErrorClass.THROTTLED, ErrorClass.TRANSIENT)


def map_client_error(exc: ClientError, action: str, where: str) -> TransportError:
    """Throttling and server faults -> RecoverableTransportError; anything else -> TransportError
    (a systemic one, e.g. a missing queue or access denied, says so in its message)."""
    text = f"{action} on {where} failed: {describe(exc)}"
    kind = classify(exc)
    if kind in (ErrorClass.THROTTLED, ErrorClass.TRANSIENT):
        return RecoverableTransportError(text)
    if kind is ErrorClass.SYSTEMIC:
        return TransportError(f"{text} (concerns every message: check the resource and the permissions)")
    return TransportError(text)


@contextlib.contextmanager
def aws_boundary(action: str, where: str) -> Iterator[None]:
    """Map botocore errors to bridge errors; connection errors pass through (they are declared
    recoverable by the transports, so core reconnects and retries)."""
    try:
        yield
    except BridgeError:
        raise
    except CONNECTION_ERRORS:
        raise
    except ClientError as exc:
        raise map_client_error(exc, action, where) from exc
    except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
        raise ConfigError(f"{action} on {where}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransportError(f"{action} on {where} failed: {type(exc).__name__}: {exc}") from exc


# -- URLs ---------------------------------------------------------------------------------------


def _mask(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return re.sub(r"(://[^/:@?&=\s]+:)[^@/?&\s]+@", r"\1***@", text)


class AwsTransportURL(TransportURL):
    """A transport URL whose ``redacted()`` also hides a password inside a query value
    (``proxy=http://user:secret@host:3128``)."""

    @classmethod
    def wrap(cls, url: TransportURL) -> AwsTransportURL:
        return cls(url.raw, url.scheme, url.netloc, url.path, dict(url.params))

    def redacted(self) -> str:
        parts = urlsplit(super().redacted())
        return urlunsplit(parts._replace(query=_mask(unquote(parts.query))))


# -- URL parameters ---------------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def param_flag(params: Mapping[str, str], name: str, default: bool, where: str) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")


def param_number(
    params: Mapping[str, str],
    name: str,
    default: N,
    where: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> N:
    """A number parameter of the type of ``default``, within bounds, or ConfigError naming it."""
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = type(default)(value)
    except ValueError:
        raise ConfigError(f"{where}: {name} must be a {type(default).__name__}, got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise ConfigError(f"{where}: {name} must be within {bounds}, got {value}")
    return number
