"""``exclude_mode: keep``: the target's own values of attributes the source never ships.

With a projection (``exclude_attributes`` / ``include_attributes``) the items arriving lack some
attributes. By default (``drop``) a put replaces the whole target item, so replicated items simply
lack them. With ``keep`` the applier reads the target item first (strongly consistent), copies the
attributes the projection removes into the item it writes, and makes the put conditional on those
attributes being unchanged since the read, so a local write to them between read and put is never
overwritten (the put is decided again). A put costs one read more in this mode.

With ``include_attributes`` the kept attributes are "every other one": the condition covers those the
item held when read; one added by a local write in the milliseconds between read and put is lost.
Imports only ``bridge.change``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.change import Image


@dataclass(frozen=True)
class Keep:
    """Which target attributes a put leaves as they are: those the source's projection removes."""

    keys: frozenset[str]
    prefix: str  # bridge-owned attributes are never "kept": each put writes its own
    exclude: frozenset[str] = frozenset()
    include: frozenset[str] | None = None

    @classmethod
    def of(
        cls, exclude: Iterable[str] | None, include: Iterable[str] | None, key_names: Iterable[str], prefix: str
    ) -> Keep:
        return cls(
            frozenset(key_names),
            prefix,
            frozenset(exclude or ()),
            frozenset(include) if include is not None else None,
        )

    def kept(self, name: str) -> bool:
        if name in self.keys or name.startswith(self.prefix):
            return False
        if self.include is not None:
            return name not in self.include
        return name in self.exclude

    def merge(self, item: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        """``item`` (boto form) plus the kept attributes of ``current``; the arriving item's own win."""
        merged = {k: v for k, v in (current or {}).items() if self.kept(k)}
        merged.update({k: v for k, v in item.items() if not self.kept(k)})
        return merged

    def condition(self, current: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A condition that the kept attributes still hold what ``current`` held (expr, names, values)."""
        names = sorted(self.exclude) if self.include is None else sorted(k for k in (current or {}) if self.kept(k))
        parts, attr_names, values = [], {}, {}
        for i, name in enumerate(names):
            attr_names[f"#k{i}"] = name
            if current is not None and name in current:
                values[f":k{i}"] = current[name]
                parts.append(f"#k{i} = :k{i}")
            else:
                parts.append(f"attribute_not_exists(#k{i})")
        return " AND ".join(parts), attr_names, values

    def user_view(self, image: Image) -> Image:
        """An item without its kept attributes: what ``bridge verify`` compares in this mode."""
        return {k: v for k, v in image.items() if not self.kept(k)}
