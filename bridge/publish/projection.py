"""Attribute projection: which attributes of an item leave the source partition.

``exclude_attributes`` (or ``include_attributes``) is applied by :class:`~bridge.publish.sender.Sender` to
every change before it is encoded and signed, so an excluded attribute never crosses the hop: stream
changes, bootstrap copies and ``verify --repair`` all ship through a sender. Key attributes always
stay (an item without its key cannot be written): naming one is refused at start. ``bridge verify``
compares items through the same projection. Imports only ``bridge.change`` and ``bridge.errors``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bridge.change import Change, Image
from bridge.errors import ConfigError


@dataclass(frozen=True)
class Projection:
    """Keeps the key attributes, then either all but ``exclude`` or only ``include``."""

    keys: frozenset[str]
    exclude: frozenset[str] = frozenset()
    include: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        exclude: Iterable[str] | None,
        include: Iterable[str] | None,
        key_names: Iterable[str],
        table: str,
    ) -> Projection | None:
        """The projection a config asks for on ``table`` (``None``: ship everything); refuses excluded keys."""
        if exclude is None and include is None:
            return None
        keys = frozenset(key_names)
        if exclude is not None:
            named = sorted(keys & set(exclude))
            if named:
                raise ConfigError(
                    f"exclude_attributes names key attribute {', '.join(named)} of table {table!r}:"
                    " key attributes cannot be excluded"
                )
            return cls(keys, exclude=frozenset(exclude)) if exclude else None
        assert include is not None
        return cls(keys, include=frozenset(include))

    def keeps(self, name: str) -> bool:
        if name in self.keys:
            return True
        if self.include is not None:
            return name in self.include
        return name not in self.exclude

    def image(self, image: Image) -> Image:
        return {k: v for k, v in image.items() if self.keeps(k)}

    def change(self, change: Change) -> Change:
        if change.new_image is None or all(self.keeps(k) for k in change.new_image):
            return change
        return Change(
            change.keys,
            change.op,
            change.version,
            self.image(change.new_image),
            change.position,
            change.by_service,
            change.key_token,
        )
