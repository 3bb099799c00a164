"""Active-active: keep the bridge's own writes out of the local stream's output, and repair
the one race conditional writes cannot see.

Each replica runs bridge-publish (its stream -> the others) and bridge-apply (the others ->
its table) on the same table. The publisher's :class:`LoopGuard` looks at every record of
the local stream, in order, and decides:

* a put whose ``_bridge_v`` changed between old and new image was written by the bridge
  (an applier, or a repair below): not shipped. Applications never write ``_bridge*``.
* a REMOVE whose old image matches the fingerprint on the key's tombstone was the
  bridge's delete (the applier writes the tombstone, with that fingerprint, first): not
  shipped.
* anything else is the application's own write: shipped with its version
  ``(stream time or timestamp attribute, this origin, sequence number)``.

The race: an application write lands, and before this publisher has seen it a remote
write with an *older* version is applied over it (the applier could not know the local
write's version: the item does not carry one). Both writes are in the local stream, in
the order they happened. The guard remembers, per key, the newest version it has seen
for a short horizon; a record older than that means the table now holds a loser, and the
guard re-applies the winner through the normal last-writer-wins path. Every replica thus
ends with the same winner, without any attribute written by the application.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from bridge.apply.target import TargetTable
from bridge.change import Change, Image, Operation, Version, fingerprint
from bridge.errors import ApplyError, RecordError, SourceError

log = logging.getLogger(__name__)


@dataclass
class GuardStats:
    local_writes: int = 0  # application writes shipped
    own_writes_suppressed: int = 0  # bridge writes recognised and not shipped (echo prevented)
    repairs: int = 0  # losers overwritten by the known winner


def wire_image(image: Any) -> Image:
    """A stream image in wire form, whether it came from boto3 (bytes) or Lambda (base64 text)."""

    def value(v: dict[str, Any]) -> dict[str, Any]:
        ((tag, inner),) = v.items()
        if tag == "B" and not isinstance(inner, str):
            return {"B": base64.b64encode(bytes(inner)).decode("ascii")}
        if tag == "BS":
            return {"BS": [x if isinstance(x, str) else base64.b64encode(bytes(x)).decode("ascii") for x in inner]}
        if tag == "M":
            return {"M": {k: value(x) for k, x in inner.items()}}
        if tag == "L":
            return {"L": [value(x) for x in inner]}
        return v

    return {k: value(v) for k, v in (image or {}).items()}


class LoopGuard:
    def __init__(self, local: TargetTable, origin: str, *, horizon_s: float = 120.0, max_keys: int = 50_000) -> None:
        self.local = local
        self.origin = origin
        self.horizon_s = horizon_s
        self.max_keys = max_keys
        self.stats = GuardStats()
        # key token -> (when seen, newest version, the change that carries it)
        self._newest: OrderedDict[str, tuple[float, Version, Change]] = OrderedDict()

    def admit(self, record: dict[str, Any], change: Change) -> Change | None:
        """The change to ship for this local stream record, or None."""
        own = self._own_write(record, change)
        seen = own or change
        self._reconcile(seen)
        if own is not None:
            self.stats.own_writes_suppressed += 1
            return None
        self.stats.local_writes += 1
        if change.new_image is not None:
            image = self.local.user_item(change.new_image)
            return replace(change, new_image=image)
        return change

    def _own_write(self, record: dict[str, Any], change: Change) -> Change | None:
        """If the bridge wrote this record, the change it applied (with its version)."""
        attr = self.local.version_attr
        ddb = record.get("dynamodb") or {}
        old = wire_image(ddb.get("OldImage"))
        if change.op is Operation.PUT:
            assert change.new_image is not None
            new_v = change.new_image.get(attr, {}).get("S")
            if new_v is None or new_v == old.get(attr, {}).get("S"):
                return None
            try:
                version = Version.decode(new_v)
            except ValueError as exc:
                raise RecordError(f"{attr} holds {new_v!r}, not a bridge version", record) from exc
            return replace(change, version=version, new_image=self.local.user_item(change.new_image))
        if "OldImage" not in ddb:
            raise RecordError("active-active needs old images: set the stream to NEW_AND_OLD_IMAGES", record)
        try:
            tomb = self.local.tombstone(change.keys)
        except ApplyError as exc:
            # Not the record's fault: stop, and resume from the checkpoint (nothing is lost).
            raise SourceError(f"cannot read the tombstone to classify a delete: {exc}") from exc
        if tomb and tomb.get(self.local.deleted_attr, {}).get("S") == fingerprint(old):
            return replace(change, version=Version.decode(tomb[attr]["S"]))
        return None

    def _reconcile(self, seen: Change) -> None:
        now = time.monotonic()
        self._expire(now)
        token = seen.key_token
        known = self._newest.get(token)
        if known is not None and seen.version < known[1]:
            winner = known[2]
            log.info("repairing a key overwritten by an older version (%s < %s)", seen.version.encode(),
                     winner.version.encode())
            try:
                self.local.apply(winner)
            except ApplyError as exc:
                raise SourceError(f"repair of a key overwritten by an older version failed: {exc}") from exc
            self.stats.repairs += 1
            self._newest.move_to_end(token)
            return
        self._newest[token] = (now, seen.version, seen)
        self._newest.move_to_end(token)

    def _expire(self, now: float) -> None:
        while self._newest:
            token, (when, _, _) = next(iter(self._newest.items()))
            if now - when <= self.horizon_s and len(self._newest) <= self.max_keys:
                break
            self._newest.pop(token)
