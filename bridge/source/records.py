"""Turn one DynamoDB stream record into a :class:`~bridge.change.Change`.

Records come in two dialects that must give the same change:

* boto3 ``GetRecords``: ``ApproximateCreationDateTime`` is a ``datetime``, ``B``/``BS`` values are ``bytes``;
* Lambda events (JSON): ``ApproximateCreationDateTime`` is epoch seconds, binary is base64 text.

Images are converted to wire form (binary as base64 text) and validated on the way, so a malformed record
fails here, with its sequence number, and not later in the applier.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from bridge.change import KEY_TYPES, AttributeValue, Change, Image, Operation, Position, Version
from bridge.errors import RecordError

__all__ = ["parse_record", "timestamp_us"]

_PUT_EVENTS = frozenset({"INSERT", "MODIFY"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MAX_SEQ_DIGITS = 40  # Version.encode pads seq to 40 digits; a longer one would break its ordering
_TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


class _Malformed(Exception):
    """A bad field; :func:`parse_record` adds which record it was."""


def parse_record(
    record: Mapping[str, Any],
    *,
    key_names: Sequence[str],
    origin: str,
    timestamp_attribute: str | None = None,
    shard_id: str | None = None,
) -> Change:
    """One stream record (boto3 or Lambda form) -> a :class:`Change`; raises :class:`RecordError`.

    ``key_names`` are the table's key attributes (hash, then range). ``origin`` names the source replica
    in the version (the record's ``awsRegion`` is not used: emulators always say us-east-1 and two
    accounts may share a region).
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"stream record must be a mapping, got {type(record).__name__}", raw=record)
    try:
        return _parse(record, key_names, origin, timestamp_attribute, shard_id)
    except _Malformed as exc:
        raise RecordError(f"stream record {_identity(record)}: {exc}", raw=record) from exc


def _identity(record: Mapping[str, Any]) -> str:
    ddb = record.get("dynamodb")
    seq = ddb.get("SequenceNumber") if isinstance(ddb, Mapping) else None
    event_id = record.get("eventID")
    parts = []
    if seq is not None:
        parts.append(f"SequenceNumber={seq!r:.60}")
    if event_id is not None:
        parts.append(f"eventID={event_id!r:.60}")
    return " ".join(parts) or "(no SequenceNumber or eventID)"


def _parse(
    record: Mapping[str, Any],
    key_names: Sequence[str],
    origin: str,
    timestamp_attribute: str | None,
    shard_id: str | None,
) -> Change:
    ddb = record.get("dynamodb")
    if not isinstance(ddb, Mapping):
        raise _Malformed("field 'dynamodb' is missing or not a mapping")
    seq = ddb.get("SequenceNumber")
    if not (isinstance(seq, str) and seq.isascii() and seq.isdigit() and len(seq) <= _MAX_SEQ_DIGITS):
        raise _Malformed(
            f"field 'dynamodb.SequenceNumber' must be a decimal string of 1-{_MAX_SEQ_DIGITS} digits, got {seq!r:.60}"
        )
    event = record.get("eventName")
    if event in _PUT_EVENTS:
        op = Operation.PUT
    elif event == "REMOVE":
        op = Operation.DELETE
    else:
        raise _Malformed(f"field 'eventName' must be INSERT, MODIFY or REMOVE, got {event!r:.40}")

    new_image = _image(ddb, "NewImage")
    old_image = _image(ddb, "OldImage")
    if op is Operation.PUT and new_image is None:
        raise _Malformed(
            f"{event} record has no 'dynamodb.NewImage': the table's stream view type must include new "
            "images (NEW_IMAGE or NEW_AND_OLD_IMAGES); KEYS_ONLY and OLD_IMAGE cannot be replicated"
        )
    image, image_name = (new_image, "NewImage") if op is Operation.PUT else (old_image, "OldImage")
    keys = _keys(ddb, image, image_name, key_names)

    item_ts = None
    if timestamp_attribute and image is not None and timestamp_attribute in image:
        item_ts = _item_timestamp(image[timestamp_attribute], f"dynamodb.{image_name}.{timestamp_attribute}")
    if op is Operation.PUT:
        ts = item_ts if item_ts is not None else _stream_timestamp(ddb)
    else:
        # A delete must beat the write it deleted, even if the stream clock lags the item's own timestamp.
        ts = _stream_timestamp(ddb)
        if item_ts is not None:
            ts = max(ts, item_ts + 1)

    identity = record.get("userIdentity")
    by_service = isinstance(identity, Mapping) and all(identity.get(k) == v for k, v in _TTL_IDENTITY.items())
    return Change(
        keys=keys,
        op=op,
        version=Version(ts, origin, int(seq)),
        new_image=new_image if op is Operation.PUT else None,
        position=Position(shard_id or "", seq),
        by_service=by_service,
    )


