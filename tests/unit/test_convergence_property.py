"""Property: active-active replicas converge to the last writer of every key, with no echo
and no resurrection, whatever the schedule. See tests/aa_model.py for what is modelled."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.aa_model import World, user

KEYS = ["a", "b", "c"]

step = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("update"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(KEYS), st.just(0)),
    st.tuples(st.just("publish"), st.integers(0, 2), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("deliver"), st.integers(0, 5), st.integers(0, 50), st.booleans()),  # any order, maybe again
    st.tuples(st.just("crash"), st.integers(0, 2), st.just(0), st.just(0)),
    # the applier reads the tombstones of its unsettled puts in a batch, after other writes
    st.tuples(st.just("settle"), st.integers(0, 2), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("applier-crash"), st.integers(0, 2), st.just(0), st.just(0)),  # before its tombstone reads
    st.tuples(st.just("tick"), st.integers(0, 1), st.just(0), st.just(0)),  # clocks move in whole seconds
)


def run(replicas: int, skews: list[int], steps: list[tuple[Any, ...]], consumers: int = 1) -> World:
    """``consumers``: bridge-apply processes per replica on its queue; a step's optional 5th member
    picks which one delivers, settles or dies (steps of 4 use the first)."""
    world = World([f"region-{i}" for i in range(replicas)], skews[:replicas])
    pairs = list(world.queues)
    for kind, who, what, flag, *rest in steps:
        r = world.replicas[who % replicas]
        consumer = rest[0] % consumers if rest else 0
        if kind == "put":
            r.app_put(what, f"{r.name}-{flag}")
        elif kind == "update":
            r.app_update(what, flag)
        elif kind == "delete":
            r.app_delete(what)
        elif kind == "publish":
            r.publish(what, checkpoint=flag)
        elif kind == "deliver":
            queue = world.queues[pairs[who % len(pairs)]]
            if queue:
                change = queue[what % len(queue)] if flag else queue.pop(what % len(queue))
                next(x for x in world.replicas if x.name == pairs[who % len(pairs)][1]).deliver(change, consumer)
        elif kind == "crash":
            r.crash()
        elif kind == "settle":
            r.settle_some(what, consumer)
        elif kind == "applier-crash":
            r.applier_crash(consumer)
        else:
            world.clock += who
    world.quiesce()
    return world


# 1,000 schedules in every CI run; BRIDGE_PROPERTY_EXAMPLES=50000 for a long search.
EXAMPLES = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "1000"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(2, 3),
    skews=st.lists(st.integers(-1, 1), min_size=3, max_size=3),
    steps=st.lists(step, max_size=60),
)
def test_replicas_converge_to_the_last_writer(replicas: int, skews: list[int], steps: list[tuple[Any, ...]]) -> None:
    world = run(replicas, skews, steps)
    expected = world.expected()
    for r in world.replicas:
        state = {k: user(item) for k, item in r.table.items()}
        # converged, and to the last writer of every key (absent when a delete won: no resurrection)
        assert state == {k: img for k, img in expected.items() if img is not None}, r.name
        assert r.echoes == 0, f"{r.name} received its own changes back"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(2, 3),
    consumers=st.integers(2, 3),
    skews=st.lists(st.integers(-1, 1), min_size=3, max_size=3),
    steps=st.lists(st.tuples(step, st.integers(0, 2)).map(lambda s: (*s[0], s[1])), max_size=60),
)
def test_replicas_converge_with_several_consumers_per_replica(
    replicas: int, consumers: int, skews: list[int], steps: list[tuple[Any, ...]]
) -> None:
    """bridge-apply --processes N: each replica's queue is drained by N consumers, each with its own
    unsettled puts and batched tombstone reads, any of them dying with its unacked changes redelivered
    to any other; the order across consumers is irrelevant to last writer wins."""
    world = run(replicas, skews, steps, consumers)
    expected = world.expected()
    for r in world.replicas:
        state = {k: user(item) for k, item in r.table.items()}
        assert state == {k: img for k, img in expected.items() if img is not None}, r.name
        assert r.echoes == 0, f"{r.name} received its own changes back"
