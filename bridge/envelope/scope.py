"""What a trusted key may write: the signed source table and origin an envelope may carry.

A signature proves which key signed, not where the batch may go: without a scope, a batch for table A
signed by a key trusted for table B's applier would be applied to B. Two scopes apply to every
envelope, and both must allow it: the trust entry's own (``# allow-tables:`` / ``# allow-origins:``
comment lines in its ``.pub`` file, docs/design.md "Threat model") and the applier's
(``accept_tables`` / ``accept_origins``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import KeyFileError

ANY = "*"
_DIRECTIVES = {"# allow-tables:": "tables", "# allow-origins:": "origins"}


@dataclass(frozen=True)
class Scope:
    """Allowed tables and origins; ``None`` allows any."""

    tables: frozenset[str] | None = None
    origins: frozenset[str] | None = None

    @classmethod
    def of(cls, tables: Iterable[str] | None = None, origins: Iterable[str] | None = None) -> Scope:
        return cls(_names(tables), _names(origins))

    def refusal(self, table: str, origin: str) -> str | None:
        """Why an envelope from ``origin`` for ``table`` is outside this scope, or None."""
        if self.tables is not None and table not in self.tables:
            return f"table {table!r} is not one of {', '.join(sorted(self.tables)) or '(none)'}"
        if self.origins is not None and origin not in self.origins:
            return f"origin {origin!r} is not one of {', '.join(sorted(self.origins)) or '(none)'}"
        return None


ANY_SCOPE = Scope()


def _names(values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    names = frozenset(v.strip() for v in values if v.strip())
    return None if ANY in names else names


def split_pub(text: bytes, path: Path) -> tuple[bytes, Scope]:
    """The PEM part of a ``.pub`` file and the scope its ``# allow-...:`` lines give."""
    found: dict[str, list[str]] = {}
    pem: list[bytes] = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        stripped = line.strip()
        if not stripped.startswith(b"#"):
            pem.append(line)
            continue
        comment = stripped.decode("utf-8", "replace")
        lowered = comment.lower()
        directive = next((d for d in _DIRECTIVES if lowered.startswith(d)), None)
        if directive is None:
            if lowered.replace(" ", "").startswith("#allow"):
                # A misspelt restriction must not silently leave a key unrestricted.
                raise KeyFileError(
                    f"trusted key {path} line {number}: unknown directive {comment[:60]!r}; "
                    "use '# allow-tables: A, B' or '# allow-origins: X, Y'"
                )
            continue
        name = _DIRECTIVES[directive]
        if name in found:
            raise KeyFileError(f"trusted key {path} line {number}: {directive[2:]} given twice")
        found[name] = comment[len(directive) :].replace(",", " ").split()
        if not found[name]:
            raise KeyFileError(f"trusted key {path} line {number}: {directive[2:]} names nothing")
    return b"".join(pem), Scope.of(found.get("tables"), found.get("origins"))
