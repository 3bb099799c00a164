"""Hostile input: random, truncated, bit-flipped, wrong-key, forged, replayed and oversized envelopes.

The applier must never crash, never apply any of them, and account for each one: every case is
either quarantined (its exact bytes on the parked queue) or recognised as a replay of a good
envelope already applied (a duplicate). The bulk runs through ``Applier.process`` with the
memory transport; the target is a real table on moto's server, and a ``before-call`` hook on its
real client counts write calls (an observer: it changes nothing) so "never applied" is checked
at the API, not only in the table.

Run as a module, this file is also an atheris (libFuzzer) harness: ``test_atheris`` starts it.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import subprocess
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.apply.loop import Applier
from bridge.apply.target import TargetTable
from bridge.deadletter.records import FailureRecord, Parker, State
from bridge.demo.workload import create_table
from bridge.envelope import MAGIC, Batch, Compression, Signer, TrustStore, encode
from bridge.envelope.codec import _seal
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage
from bridge.transport.reliable import ReliableTransport
from tests import services
from tests.deadletter_support import SIGNER, STRANGER, envelope, put, stored

CI_CASES = 10_000
WRITES = ("PutItem", "DeleteItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems")
BODY_FIELDS = {"id", "origin", "table", "created_ms", "changes"}

GOOD = [envelope([put(k * 5 + i, name={"S": f"good {k}"}) for i in range(5)], eid=f"good{k}") for k in range(3)]
GOOD += [
    encode(Batch(f"good-{c.value}", "cn-north-1", "users", 0, (put(i, name={"S": c.value}),)), SIGNER, c)
    for i, c in ((20, Compression.ZLIB), (21, Compression.NONE))
]
GOOD_IDS = set(range(15)) | {20, 21}

# Signed by a key nobody trusts, or claiming the trusted key's id with another key's signature.
WRONG_KEY = [envelope([put(700 + i, name={"S": "intruder"})], signer=STRANGER, eid=f"wrong{i}") for i in range(3)]
FORGED_ID = [w.replace(STRANGER.key_id.encode(), SIGNER.key_id.encode(), 1) for w in WRONG_KEY]


def _valid_doc() -> dict[str, Any]:
    return {
        "id": "mutant",
        "origin": "cn-north-1",
        "table": "users",
        "created_ms": 0,
        "changes": [put(800, name={"S": "must never land"}).to_wire()],
    }


def _deep(levels: int) -> bytes:
    """A change whose image nests deeper than any JSON library will write (or Python recurse)."""
    change = orjson.dumps({**_valid_doc()["changes"][0], "new": {"deep": "HOLE"}})
    deep = b'{"L":[' * levels + b'{"S":"bottom"}' + b"]}" * levels
    return orjson.dumps({**_valid_doc(), "changes": ["HOLE"]}).replace(b'"HOLE"', change.replace(b'"HOLE"', deep), 1)


def _invalid_docs() -> list[Any]:
    """Bodies signed by the *trusted* key that are still not valid batches: the parser's turn."""
    change = put(800, name={"S": "must never land"}).to_wire()
    docs: list[Any] = [None, [], "text", 5, {}]
    for field, bad in (
        ("id", ""),
        ("id", "x" * 129),
        ("id", "spaces are bad"),
        ("id", 5),
        ("origin", ""),
        ("table", None),
        ("created_ms", -1),
        ("created_ms", "0"),
        ("created_ms", True),
        ("created_ms", 2**63),
        ("changes", "not a list"),
        ("changes", [1]),
        ("changes", [None]),
    ):
        docs.append({**_valid_doc(), field: bad})
    for field in BODY_FIELDS:
        doc = _valid_doc()
        del doc[field]
        docs.append(doc)
    docs.append({**_valid_doc(), "extra": 1})
    for bad_change in (
        {**change, "op": "upsert"},
        {**change, "v": [1, "o"]},
        {**change, "v": "1 o 1"},
        {k: v for k, v in change.items() if k != "new"},
        {**change, "zzz": 1},
        {**change, "keys": {"tenant": {"Q": "x"}}},
        {**change, "keys": []},
        {**change, "new": {"a": {"SS": [1]}}},
        {**change, "new": {"a": {"BOOL": "yes"}}},
        {**change, "new": {"a": {"S": "x", "N": "1"}}},
        {**change, "pos": 5},
    ):
        docs.append({**_valid_doc(), "changes": [change, bad_change]})
    docs.append(_deep(3000))
    return docs


def _signed(body: bytes, code: int, signer: Signer = SIGNER) -> bytes:
    return _seal(body, code, signer)


def _packed(doc: Any, code: int) -> bytes:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return raw if code == 0 else zlib.compress(raw) if code == 1 else zstandard.ZstdCompressor().compress(raw)


SIGNED_INVALID = [_signed(_packed(doc, n % 3), n % 3) for n, doc in enumerate(_invalid_docs())]


