"""GetRecords answers taken as the JSON they are, not through botocore's typed parsing.

A GetRecords answer is up to 1,000 records whose images are already typed DynamoDB values
(``{"S": ...}``, binary as base64 text): the envelope's wire form. botocore's parser walks every
attribute of every image against the service model, decodes each binary value to ``bytes`` (which
:func:`~bridge.source.records.parse_record` then encodes back to base64) and builds a ``datetime``;
that cost more CPU than the rest of the publisher (docs/benchmarks.md, ``publish_cpu_ratio``).

:func:`read_raw` registers a ``before-parse`` handler on one botocore client: for a successful
GetRecords it takes the body, parses it once with orjson, and hands botocore an empty body to
parse, so the records reach the reader in the wire's form. Everything else stays botocore's:
signing, credentials, endpoints, retries (they look at the HTTP response and at errors, which are
left to botocore's parser: any answer that is not a 2xx JSON object is untouched).

The one field botocore would type that the bridge reads, ``ApproximateCreationDateTime``, is
converted with botocore's own timestamp parser, so a record reads exactly as it did through the
typed path, except that binary values are base64 text instead of bytes; ``parse_record`` turns
both into the same change (tests/unit/test_rawread.py compares the envelopes byte for byte).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

log = logging.getLogger(__name__)

__all__ = ["read_raw"]

_EVENT = "before-parse.dynamodb-streams.GetRecords"
_ID = "ddb-bridge-raw-get-records"


def read_raw(client: Any) -> bool:
    """Take ``client``'s GetRecords answers raw from now on; False if it is not a botocore client."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None or not hasattr(events, "register"):
        return False  # a scripted client (tests, the bench's backlog): its records are already parsed
    events.register(_EVENT, _take_body, unique_id=_ID)
    return True


def _take_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if not 200 <= response_dict.get("status_code", 0) < 300:
        return  # botocore parses errors: retries and ExpiredIterator/Trimmed handling depend on it
    body = response_dict.get("body")
    if not body:
        return
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # let botocore fail on it as it always did
    if not isinstance(answer, dict):
        return
    times: dict[Any, Any] = {}  # a page's records share a few whole seconds: parse each once
    for record in answer.get("Records") or ():
        ddb = record.get("dynamodb") if isinstance(record, dict) else None
        if isinstance(ddb, dict) and "ApproximateCreationDateTime" in ddb:
            value = ddb["ApproximateCreationDateTime"]
            key = (type(value), value)  # 1 and 1.0 are equal keys, and must stay apart
            if key not in times:
                times[key] = value
                # A bad value is left as it came: parse_record names the field with the record's sequence number.
                with contextlib.suppress(ValueError, TypeError, OverflowError, OSError):
                    times[key] = DEFAULT_TIMESTAMP_PARSER(value)
            ddb["ApproximateCreationDateTime"] = times[key]
    response_dict["body"] = b"{}"
    customized_response_dict.update(answer)
