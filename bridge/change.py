"""The one immutable type every stage passes along: a :class:`Change` to one item.

Images and keys are kept in DynamoDB JSON exactly as AWS documents it for the wire
(``{"S": "x"}``, ``{"N": "1.5"}``, binary as base64 *text*), so a change serialises
with no per-attribute work and another language can read it. Conversion to the
``bytes`` boto3 wants happens only at the DynamoDB boundary (:func:`to_boto_image`,
:func:`from_boto_image`).
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

AttributeValue = dict[str, Any]
Image = dict[str, AttributeValue]

ATTRIBUTE_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
KEY_TYPES = frozenset({"S", "N", "B"})


class Operation(str, enum.Enum):
    PUT = "put"
    DELETE = "delete"


class Outcome(str, enum.Enum):
    """What applying one change did; both sides need it (the loop guard re-applies through the applier)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this exact version is already there
    STALE = "stale"  # a newer version (or tombstone) is already there


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """Last-writer-wins order: timestamp, then origin, then source sequence number.

    Every replica compares the same three fields the same way, so every replica picks
    the same winner, including on equal timestamps.
    """

    ts_us: int
    origin: str
    seq: int

    def encode(self) -> str:
        """A string whose byte order equals the tuple order (stored on target items).

        The space sorts below every character an origin may hold ([A-Za-z0-9._:-]),
        so ``us-east-1`` sorts before ``us-east-10`` exactly as the tuple does.
        """
        return f"{self.ts_us:020d} {self.origin} {self.seq:040d}"

    @classmethod
    def decode(cls, text: str) -> Version:
        ts, origin, seq = text.split(" ")
        return cls(int(ts), origin, int(seq))