HUGE = 65 * 1024 * 1024  # over the decoder's 64 MiB cap


def _oversized() -> list[bytes]:
    bomb = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * HUGE)
    header_only = _signed(b"x", 0)
    return [
        _signed(bomb, 2),  # trusted key, declared size over the cap: refused before allocating
        header_only[: -65 - 1] + (0xFFFFFFFF).to_bytes(4, "big") + b"x" + header_only[-64:],  # says 4 GiB
        _signed(os.urandom(1024 * 1024), 0, STRANGER),  # 1 MiB from an unknown key
        _signed(os.urandom(1024 * 1024), 0)[:-1] + b"\0",  # 1 MiB, signature broken
    ]


def _bombs() -> list[bytes]:
    """Trusted-key bombs that must be decompressed up to the cap to be found out (slow-ish: fed once)."""
    return [
        _signed(zlib.compress(b"\0" * HUGE, 9), 1),
        _signed(zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * HUGE), 2),
    ]


class Harness:
    """One applier that applied the good envelopes; it is then fed only hostile bytes."""

    def __init__(self, endpoint: str, table: str, quarantine_dir: Path) -> None:
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-west-2")
        self.client, self.table = client, table
        self.writes: Counter[str] = Counter()
        for op in WRITES:
            client.meta.events.register(f"before-call.dynamodb.{op}", self._count_write)
        name = f"memory://fuzz-{uuid.uuid4().hex}"
        self.inbox = open_transport(name, "publish")
        self.parked = open_transport(name + ".dlq.parked", "dlq")
        self.retry_queue = open_transport(name + ".dlq", "dlq")
        self.applier = Applier(
            ReliableTransport(open_transport(name, "consume")),
            TargetTable.open(client, table),
            TrustStore.of(SIGNER),
            Parker(ReliableTransport(open_transport(name + ".dlq", "dlq")), quarantine_dir, opener=open_transport),
            workers=2,
        )
        # Hostile input here is judged envelope by envelope. Many envelopes of one unknown key in a
        # row stop the line instead (a stream no trusted key matches: tests/integration/aws/
        # test_deadletter.py); a fuzzer repeating one key id must not hit that rule.
        self.applier.unknown_key_run_limit = 10**9
        self.cases = 0
        self.feed(GOOD, setup=True)
        assert self.applier.stats.applied == len(GOOD_IDS)
        self.writes.clear()

    def _count_write(self, model: Any, **_: Any) -> None:
        self.writes[model.name] += 1

    def feed(self, bodies: list[bytes], setup: bool = False) -> list[FailureRecord]:
        """Send ``bodies`` through the applier; check that every one is accounted for."""
        stats = self.applier.stats
        before = dict(stats.as_dict())
        self.inbox.publish([OutgoingMessage(b, f"m{n}", "p") for n, b in enumerate(bodies)])
        consumed = 0
        while consumed < len(bodies):
            deliveries = self.applier.source.receive(16, timeout=1.0)
            assert deliveries, "the applier lost messages"
            self.applier.process(deliveries)
            consumed += len(deliveries)
        if setup:
            return []
        self.cases += len(bodies)
        after = stats.as_dict()
        delta = {k: after[k] - before[k] for k in after}
        replays = [b for b in bodies if b in GOOD]
        assert self.writes == Counter(), f"hostile input reached the table: {self.writes}"
        assert delta["duplicate_envelopes"] == delta["envelopes"] == len(replays)
        assert delta["quarantined"] + delta["duplicate_envelopes"] == len(bodies)
        assert delta["applied"] == delta["dead_lettered"] == delta["parked"] == 0
        parked = self._take(self.parked)
        assert Counter(r.payload for r in parked) == Counter(b for b in bodies if b not in GOOD)  # kept whole
        assert all(r.state is State.QUARANTINED and r.error.endswith("Error") and r.message for r in parked)
        assert self._take(self.retry_queue) == []
        return parked

    @staticmethod
    def _take(transport: Any) -> list[FailureRecord]:
        out: list[FailureRecord] = []
        while got := transport.receive(1000, 0):
            for d in got:
                out.append(FailureRecord.decode(d.body))
                transport.ack(d)
        return out

    def check_table(self) -> None:
        assert set(stored(self.client, self.table)) == GOOD_IDS