def _keys(ddb: Mapping[str, Any], image: Image | None, image_name: str, key_names: Sequence[str]) -> Image:
    # Prefer the image: moto base64-encodes B values in `Keys` twice; images are right everywhere.
    if image is not None and key_names:
        source, where = image, f"dynamodb.{image_name}"
    else:
        keys_field = _image(ddb, "Keys")
        if keys_field is None:
            raise _Malformed("field 'dynamodb.Keys' is missing and no image holds the key")
        source, where = keys_field, "dynamodb.Keys"
    names = list(key_names) or list(source)
    if not names:
        raise _Malformed("field 'dynamodb.Keys' is empty")
    keys: Image = {}
    for name in names:
        value = source.get(name)
        if value is None:
            raise _Malformed(f"key attribute {name!r} is missing from {where}")
        (tag,) = value
        if tag not in KEY_TYPES:
            raise _Malformed(f"key attribute {name!r} in {where} has type {tag}; a key must be S, N or B")
        keys[name] = value
    return keys


def _image(ddb: Mapping[str, Any], name: str) -> Image | None:
    raw = ddb.get(name)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _Malformed(f"field 'dynamodb.{name}' must be a map of attributes, got {type(raw).__name__}")
    return _wire_map(raw, f"dynamodb.{name}")


def wire_image(raw: Mapping[Any, Any] | None, where: str = "image") -> Image:
    """A stream image in wire form (binary as base64 text), from boto3's bytes or Lambda's base64.

    Raises RecordError naming the bad attribute if the image is malformed.
    """
    try:
        return _wire_map(raw or {}, where)
    except _Malformed as exc:
        raise RecordError(str(exc), raw) from exc


def _wire_map(raw: Mapping[Any, Any], where: str) -> Image:
    image: Image = {}
    for attr, value in raw.items():
        if not isinstance(attr, str):
            raise _Malformed(f"{where}: attribute name must be a string, got {attr!r:.40}")
        # The common value, a string, checked inline: what _wire_value returns for it, without a call,
        # an f-string and an ABC isinstance per attribute (most of the publisher's CPU otherwise).
        if type(value) is dict and len(value) == 1:
            text = value.get("S")
            if type(text) is str:
                image[attr] = {"S": text}
                continue
        image[attr] = _wire_value(value, f"{where}.{attr}")
    return image


