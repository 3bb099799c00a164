"""Active-active: keep the bridge's own writes out of the local stream's output, and repair
the one race conditional writes cannot see.

Each replica runs bridge-publish (its stream -> the others) and bridge-apply (the others ->
its table) on the same table. The publisher's :class:`LoopGuard` looks at every record of
the local stream, in order, and decides:

* a put whose write token ``_bridge_w`` changed between old and new image was written by
  the bridge (an applier, or a repair below; every bridge write sets a fresh token): not
  shipped. Applications never write ``_bridge*`` attributes.
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

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bridge.change import Change, Image, Operation, Outcome, Version, fingerprint
from bridge.errors import ApplyError, RecordError, SourceError
from bridge.source.records import wire_image
from bridge.state.guard_memory import MemoryStore

log = logging.getLogger(__name__)


@dataclass
class GuardStats:
    local_writes: int = 0  # application writes shipped
    own_writes_suppressed: int = 0  # bridge writes recognised and not shipped (echo prevented)
    repairs: int = 0  # losers overwritten by the known winner
    superseded: int = 0  # application writes that lose to a version already everywhere: not shipped


class LocalTable(Protocol):
    """What the guard needs of its own table (:class:`~bridge.apply.target.TargetTable` has it)."""

    @property
    def version_attr(self) -> str: ...

    @property
    def write_attr(self) -> str: ...

    @property
    def deleted_attr(self) -> str: ...

    def user_item(self, item: Image) -> Image: ...

    def tombstone(self, keys: Image) -> dict[str, Any] | None: ...

    def apply(self, change: Change, *, repair: bool = False) -> Outcome: ...


class LoopGuard:
    def __init__(
        self, local: LocalTable, origin: str, *, store: MemoryStore | None = None, horizon_s: float = 600.0
    ) -> None:
        self.local = local
        self.origin = origin
        self.horizon_s = horizon_s
        self.stats = GuardStats()
        # key token -> (when seen, newest version, the change that carries it)
        self.store = store if store is not None else MemoryStore()

    def commit(self) -> None:
        """The publisher checkpointed everything admitted so far."""
        self.store.commit(older_than=time.time() - self.horizon_s)

    def admit(self, record: dict[str, Any], change: Change) -> Change | None:
        """The change to ship for this local stream record, or None."""
        own = self._own_write(record, change)
        newest = self._reconcile(own or change)
        if own is not None:
            self.stats.own_writes_suppressed += 1
            return None
        if not newest:
            self.stats.superseded += 1  # loses to a version every replica already has: no need to ship
            return None
        self.stats.local_writes += 1
        if change.new_image is not None:
            image = self.local.user_item(change.new_image)
            return replace(change, new_image=image)
        return change

    def _own_write(self, record: dict[str, Any], change: Change) -> Change | None:
        """If the bridge wrote this record, the change it applied (with its version)."""
        attr, token = self.local.version_attr, self.local.write_attr
        ddb = record.get("dynamodb") or {}
        old = wire_image(ddb.get("OldImage"), "dynamodb.OldImage")  # parse_record validated it already
        if change.op is Operation.PUT:
            assert change.new_image is not None
            new_w = change.new_image.get(token, {}).get("S")
            if new_w is None or new_w == old.get(token, {}).get("S"):
                return None
            new_v = change.new_image.get(attr, {}).get("S", "")
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
        if tomb and fingerprint(old) in tomb.get(self.local.deleted_attr, {}).get("SS", ()):
            return replace(change, version=Version.decode(tomb[attr]["S"]))
        return None

    def _reconcile(self, seen: Change) -> bool:
        """Remember ``seen`` if it is the newest for its key (True); else repair the key (False)."""
        token = seen.key_token
        known = self.store.get(token)
        if known is not None and seen.version < known[1]:
            winner = known[2]
            log.info(
                "repairing a key overwritten by an older version (%s < %s)",
                seen.version.encode(),
                winner.version.encode(),
            )
            try:
                self.local.apply(winner, repair=True)
            except ApplyError as exc:
                raise SourceError(f"repair of a key overwritten by an older version failed: {exc}") from exc
            self.stats.repairs += 1
            return False
        self.store.put(token, (time.time(), seen.version, seen))
        return True
