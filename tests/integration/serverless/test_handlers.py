"""The handlers on the events AWS documents, on bad settings, and on failures every message meets.

Real parts: the moto server (DynamoDB, Kinesis, SQS, SSM) and the handlers' own clients. The events
are the shared reference DynamoDB Streams event and AWS's documented Kinesis and SQS examples
(tests/integration/serverless/events/README.md).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.change import Operation
from bridge.envelope import Batch, Compression, Signer, TrustStore, decode, encode
from bridge.errors import ConfigError, KeyFileError, SystemicError, TransportError
from bridge.plugin.manager import open_transport
from bridge.source.records import parse_record
from tests.helpers import drain_failures
from tests.integration.serverless.conftest import Side

pytestmark = pytest.mark.aws

EVENTS = Path(__file__).parent / "events"


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())  # type: ignore[no-any-return]


def parked_url(dead_letter: str) -> str:
    return dead_letter.replace("-dlq?", "-dlq-parked?")


def kinesis_event(*bodies: bytes) -> dict[str, Any]:
    """A Kinesis event in the documented shape carrying ``bodies``."""
    template = event("kinesis-event.json")["Records"][0]
    records = []
    for n, body in enumerate(bodies):
        record = json.loads(json.dumps(template))
        record["kinesis"]["data"] = base64.b64encode(body).decode()
        record["kinesis"]["sequenceNumber"] = str(4959033827149025660855969253836157109592157598913658889 + n)
        records.append(record)
    return {"Records": records}


def test_the_reference_stream_event_is_published_signed_and_counted(
    make_side: Callable[..., Side], unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_side("eu-central-1", key="Id")
    staging, _ = source.sqs(f"{unique}-staging")
    publish = source.publisher(staging)

    assert publish(event("dynamodb-stream-event.json")) == {"batchItemFailures": []}

    queue = open_transport(staging, "consume")
    try:
        (delivery,) = queue.receive(10, timeout=2)
    finally:
        queue.close()
    batch = decode(delivery.body, TrustStore.of(source.signer))
    assert batch.table == source.table and batch.origin == "eu-central-1"
    assert [c.op for c in batch.changes] == [Operation.PUT, Operation.PUT, Operation.DELETE]
    assert {c.keys["Id"]["N"] for c in batch.changes} == {"101"}
    assert (
        batch.changes[1].new_image is not None and batch.changes[1].new_image["Message"]["S"] == "This item has changed"
    )
    assert batch.changes[0].version.ts_us == 1428537600 * 1_000_000  # epoch seconds in Lambda's events
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert sum(doc.get("ChangesPublished", 0) for doc in emf) == 3


def test_the_documented_kinesis_and_sqs_events_are_quarantined_with_the_reason(
    make_side: Callable[..., Side], unique: str
) -> None:
    target = make_side("us-east-2")
    target.trust("someone", Signer.from_seed(b"s" * 32))
    dead_letter = target.dead_letter(unique)
    for name in ("kinesis-event.json", "sqs-event.json"):
        apply = target.applier(f"kinesis://{unique}?region=us-east-2&create=false", dead_letter)
        assert apply(event(name)) == {"batchItemFailures": []}  # nothing to retry: not envelopes at all
    parked = drain_failures(parked_url(dead_letter), expect=4, timeout=3)
    assert len(parked) == 4
    assert {(r.kind.value, r.state.value, r.error) for r in parked} == {("envelope", "quarantined", "DecodeError")}
    assert {r.payload for r in parked} == {b"Hello, this is a test.", b"This is only a test.", b"Test message."}


def test_a_forged_envelope_at_a_cold_start_fails_the_whole_batch(make_side: Callable[..., Side], unique: str) -> None:
    """As bridge-apply pauses: no trusted key matches the stream (a key rotated on one side only), so
    the batch goes back to the mapping and nothing is parked for it."""
    target = make_side("us-east-2")
    dead_letter = target.dead_letter(unique)
    apply = target.applier(f"kinesis://{unique}?region=us-east-2&create=false", dead_letter)
    target.trust("someone", Signer.from_seed(b"s" * 32))
    forged = encode(Batch("x", "mallory", target.table, 0, ()), Signer.from_seed(b"m" * 32), Compression.ZSTD)
    with pytest.raises(SystemicError, match="trusted_keys does not hold"):
        apply(kinesis_event(forged))
    assert drain_failures(parked_url(dead_letter), timeout=1) == []


def test_a_missing_target_table_fails_the_whole_batch_and_parks_nothing(
    make_side: Callable[..., Side], unique: str
) -> None:
    source, target = make_side("eu-central-1", key="Id"), make_side("us-east-2", key="Id")
    target.trust("source", source.signer)
    dead_letter = target.dead_letter(unique)
    apply = target.applier(f"kinesis://{unique}?region=us-east-2&create=false", dead_letter, accept_tables="*")
    records = event("dynamodb-stream-event.json")["Records"]
    changes = tuple(parse_record(r, key_names=("Id",), origin="eu-central-1") for r in records)
    body = encode(Batch("e1", "eu-central-1", source.table, 0, changes), source.signer, Compression.ZSTD)
    assert apply(kinesis_event(body)) == {"batchItemFailures": []}  # the cold start, and one good batch

    target.client("dynamodb").delete_table(TableName=target.table)
    with pytest.raises(SystemicError):
        apply(kinesis_event(body))
    assert drain_failures(parked_url(dead_letter), timeout=1) == []


def test_a_bad_setting_is_one_error_line_naming_it_once_per_container(
    make_side: Callable[..., Side], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_side("us-east-2")
    apply = target.applier(f"kinesis://{unique}?region=us-east-2", target.dead_letter(unique), workers="0")
    caplog.set_level(logging.ERROR, logger="bridge")
    for _ in range(2):
        with pytest.raises(ConfigError, match="workers"):
            apply({"Records": []})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "workers" in errors[0].getMessage() and "\n" not in errors[0].getMessage()


def test_a_key_file_is_refused_naming_the_setting(make_side: Callable[..., Side], unique: str) -> None:
    source = make_side("eu-central-1", key="Id")
    staging, _ = source.sqs(f"{unique}-staging")
    publish = source.publisher(staging, signing_key="/var/task/bridge.key")
    with pytest.raises(ConfigError, match="signing_key: the serverless form reads keys from ssm"):
        publish({"Records": []})


def test_a_refused_park_fails_the_batch_instead_of_writing_to_the_container_disk(
    make_side: Callable[..., Side], unique: str, tmp_path: Path
) -> None:
    target = make_side("us-east-2")
    target.trust("someone", Signer.from_seed(b"s" * 32))
    missing = f"sqs://{unique}-nowhere?region=us-east-2&endpoint_url={target.endpoint}&create=false"
    apply = target.applier(f"kinesis://{unique}?region=us-east-2", missing, quarantine_dir=str(tmp_path))
    with pytest.raises(TransportError, match="no safe local disk"):
        apply(event("kinesis-event.json"))
    assert list(tmp_path.iterdir()) == []


def test_a_parameter_that_holds_no_key_is_a_key_error_naming_it(
    make_side: Callable[..., Side], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_side("eu-central-1", key="Id")
    source.client("ssm").put_parameter(Name=f"/{unique}/garbage", Value="not a key", Type="SecureString")
    staging, _ = source.sqs(f"{unique}-staging")
    publish = source.publisher(staging, signing_key=f"ssm:/{unique}/garbage")
    caplog.set_level(logging.ERROR, logger="bridge")
    for _ in range(2):
        with pytest.raises(KeyFileError, match=f"ssm:/{unique}/garbage"):
            publish({"Records": []})
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert "not a key" not in caplog.text  # the parameter's value is never logged