def _wire_value(value: Any, where: str) -> AttributeValue:
    """Validate one typed value and return its wire form (binary as base64 text)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise _Malformed(f"{where}: expected one typed value like {{'S': ...}}, got {value!r:.80}")
    ((tag, inner),) = value.items()
    if tag == "S":
        return {"S": _text(inner, where)}
    if tag == "N":
        return {"N": _number(inner, where)}
    if tag == "B":
        return {"B": _binary(inner, where)}
    if tag == "SS":
        return {"SS": [_text(x, where) for x in _list(inner, where)]}
    if tag == "NS":
        return {"NS": [_number(x, where) for x in _list(inner, where)]}
    if tag == "BS":
        return {"BS": [_binary(x, where) for x in _list(inner, where)]}
    if tag == "M":
        if not isinstance(inner, Mapping):
            raise _Malformed(f"{where}: M must hold a map, got {type(inner).__name__}")
        return {"M": _wire_map(inner, where)}
    if tag == "L":
        return {"L": [_wire_value(x, f"{where}[{i}]") for i, x in enumerate(_list(inner, where))]}
    if tag in ("NULL", "BOOL"):
        if not isinstance(inner, bool):
            raise _Malformed(f"{where}: {tag} must hold true/false, got {inner!r:.40}")
        return {tag: inner}
    raise _Malformed(f"{where}: unknown attribute type {tag!r:.40}")


def _list(inner: Any, where: str) -> Sequence[Any]:
    if isinstance(inner, (str, bytes, bytearray, Mapping)) or not isinstance(inner, Sequence):
        raise _Malformed(f"{where}: expected a list, got {type(inner).__name__}")
    return inner


def _text(inner: Any, where: str) -> str:
    if not isinstance(inner, str):
        raise _Malformed(f"{where}: expected a string, got {type(inner).__name__}")
    return inner


def _number(inner: Any, where: str) -> str:
    try:
        if isinstance(inner, str) and Decimal(inner).is_finite():
            return inner
    except InvalidOperation:
        pass
    raise _Malformed(f"{where}: expected a number as a decimal string, got {inner!r:.60}")


def _binary(inner: Any, where: str) -> str:
    if isinstance(inner, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(inner)).decode("ascii")
    if isinstance(inner, str):
        try:
            base64.b64decode(inner, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Malformed(f"{where}: binary value is not valid base64: {exc}") from exc
        return inner
    raise _Malformed(f"{where}: binary must be bytes or base64 text, got {type(inner).__name__}")


def _stream_timestamp(ddb: Mapping[str, Any]) -> int:
    value = ddb.get("ApproximateCreationDateTime")
    if value is None:
        raise _Malformed("field 'dynamodb.ApproximateCreationDateTime' is missing")
    try:
        return timestamp_us(value)
    except ValueError as exc:
        raise _Malformed(f"field 'dynamodb.ApproximateCreationDateTime': {exc}") from exc


def _item_timestamp(value: AttributeValue, where: str) -> int:
    ((tag, inner),) = value.items()
    if tag not in ("N", "S"):
        raise _Malformed(f"{where}: a timestamp attribute must be a number or an ISO-8601 string, not {tag}")
    try:
        return timestamp_us(Decimal(inner) if tag == "N" else inner)
    except (ValueError, InvalidOperation) as exc:
        raise _Malformed(f"{where}: {exc}") from exc


def timestamp_us(value: Any) -> int:
    """Epoch microseconds from a datetime, a number or a string; raises ``ValueError``.

    Numbers are read by magnitude: above 1e14 microseconds, above 1e11 milliseconds (Kinesis-for-DynamoDB),
    else seconds (fractions allowed). Strings are numbers or ISO-8601; naive times are UTC.
    """
    if isinstance(value, dt.datetime):
        return _datetime_us(value)
    if isinstance(value, bool):
        raise ValueError(f"expected a timestamp, got {value!r}")
    if isinstance(value, float):
        number = Decimal(repr(value))  # shortest repr: 1.1 -> Decimal("1.1"), not its binary expansion
    elif isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            try:
                return _datetime_us(dt.datetime.fromisoformat(value.strip()))
            except ValueError:
                raise ValueError(f"not a number or an ISO-8601 time: {value!r:.60}") from None
    else:
        raise ValueError(f"expected a timestamp, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError(f"timestamp must be finite, got {value!r}")
    magnitude = abs(number)
    scale = 1 if magnitude > Decimal("1e14") else 1000 if magnitude > Decimal("1e11") else 1_000_000
    return int((number * scale).to_integral_value(rounding=ROUND_FLOOR))


def _datetime_us(value: dt.datetime) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    return (aware - _EPOCH) // dt.timedelta(microseconds=1)
