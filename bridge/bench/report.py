"""What a figure is, how it is judged against its goal, and how a run is shown and saved."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Goal:
    """``<= 0.25``, ``>= 100000``, or ``== 1.00`` (met when equal at the shown precision)."""

    op: str
    target: float
    digits: int = 2

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.op == "==":
            return round(value, self.digits) == round(self.target, self.digits)
        return _OPS[self.op](value, self.target)

    def __str__(self) -> str:
        if self.op == "==":
            return f"{self.target:.{self.digits}f}"
        return f"{self.op} {self.target:,g}"


@dataclass
class Figure:
    """One measured figure. ``value`` is what the goal judges; ``baseline`` the raw measure it is
    compared with (same run, same machine), in ``baseline_unit``."""

    key: str
    value: float
    unit: str
    baseline: float | None
    goal: Goal | None
    baseline_unit: str = ""
    measured: str = ""  # the bridge's own absolute figure behind a ratio, for people
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.value)

    @property
    def ratio(self) -> float | None:
        """Bridge over raw: the value itself for ratio figures."""
        if self.unit == "ratio":
            return self.value
        if self.baseline and self.unit == self.baseline_unit:
            return self.value / self.baseline
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": None if self.baseline is None else _round(self.baseline),
            "goal": str(self.goal) if self.goal else "none (reported only)",
            "met": self.met,
            "ratio": None if self.ratio is None else _round(self.ratio),
            "baseline_unit": self.baseline_unit,
            "detail": self.detail,
        }


def _round(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(0, 4 - math.floor(math.log10(abs(x)))))


def _show(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    text = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return f"{text} {unit}".strip()


def render(figures: Sequence[Figure], console: Console, caption: str = "") -> None:
    table = Table(title="ddb-bridge bench", caption=caption, show_lines=False)
    for column in ("figure", "value", "baseline", "ratio", "goal", "met?"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for f in figures:
        value = _show(f.value, "" if f.unit == "ratio" else f.unit)
        if f.measured:
            value += f" ({f.measured})"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met]
        table.add_row(
            f.key, value, _show(f.baseline, f.baseline_unit), _show(f.ratio), str(f.goal) if f.goal else "-", met
        )
    console.print(table)


def write_json(figures: Sequence[Figure], path: Path) -> None:
    doc = {f.key: f.as_json() for f in figures}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