@dataclass(frozen=True, slots=True)
class Position:
    """Where a change was read in the source stream."""

    shard_id: str
    sequence_number: str


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one item: a put of ``new_image`` or a delete of ``keys``."""

    keys: Image
    op: Operation
    version: Version
    new_image: Image | None = None
    position: Position | None = None
    by_service: bool = False  # a TTL delete made by DynamoDB itself
    _key_token: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op is Operation.PUT and self.new_image is None:
            raise ValueError("a put needs a new image")
        if not self._key_token:
            object.__setattr__(self, "_key_token", key_token(self.keys))

    @property
    def key_token(self) -> str:
        """A stable short string naming the item (ordering / partition key)."""
        return self._key_token

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "op": self.op.value,
            "keys": self.keys,
            "v": [self.version.ts_us, self.version.origin, str(self.version.seq)],
        }
        if self.new_image is not None:
            wire["new"] = self.new_image
        if self.position is not None:
            wire["pos"] = [self.position.shard_id, self.position.sequence_number]
        if self.by_service:
            wire["svc"] = True
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Change:
        """Inverse of :meth:`to_wire`; raises ``ValueError`` naming the bad field.

        The applier decodes every change it receives here. The frozen dataclasses'
        ``__init__`` (an ``object.__setattr__`` call per field) cost about as much as all the
        checks, so this path fills the slots directly, after the same checks ``__post_init__``
        makes. ``docs/benchmarks.md`` has the profile.
        """
        if not isinstance(wire, dict):
            raise ValueError(f"change must be an object, got {type(wire).__name__}")
        try:
            raw_op = wire["op"]
            op = _OPERATIONS.get(raw_op) if type(raw_op) is str else None
            if op is None:
                op = Operation(raw_op)  # raises the enum's own "... is not a valid Operation"
            keys = wire["keys"]
            ts, origin, seq = wire["v"]
            version = _new_object(Version)
            set_ts, set_origin, set_seq = _VERSION_SLOTS
            set_ts(version, int(ts))
            set_origin(version, str(origin))
            set_seq(version, int(seq))
            new = wire.get("new")
            pos = wire.get("pos")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"change is missing or has a malformed field: {exc}") from exc
        check_image(keys, "keys")
        if new is not None:
            check_image(new, "new")
        position = None
        if pos:
            position = _new_object(Position)
            set_shard, set_sequence = _POSITION_SLOTS
            set_shard(position, str(pos[0]))
            set_sequence(position, str(pos[1]))
        by_service = bool(wire.get("svc", False))
        if cls is not Change:  # a subclass may add checks of its own
            return cls(keys, op, version, new, position, by_service)
        if op is Operation.PUT and new is None:
            raise ValueError("a put needs a new image")
        change = _new_object(Change)
        set_keys, set_op, set_version, set_new, set_position, set_svc, set_token = _CHANGE_SLOTS
        set_keys(change, keys)
        set_op(change, op)
        set_version(change, version)
        set_new(change, new)
        set_position(change, position)
        set_svc(change, by_service)
        set_token(change, key_token(keys))
        return change


def key_token(keys: Image) -> str:
    digest = hashlib.blake2b(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return digest.hexdigest()


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    # from_wire fills every field positionally: a field added to the class must be added there too.
    if tuple(f.name for f in fields(cls)) != names:
        raise RuntimeError(f"{cls.__name__}'s fields changed: update Change.from_wire, which sets them")
    return tuple(cls.__dict__[name].__set__ for name in names)


# Frozen dataclasses set each field through object.__setattr__; the slots' own descriptors
# do the same store several times faster. Only the decode path (from_wire) uses these.
_new_object = object.__new__
_CHANGE_SLOTS = _slot_setters(Change, ("keys", "op", "version", "new_image", "position", "by_service", "_key_token"))
_VERSION_SLOTS = _slot_setters(Version, ("ts_us", "origin", "seq"))
_POSITION_SLOTS = _slot_setters(Position, ("shard_id", "sequence_number"))
_OPERATIONS = {op.value: op for op in Operation}


def check_image(image: Any, where: str) -> None:
    """Raise ``ValueError`` if ``image`` is not a map of typed DynamoDB values."""
    if not isinstance(image, dict):
        raise ValueError(f"{where}: expected a map of attributes, got {type(image).__name__}")
    for name, value in image.items():
        # Inline fast path for the bulk of every image, an exact {"S"|"N"|"B": str}; anything
        # else (sets, maps, lists, subclasses, and every error) takes the full check.
        # Plain lookups, no items() view or tuple: allocations here would trigger the cyclic
        # GC, which then walks every object the JSON parser just made.
        if type(value) is dict and len(value) == 1:
            inner = value.get("S") or value.get("N") or value.get("B")
            if type(inner) is str:
                continue
        _check_value(value, f"{where}.{name}")


def _check_value(value: Any, where: str) -> None:
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{where}: expected one typed value like {{'S': ...}}, got {value!r:.80}")
    ((tag, inner),) = value.items()
    if tag not in ATTRIBUTE_TYPES:
        raise ValueError(f"{where}: unknown attribute type {tag!r}")
    if tag == "M":
        check_image(inner, where)
    elif tag == "L":
        if not isinstance(inner, list):
            raise ValueError(f"{where}: L must hold a list")
        for i, item in enumerate(inner):
            _check_value(item, f"{where}[{i}]")
    elif tag in ("SS", "NS", "BS"):
        if not isinstance(inner, list) or not all(isinstance(x, str) for x in inner):
            raise ValueError(f"{where}: {tag} must hold a list of strings")
    elif tag in ("NULL", "BOOL"):
        if not isinstance(inner, bool):
            raise ValueError(f"{where}: {tag} must hold true/false")
    elif not isinstance(inner, str):
        raise ValueError(f"{where}: {tag} must hold a string")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_boto_value(value: AttributeValue) -> AttributeValue:
    """boto3 form (binary as bytes) -> wire form (binary as base64 text)."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": _b64(bytes(inner))}
    if tag == "BS":
        return {"BS": [_b64(bytes(x)) for x in inner]}
    if tag == "M":
        return {"M": from_boto_image(inner)}
    if tag == "L":
        return {"L": [from_boto_value(x) for x in inner]}
    return value


def to_boto_value(value: AttributeValue) -> AttributeValue:
    """Wire form -> boto3 form (binary as bytes)."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64decode(inner)}
    if tag == "BS":
        return {"BS": [base64.b64decode(x) for x in inner]}
    if tag == "M":
        return {"M": to_boto_image(inner)}
    if tag == "L":
        return {"L": [to_boto_value(x) for x in inner]}
    return value


def from_boto_image(image: Image) -> Image:
    return {name: from_boto_value(v) for name, v in image.items()}


def to_boto_image(image: Image) -> Image:
    return {name: to_boto_value(v) for name, v in image.items()}


def _canonical_value(value: AttributeValue) -> Any:
    ((tag, inner),) = value.items()
    if tag in ("SS", "NS", "BS"):
        return {tag: sorted(inner)}
    if tag == "M":
        return {tag: {k: _canonical_value(v) for k, v in inner.items()}}
    if tag == "L":
        return {tag: [_canonical_value(v) for v in inner]}
    return value


def fingerprint(image: Image) -> str:
    """A digest of an item (wire form) that ignores set order: same item, same fingerprint.

    Used to recognise, in the stream, the exact item a bridge delete removed.
    """
    canonical = {name: _canonical_value(v) for name, v in image.items()}
    return hashlib.blake2b(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
