"""``bridge verify``'s settings: from the daemons' config files, overridden by its own flags.

The source side is reached as bridge-publish reaches it (``source_*`` of a publish config) and the
target side as bridge-apply does (``target_*`` of an apply config), through the same
:func:`bridge.wiring.aws_side`, so role, external id, SSM-held keys and proxy all apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import config
from bridge.aws import AwsSide
from bridge.errors import ConfigError

_SHARED = ("aws_connect_timeout", "aws_read_timeout", "aws_max_attempts")


@dataclass
class VerifySettings:
    flags: dict[str, Any]
    publish: config.PublishConfig | None = None
    apply: config.ApplyConfig | None = None
    _sides: dict[str, AwsSide] = field(default_factory=dict)

    @classmethod
    def from_configs(cls, paths: tuple[str, ...], flags: dict[str, Any]) -> VerifySettings:
        settings = cls(flags)
        for path in paths:
            kind = config.kind_of(Path(path))
            if kind == "publish":
                overrides = {k: v for k, v in flags.items() if k.startswith("source_") or k in _SHARED}
                settings.publish = config.load(config.PublishConfig, path, overrides)
            else:
                overrides = {k: v for k, v in flags.items() if k.startswith("target_") or k in _SHARED}
                settings.apply = config.load(config.ApplyConfig, path, overrides)
        return settings

    def get(self, name: str) -> Any:
        """A --repair or shared setting: the flag, else the publish config's (else the apply config's)."""
        if self.flags.get(name) is not None:
            return self.flags[name]
        for cfg in (self.publish, self.apply):
            if cfg is not None and name in type(cfg).model_fields:
                value = getattr(cfg, name)
                if value is not None:
                    return str(value) if isinstance(value, Path) else value
        return None

    def table(self, which: str) -> str:
        cfg = self.publish if which == "source" else self.apply
        table = self.flags.get(f"{which}_table") or (getattr(cfg, f"{which}_table") if cfg is not None else None)
        if not table:
            kind = "publish" if which == "source" else "apply"
            raise ConfigError(f"say which {which} table: --{which}-table, or --config with a {kind} config")
        return str(table)

    def side(self, which: str) -> AwsSide:
        if which not in self._sides:
            from bridge.wiring import aws_side

            cfg = self.publish if which == "source" else self.apply
            if cfg is not None:
                self._sides[which] = aws_side(cfg, which)
            else:
                params = {k.removeprefix(f"{which}_"): v for k, v in self.flags.items() if k.startswith(f"{which}_")}
                params["endpoint_url"] = params.pop("endpoint", None)
                shared = {k.removeprefix("aws_"): v for k, v in self.flags.items() if k in _SHARED and v is not None}
                self._sides[which] = AwsSide.from_params(params, what=f"{which} side", **shared)
        return self._sides[which]