def _flip(data: bytes, bits: list[int]) -> bytes:
    out = bytearray(data)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def hostile(oversized: list[bytes]) -> st.SearchStrategy[bytes]:
    good = st.sampled_from(GOOD)

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        base = draw(good)
        how = draw(st.sampled_from(["truncate", "flip", "splice", "extend"]))
        if how == "truncate":
            return base[: draw(st.integers(0, len(base) - 1))]
        if how == "flip":
            return _flip(base, draw(st.lists(st.integers(0, len(base) * 8 - 1), min_size=1, max_size=8, unique=True)))
        if how == "extend":
            return base + draw(st.binary(min_size=1, max_size=64))
        start = draw(st.integers(0, len(base) - 1))
        end = draw(st.integers(start, min(len(base), start + 32)))
        patch = draw(st.binary(max_size=32))
        assume(base[start:end] != patch)
        return base[:start] + patch + base[end:]

    header = st.builds(
        lambda code, n, rest: MAGIC + bytes((1, code, n)) + rest,
        st.integers(0, 3),
        st.integers(0, 255),
        st.binary(max_size=512),
    )
    return st.one_of(
        st.binary(max_size=2048),  # random
        header,  # random after a plausible header
        mutated(),  # truncated, bit-flipped, spliced, extended
        st.sampled_from(WRONG_KEY + FORGED_ID),  # wrong key, forged key id
        st.sampled_from(SIGNED_INVALID),  # trusted key, invalid body
        good,  # replayed
        st.integers(0, len(oversized) - 1).map(lambda i: oversized[i]),  # (no megabyte reprs on failure)
    )


@pytest.fixture(scope="module")
def harness(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    table = f"fuzz{uuid.uuid4().hex[:10]}"
    create_table(client, table, stream=False)
    h = Harness(moto_endpoint, table, tmp_path_factory.mktemp("quarantine"))
    yield h
    h.applier.close()


def _run(h: Harness, examples: int, oversized: list[bytes]) -> None:
    start = h.cases

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(hostile(oversized), min_size=50, max_size=60))
    def feed(bodies: list[bytes]) -> None:
        h.feed(bodies)

    feed()
    assert h.cases - start >= examples * 50
    h.check_table()


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="bridge")  # one dead-letter line per case otherwise


@pytest.mark.aws
@pytest.mark.usefixtures("quiet")
def test_hostile_envelopes_are_never_applied_and_all_accounted_for(harness: Harness) -> None:
    _run(harness, CI_CASES // 50, _oversized())
    assert harness.cases >= CI_CASES


@pytest.mark.aws
def test_decompression_bombs_from_a_trusted_key_are_quarantined_whole(harness: Harness) -> None:
    parked = harness.feed(_bombs())  # the harness checks each is quarantined with its exact bytes
    assert [r.message for r in parked if "over the limit of 67108864" not in r.message] == []
    harness.check_table()


@pytest.mark.aws
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("quiet")
def test_hostile_envelopes_soak(harness: Harness) -> None:
    _run(harness, 4_000, _oversized())  # >= 200,000 cases


@pytest.mark.aws
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("runs", [10_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_atheris_finds_no_input_that_crashes_or_is_applied(
    runs: int, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    if not _atheris_available():
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            pytest.skip("atheris ships wheels for Linux x86_64 only")
        services.missing("atheris (in the [test] extra)")
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, seed in enumerate([*GOOD, *WRONG_KEY[:1], *SIGNED_INVALID[:5]]):
        (corpus / f"seed{n}").write_bytes(seed)
    env = {**os.environ, "FUZZ_ENDPOINT": moto_endpoint, "FUZZ_TABLE": unique, "FUZZ_QUARANTINE": str(tmp_path)}
    seed = 1 if runs <= 10_000 else random.randrange(1, 2**31)  # CI: reproducible; soak: explore
    args = [
        str(corpus),
        f"-runs={runs}",
        f"-seed={seed}",
        "-max_len=4096",
        "-timeout=60",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", ATHERIS_MAIN, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        timeout=3000,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Done {runs} runs" in proc.stderr
    assert set(stored(client, unique)) == GOOD_IDS


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# Coverage feedback for bridge's own code only: it is imported instrumented, before this module
# (instrumenting everything loaded, boto3 included, takes minutes).
ATHERIS_MAIN = """
import sys, atheris
with atheris.instrument_imports(include=["bridge"]):
    import bridge.apply.loop, bridge.apply.retry, bridge.deadletter.records, bridge.envelope.codec, bridge.change
from tests.integration.aws.test_fuzz import atheris_main
atheris_main(sys.argv[1:])
"""


def atheris_main(argv: list[str]) -> None:
    import atheris

    logging.disable(logging.CRITICAL)  # every case is dead-lettered: a log line each otherwise
    h = Harness(os.environ["FUZZ_ENDPOINT"], os.environ["FUZZ_TABLE"], Path(os.environ["FUZZ_QUARANTINE"]))

    def one_input(data: bytes) -> None:
        h.feed([data])  # raises (a reported crash) on a write to the table or a case not accounted for

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


if (
    __name__ == "__main__"
):  # by hand: FUZZ_ENDPOINT=... FUZZ_TABLE=... FUZZ_QUARANTINE=... python -m tests.integration.aws.test_fuzz
    os.execv(sys.executable, [sys.executable, "-c", ATHERIS_MAIN, *sys.argv[1:]])
