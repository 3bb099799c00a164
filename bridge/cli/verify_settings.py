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
    def from_configs(cls, paths: tuple[str, ...], flags: dict[str, Any], pipeline: str | None = None) -> VerifySettings:
        """``pipeline``: which pipeline of configs listing ``pipelines:`` (an apply pipeline of another
        name is the one whose accept_tables names the chosen source table)."""
        settings = cls(flags)
        publish: list[config.Pipeline[config.PublishConfig]] = []
        apply: list[config.Pipeline[config.ApplyConfig]] = []
        for path in paths:
            kind = config.kind_of(Path(path))
            if kind == "publish":
                overrides = {k: v for k, v in flags.items() if k.startswith("source_") or k in _SHARED}
                publish += config.load_pipelines(config.PublishConfig, path, overrides)
            else:
                overrides = {k: v for k, v in flags.items() if k.startswith("target_") or k in _SHARED}
                apply += config.load_pipelines(config.ApplyConfig, path, overrides)
        if any(p.pattern for p in publish) and pipeline is not None:
            from bridge.wiring import expand_pipelines

            publish = expand_pipelines(publish)
        settings.publish = _choose(publish, pipeline, None)
        source = settings.publish.source_table if settings.publish is not None else None
        settings.apply = _choose(apply, pipeline, source)
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


def _choose(found: list[config.Pipeline[Any]], name: str | None, source_table: str | None) -> Any:
    """The one config to verify with: the only one, or the named pipeline (apply: else the one fed by
    ``source_table``)."""
    if not found:
        return None
    if len(found) == 1 and (name is None or not found[0].listed):
        return found[0].cfg
    names = ", ".join(p.name for p in found)
    if name is None:
        raise ConfigError(f"the config lists pipelines ({names}): say which with --pipeline NAME")
    for p in found:
        if p.name == name:
            return p.cfg
    for p in found:
        if source_table is not None and source_table in getattr(p.cfg, "accepted_tables", []):
            return p.cfg
    raise ConfigError(f"--pipeline {name}: no such pipeline (pipelines: {names})")
