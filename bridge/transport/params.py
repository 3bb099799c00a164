"""Reading a transport URL's query parameters and TLS settings, the same way in every plugin.

Policy for unknown parameters (every built-in transport follows it): they are **ignored with
one warning** naming them, not refused, so a URL written for a newer version of a plugin still
works with an older one; the warning makes a typo visible. Malformed values of known
parameters are refused with a one-line :class:`~bridge.errors.ConfigError` naming the
parameter. Plugins take their parameters out explicitly and never pass the query string to
their client library, so a typo cannot become a surprising library setting.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from bridge.errors import ConfigError
from bridge.transport import TransportURL

log = logging.getLogger(__name__)

TLS_PARAMS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Tls:
    """``ssl_ca`` / ``ssl_cert`` / ``ssl_key`` / ``ssl_verify`` from a TLS URL, files checked."""

    hostname: str
    verify: bool = True
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context: system CAs (or ``ca``), hostname checked unless ``verify`` is off."""
        context = ssl.create_default_context(cafile=self.ca)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context


class UrlParams:
    """The query parameters of ``url`` that a plugin knows; warns once about any others."""

    def __init__(self, url: TransportURL, known: Iterable[str]) -> None:
        self.url = url
        self.where = url.redacted()
        unknown = sorted(set(url.params) - set(known))
        if unknown:
            log.warning("ignoring unknown parameters %s in %s", ", ".join(unknown), self.where)

    def text(self, key: str, default: str = "", *, required: str = "") -> str:
        """The parameter stripped; ``required`` is the hint of the error when it is missing."""
        value = self.url.params.get(key, "").strip() or default
        if not value and required:
            raise ConfigError(f"transport URL {self.where!r} has no {key}: {required}")
        return value

    def number(self, key: str, default: N, cast: Callable[[str], N], minimum: float) -> N:
        raw = self.url.params.get(key, "")
        if raw == "":
            return default
        try:
            value: N | None = cast(raw)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ConfigError(f"{key}={raw!r} in transport URL {self.where!r} must be a number >= {minimum}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self.url.params.get(key, "").strip().lower()
        if not raw:
            return default
        if raw not in _TRUE | _FALSE:
            raise ConfigError(f"{key}={raw!r} in transport URL {self.where!r} must be true or false")
        return raw in _TRUE

    def file(self, key: str) -> str | None:
        """A path that must exist now: a missing file found at connect time looks like a
        connection error, which is recoverable, and would be retried forever."""
        path = self.url.params.get(key)
        if path and not os.path.isfile(path):
            raise ConfigError(f"{key}={path!r} in {self.where!r} is not a readable file")
        return path or None

    def tls(self, tls_schemes: Iterable[str]) -> Tls | None:
        """TLS settings if the URL's scheme is one of ``tls_schemes``, else None; TLS parameters
        on a plain scheme are refused (a CA file does not turn TLS on)."""
        given = [k for k in TLS_PARAMS if k in self.url.params]
        if self.url.scheme not in tls_schemes:
            if given:
                raise ConfigError(f"{', '.join(given)} in {self.where!r} need a TLS scheme ({'/'.join(tls_schemes)})")
            return None
        tls = Tls(
            hostname=urlsplit(self.url.raw).hostname or "localhost",
            verify=self.flag("ssl_verify", True),
            ca=self.file("ssl_ca"),
            cert=self.file("ssl_cert"),
            key=self.file("ssl_key"),
        )
        if tls.key and not tls.cert:
            raise ConfigError(f"ssl_key without ssl_cert in {self.where!r}")
        return tls

    def ssl_context(self, tls_schemes: Iterable[str]) -> ssl.SSLContext | None:
        """:meth:`tls` as the ``ssl.SSLContext`` most client libraries take, or None."""
        tls = self.tls(tls_schemes)
        return tls.context() if tls else None

    def credentials(self) -> tuple[str | None, str | None]:
        """User and password from the URL's netloc, percent-decoded."""
        parts = urlsplit(self.url.raw)
        return (
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def host_port(self, default_port: int) -> tuple[str, int]:
        parts = urlsplit(self.url.raw)
        try:
            return parts.hostname or "127.0.0.1", parts.port or default_port
        except ValueError as exc:
            raise ConfigError(f"bad port in transport URL {self.where!r}") from exc
