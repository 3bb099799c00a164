"""Every error ddb-bridge raises on purpose, in one tree.

Library errors (botocore, kombu, zstandard, cryptography, orjson, pydantic) are mapped
to these at the boundary with ``raise ... from exc`` so callers catch one family. The CLI
prints a handled error as one line and exits with its ``exit_code``::

    BridgeError                      exit 1
    ├── ConfigError                  exit 2   bad file, flag or env var; names the key
    │   └── ClockSkewError                    the host clock disagrees with AWS's
    ├── KeyFileError                 exit 3   missing, unreadable or insecure key file
    ├── PluginError                  exit 4   a plugin failed to load / broke a contract
    │   └── UnknownTransportError             no plugin for a URL scheme ("did you mean")
    ├── TransportError               exit 5   the broker refused or failed
    │   ├── RecoverableTransportError         connection lost, throttled: retry in core
    │   └── MessageTooLargeError              refused before sending
    ├── SourceError                  exit 6   reading the DynamoDB stream failed
    │   └── DataLossError            exit 7   records were trimmed before we read them
    ├── SystemicError                exit 9   concerns every change (table gone, access denied, wrong
    │   │                                     key schema, expired credentials): the line pauses
    │   └── PausedTooLongError       exit 9   paused longer than --max-paused: a supervisor's turn
    ├── DeadLetteredError            exit 10  an --until-idle run parked or quarantined something
    ├── BehindError                  exit 12  `bridge status`: behind its threshold, or dead letters wait
    ├── RecordError                           one stream record cannot become a Change
    ├── DecodeError                           bytes are not a valid envelope (keeps .raw)
    │   ├── UnsupportedVersionError           envelope version this build does not know
    │   ├── SignatureError                    unknown key id or bad signature
    │   └── RouteRefusedError                 authentic, but its key or this applier may not
    │                                         write its signed table / origin
    └── ApplyError                            a change could not be written to the target
        ├── TransientApplyError               throttling, timeouts, 5xx, proxy: retry later
        └── PermanentApplyError               validation, too large: this change only
            └── ItemTooLargeError             over 400 KB with the bridge's own attributes

Exit 8 is ``bridge verify``'s "the tables differ". A systemic error is not an ``ApplyError`` on
purpose: code that parks failed changes catches ``ApplyError`` and must never catch this one.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error ddb-bridge raises on purpose."""

    exit_code = 1
    #: Restarting the process cannot help: a supervisor should wait for an operator
    #: (deploy/systemd's RestartPreventExitStatus lists exactly these codes; a test holds it).
    needs_operator = False


class ConfigError(BridgeError):
    """Configuration is invalid; the message names the key and the problem."""

    exit_code = 2
    needs_operator = True


class ClockSkewError(ConfigError):
    """The host's clock is off from AWS's by more than a copy can tolerate."""


class KeyFileError(BridgeError):
    """A signing or trusted key file is missing, unparseable or insecure."""

    exit_code = 3
    needs_operator = True


class PluginError(BridgeError):
    """A plugin failed to load or does not honour the hook contract."""

    exit_code = 4
    needs_operator = True


class UnknownTransportError(PluginError):
    """No installed transport handles a URL scheme."""


class TransportError(BridgeError):
    """The transport (broker / stream / queue) failed."""

    exit_code = 5


class RecoverableTransportError(TransportError):
    """A transport failure that may succeed after reconnecting and retrying."""


class MessageTooLargeError(TransportError):
    """A message exceeds the transport's size limit; detected before sending."""


class SourceError(BridgeError):
    """Reading the source table's stream failed."""

    exit_code = 6


class DataLossError(SourceError):
    """Stream records were trimmed before they were read: a gap was lost."""

    exit_code = 7
    needs_operator = True


class SystemicError(BridgeError):
    """A failure that will meet every change, not one: the table or stream is gone, access is
    denied, the key schema differs, credentials expired, the operation is unknown, no trusted key
    matches. Loops pause on it (messages stay on the queue, nothing is parked) and probe until the
    cause is gone. ``scope`` names what is paused ("apply", "publish")."""

    exit_code = 9


class PausedTooLongError(SystemicError):
    """The line stayed paused on a systemic error for longer than ``--max-paused``."""


class DeadLetteredError(BridgeError):
    """An ``--until-idle`` run ended with changes parked or envelopes quarantined."""

    exit_code = 10
    needs_operator = True


class BehindError(BridgeError):
    """``bridge status`` found the line behind its threshold, or dead letters waiting."""

    exit_code = 12
    daemon = False  # only a one-shot command exits with it: no supervisor restart question


class RecordError(BridgeError):
    """A stream record cannot be turned into a change. ``raw`` keeps the record."""

    def __init__(self, message: str, raw: Any = None) -> None:
        super().__init__(message)
        self.raw = raw


class DecodeError(BridgeError):
    """Bytes are not a valid, authentic envelope. ``raw`` keeps the original bytes."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


class UnsupportedVersionError(DecodeError):
    """The envelope's format version is not one this build can read."""


class SignatureError(DecodeError):
    """The envelope is signed by an unknown key or its signature does not verify."""


class RouteRefusedError(DecodeError):
    """Authentic, but signed for a table or origin its key or this applier is not allowed to write."""


class ApplyError(BridgeError):
    """A change could not be applied to the target table."""


class TransientApplyError(ApplyError):
    """Throttling, timeouts, 5xx: worth retrying later."""


class PermanentApplyError(ApplyError):
    """Retrying will not help this change: validation error, item too large."""


class ItemTooLargeError(PermanentApplyError):
    """The item, with the bridge's own attributes, is over DynamoDB's item size limit."""
