"""``bridge``: the admin command (keygen, demo, plugins, check-config)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from bridge import __version__, config
from bridge.cli.common import handled
from bridge.cli.dlq import dlq
from bridge.errors import BridgeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ddb-bridge")
def main() -> None:
    """ddb-bridge admin: keys, demo, plugins, configuration."""


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="directory for bridge.key (0600) and bridge.pub",
)
@handled
def keygen(out_dir: str) -> None:
    """Create an Ed25519 signing key pair for bridge-publish."""
    from bridge.envelope import Signer
    from bridge.envelope import keygen as make_keys

    private, public = make_keys(Path(out_dir))
    key_id = Signer.from_file(private).key_id
    click.echo(f"wrote {private} (keep secret, mode 0600) and {public} (give to bridge-apply); key id {key_id}")


@main.command()
@click.option("--changes", default=400, show_default=True, help="number of writes to the source table")
@click.option("--transport", help="transport URL (default: RabbitMQ on 127.0.0.1:5672 if it answers, else memory)")
@click.option("--seed", default=7, show_default=True, help="workload seed")
@click.option("--rate", default=50.0, show_default=True, help="source writes per second (0: as fast as possible)")
@click.option(
    "--bidirectional",
    is_flag=True,
    help="active-active: both regions write the same keys and converge (--transport may hold {region})",
)
@handled
def demo(changes: int, transport: str | None, seed: int, rate: float, bidirectional: bool) -> None:
    """Replicate a table between two emulated regions and check they end identical."""
    if bidirectional:
        from bridge.demo.bidirectional import run_bidirectional_demo

        result = run_bidirectional_demo(changes=min(changes, 200), transport=transport, seed=seed, rate=min(rate, 20.0))
        sys.exit(0 if result.identical else 1)
    from bridge.demo.oneway import run_demo

    result = run_demo(changes=changes, transport=transport, seed=seed, rate=rate)
    sys.exit(0 if result.identical else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@handled
def plugins(as_json: bool) -> None:
    """List installed transport plugins, their package, version and URL schemes.

    A plugin that failed to load is listed with its error, the others still load, and
    the command exits 4. BRIDGE_DISABLE_PLUGINS=name,... blocks plugins (shown as disabled).
    """
    from bridge.errors import PluginError
    from bridge.plugin.manager import plugin_set

    infos = plugin_set().infos
    if as_json:
        click.echo(orjson.dumps([i.__dict__ for i in infos], option=orjson.OPT_INDENT_2).decode())
    else:
        table = Table("plugin", "package", "version", "schemes")
        table.add_column("status", overflow="fold")  # an error message is folded, never cut
        for i in infos:
            status = "disabled" if i.disabled else (f"[red]error: {i.error}[/]" if i.error else "ok")
            table.add_row(i.name, i.package, i.version, ", ".join(i.schemes), status)
        Console(width=max(100, shutil.get_terminal_size().columns)).print(table)
    broken = [i.name for i in infos if i.error]
    if broken:
        raise PluginError(f"{len(broken)} plugin(s) failed to load: {', '.join(broken)}")


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "publish", "apply"]), default="auto", show_default=True)
@click.option(
    "--connect",
    is_flag=True,
    help="also load the transport plugin, check the key file, connect to the broker and describe the tables",
)
@handled
def check_config(path: str, kind: str, connect: bool) -> None:
    """Validate a publish or apply config file (kind guessed from its keys); print every effective setting."""
    from bridge.cli.checks import connect_checks, effective_settings

    if kind == "auto":
        kind = config.kind_of(Path(path))
    model: type[config.PublishConfig] | type[config.ApplyConfig] = (
        config.PublishConfig if kind == "publish" else config.ApplyConfig
    )
    pipelines: list[config.Pipeline[Any]] = list(config.load_pipelines(model, path, {}))
    listed = any(p.listed for p in pipelines)
    click.echo(f"{path}: valid {kind} configuration" + (f", {len(pipelines)} pipeline(s)" if listed else ""))
    for pipeline in pipelines:
        indent = "    " if listed else "  "
        if listed:
            pattern = " (a pattern: one pipeline per matching table at start)" if pipeline.pattern else ""
            click.echo(f"  pipeline {pipeline.name}{pattern}:")
        for key, shown in effective_settings(pipeline.cfg).items():
            click.echo(f"{indent}{key}: {shown}")
    if connect:
        for pipeline in pipelines:
            for what, check in connect_checks(pipeline.cfg):
                click.echo(f"{pipeline.name + ': ' if listed else ''}{what}: ", nl=False)
                try:
                    found = check()
                except BridgeError as exc:
                    click.echo(f"FAILED ({type(exc).__name__})")
                    raise  # one line on stderr, and the exit code of what failed (3 key file, 5 broker, ...)
                click.echo(f"ok, {found}")


main.add_command(dlq)
from bridge.cli.verify import verify  # noqa: E402 - registered last, beside its command

main.add_command(verify)
from bridge.cli.bench import bench  # noqa: E402 - registered last, beside its command

main.add_command(bench)
from bridge.cli.status import status  # noqa: E402 - registered last, beside its command

main.add_command(status)
from bridge.cli.init_target import init_target  # noqa: E402 - registered last, beside its command

main.add_command(init_target)
from bridge.cli.package_lambda import package_lambda  # noqa: E402 - registered last, beside its command

main.add_command(package_lambda)


if __name__ == "__main__":
    main()
