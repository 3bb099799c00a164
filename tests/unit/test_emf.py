"""EMF lines validate against the specification: a JSON schema written from it, plus its limits.

Schema from https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
("The root node ... _aws ... Timestamp ... CloudWatchMetrics ... MetricDirective").
"""

from __future__ import annotations

import io
import json
import time

import jsonschema

from bridge.observe import metrics
from bridge.observe.emf import EmfWriter

UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]  # fmt: skip

EMF_SCHEMA = {
    "type": "object",
    "title": "Root Node",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "title": "Metadata",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "title": "The Timestamp Schema", "minimum": 0},
                "LogGroupName": {"type": "string", "minLength": 1},
                "CloudWatchMetrics": {
                    "type": "array",
                    "title": "MetricDirectives",
                    "items": {
                        "type": "object",
                        "title": "MetricDirective",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "title": "DimensionSet",
                                    "minItems": 0,
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "title": "MetricDefinitions",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "title": "MetricDefinition",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"type": "string", "enum": UNITS},
                                        "StorageResolution": {"type": "integer", "enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_line(line: str) -> dict:
    """The schema, and the rules it cannot say: members named by the directives exist with the right types."""
    doc = json.loads(line)
    jsonschema.validate(doc, EMF_SCHEMA)
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(doc[name], str), f"dimension {name} must be a string member"
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100, metric["Name"]
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), metric["Name"]
    now_ms = time.time() * 1000
    assert abs(doc["_aws"]["Timestamp"] - now_ms) < 60_000, "Timestamp is epoch milliseconds"
    return doc


def test_emf_lines_validate_and_carry_the_figures() -> None:
    out = io.StringIO()
    writer = EmfWriter("emf-t", "us-west-2")
    mirror = metrics.apply_mirror("emf-t")
    mirror.sync({"applied": 7, "duplicates": 1, "parked": 2})
    now_us = int(time.time() * 1e6)
    for i in range(250):  # more lags than one value array may hold
        metrics.change_applied("emf-t", "cn-north-1", now_us - i * 1000, "applied")
    lines = writer.flush(out)
    assert out.getvalue() == "".join(line + "\n" for line in lines)
    docs = [check_line(line) for line in lines]
    doc = docs[0]
    assert doc["Table"] == "emf-t" and doc["Replica"] == "us-west-2"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Table", "Replica"]]
    assert (doc["ChangesApplied"], doc["ChangesDuplicate"], doc["DeadLettersParked"]) == (7, 1, 2)
    lags = doc["ReplicationLatency"]
    assert len(lags) == 100 and lags == sorted(lags) and 240 <= lags[-1] < 5000
    assert "RecordsRead" not in doc  # the other side's figures, for another table: not this line's
    # counters are the increase since the previous line
    mirror.sync({"applied": 10, "duplicates": 1, "parked": 2})
    again = check_line(writer.flush(io.StringIO())[0])
    assert (again["ChangesApplied"], again["ChangesDuplicate"]) == (3, 0)
    assert "ReplicationLatency" not in again


def test_emf_splits_directives_at_100_metrics(monkeypatch) -> None:
    from bridge.observe import emf

    many = tuple(emf.Figure(f"Ready{i}", "None", "bridge_ready", kind="max", by_table=False) for i in range(150))
    monkeypatch.setattr(emf, "FIGURES", many)
    lines = EmfWriter("emf-split", "r").flush(io.StringIO())
    docs = [check_line(line) for line in lines]
    assert [len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in docs] == [100, 50]
