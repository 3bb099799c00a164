"""Command-line flags generated from the settings models: one declaration per setting.

A setting is declared once, as a field of :mod:`bridge.config`'s models; its YAML key is the field
name, its environment variable ``BRIDGE_<NAME>`` and its flag ``--name-with-dashes`` (a boolean:
``--name/--no-name``, unless the field names another pair in ``json_schema_extra={"flag": ...}``).
Every flag defaults to ``None`` ("not given"), so the file and the environment keep their say.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    if field.is_required():
        return text
    default = field.get_default(call_default_factory=True)
    if default is None or default is False:
        return text
    shown = default if not isinstance(default, Path) else str(default)
    return f"{text} (default {shown})" if text else f"(default {shown})"


def option_for(name: str, field: FieldInfo) -> Callable[[F], F]:
    kind = _plain(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    declared = extra.get("flag")
    help_text = _help(field)
    if kind is bool:
        flag = str(declared) if declared else f"{flag_name(name)}/--no-{name.replace('_', '-')}"
        if "/" in flag:
            return click.option(flag, name, default=None, help=help_text)
        return click.option(flag, name, is_flag=True, default=None, help=help_text)
    click_type: Any
    if typing.get_origin(kind) is Literal:
        click_type = click.Choice([str(v) for v in typing.get_args(kind)], case_sensitive=False)
    elif kind is Path:
        click_type = click.Path()
    elif kind in (int, float):
        click_type = kind
    else:
        click_type = str  # lists too: "a,b", split by the model's validator like the env var
    declared_aliases = extra.get("aliases")
    aliases = [str(a) for a in declared_aliases] if isinstance(declared_aliases, list) else []  # old names
    flags = [str(declared) if declared else flag_name(name), *aliases]
    return click.option(*flags, name, type=click_type, help=help_text)


def _yaml_only(field: FieldInfo) -> bool:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get("yaml_only"))


def settings_options(model: type[BaseModel], *, skip: Iterable[str] = ()) -> Callable[[F], F]:
    """Decorate a click command with one flag per field of ``model`` (in field order), plus ``--config``."""
    # A yaml_only setting (``pipelines``: a list of mappings) has no flag; the file holds it.
    skipped = set(skip) | {n for n, f in model.model_fields.items() if _yaml_only(f)}
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file"),
        *(option_for(n, f) for n, f in model.model_fields.items() if n not in skipped),
    ]

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
