"""Projection (publisher) and keep (applier) agree on which attributes stay home, for both list kinds."""

from __future__ import annotations

import pytest

from bridge.apply.keep import Keep
from bridge.change import Change, Operation, Version
from bridge.errors import ConfigError
from bridge.publish.projection import Projection

KEYS = ("pk", "sk")
ITEM = {"pk": {"S": "a"}, "sk": {"N": "1"}, "name": {"S": "n"}, "ssn": {"S": "x"}, "notes": {"S": "y"}}


def test_exclude_removes_only_the_named_attributes_and_never_keys() -> None:
    projection = Projection.of(["ssn", "notes"], None, KEYS, "t")
    assert projection is not None
    change = Change({"pk": ITEM["pk"], "sk": ITEM["sk"]}, Operation.PUT, Version(1, "o", 1), ITEM)
    shipped = projection.change(change)
    assert shipped.new_image == {"pk": {"S": "a"}, "sk": {"N": "1"}, "name": {"S": "n"}}
    assert shipped.keys == change.keys and shipped.version == change.version
    delete = Change(change.keys, Operation.DELETE, Version(2, "o", 2))
    assert projection.change(delete) is delete
    with pytest.raises(ConfigError, match="exclude_attributes names key attribute sk of table 't'"):
        Projection.of(["sk"], None, KEYS, "t")
    assert Projection.of([], None, KEYS, "t") is None and Projection.of(None, None, KEYS, "t") is None


def test_include_keeps_the_keys_and_the_named_ones() -> None:
    projection = Projection.of(None, ["name"], KEYS, "t")
    assert projection is not None
    assert projection.image(ITEM) == {"pk": {"S": "a"}, "sk": {"N": "1"}, "name": {"S": "n"}}


@pytest.mark.parametrize("exclude,include", [(["ssn", "notes"], None), (None, ["name"])])
def test_keep_keeps_exactly_what_the_projection_removes(exclude: list[str] | None, include: list[str] | None) -> None:
    projection = Projection.of(exclude, include, KEYS, "t")
    keep = Keep.of(exclude, include, KEYS, "_bridge")
    assert projection is not None
    for name in [*ITEM, "other"]:
        assert keep.kept(name) == (not projection.keeps(name)), name
    assert not keep.kept("_bridge_v")  # the bridge's own attributes are written by each put
    current = {"pk": {"S": "a"}, "sk": {"N": "1"}, "ssn": {"S": "local"}, "name": {"S": "old"}, "_bridge_v": {"S": "v"}}
    arriving = {"pk": {"S": "a"}, "sk": {"N": "1"}, "name": {"S": "new"}}
    merged = keep.merge(arriving, current)
    assert merged["ssn"] == {"S": "local"} and merged["name"] == {"S": "new"} and "_bridge_v" not in merged
    expr, names, values = keep.condition(current)
    assert "ssn" in names.values() and {"S": "local"} in values.values()
    if include is None:  # a named attribute absent from the item must still be absent at the put
        assert "attribute_not_exists" in expr and "notes" in names.values()
