"""Every figure ``bridge bench`` measures: its JSON keys, the function that measures it, in run order.

Each function measures the bridge and the raw baseline that bounds it in the same run, on the
same machine, against the same emulator or broker: these machines are noisy, so only a ratio
taken side by side means much. CPU-only figures run first, before any emulator starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.bench import apply, codec, cpu, lag, memory, relay, scaling, source
from bridge.bench.context import Bench
from bridge.bench.report import Figure
from bridge.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    name: str
    keys: tuple[str, ...]
    measure: Callable[[Bench], list[Figure]]


STAGES = (
    Stage("codec", ("encode_changes_per_s", "decode_changes_per_s"), codec.codec),
    Stage("wire", ("wire_bytes_ratio",), codec.wire_bytes),
    Stage("relay", ("relay_vs_raw_ratio", "relay_vs_per_message_ratio"), relay.relay),
    Stage("source", ("source_vs_raw_ratio",), source.source),
    Stage(
        "apply",
        ("apply_vs_raw_ratio", "apply_calls_per_change", "writes_per_change", "reads_per_change", "writes_per_delete"),
        apply.apply,
    ),
    Stage("cpu", ("publish_cpu_ratio", "apply_cpu_ratio"), cpu.cpu),
    Stage("scaling", ("apply_scaling",), scaling.scaling),
    Stage("lag", ("lag_p99_s",), lag.lag),
    Stage("memory", ("peak_rss_mb",), memory.peak_rss),
)
KEYS = tuple(key for stage in STAGES for key in stage.keys)


def select(names: Iterable[str] | None) -> list[tuple[Stage, tuple[str, ...]]]:
    """The stages to run and the keys wanted from each; ``names`` are figure keys or stage names."""
    wanted = set(names or ())
    unknown = sorted(wanted - set(KEYS) - {s.name for s in STAGES})
    if unknown:
        raise ConfigError(
            f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(KEYS)}"
            f" (or a stage: {', '.join(s.name for s in STAGES)})"
        )
    chosen = []
    for stage in STAGES:
        keys = stage.keys if not wanted or stage.name in wanted else tuple(k for k in stage.keys if k in wanted)
        if keys:
            chosen.append((stage, keys))
    return chosen


def run(bench: Bench, names: Iterable[str] | None = None) -> list[Figure]:
    figures: list[Figure] = []
    for stage, keys in select(names):
        bench.say(f"[bold]{stage.name}[/]: {', '.join(keys)}")
        figures += [f for f in stage.measure(bench) if f.key in keys]
    return figures
