"""``bridge package-lambda``: a deployment zip of the serverless handlers for the Lambda Python runtime.

The zip holds ddb-bridge (with its built-in transports and their entry points, so plugins are found as
on a server) and every dependency as a manylinux wheel for the chosen architecture and Python version,
installed with pip's ``--platform``/``--python-version``/``--only-binary`` options: what the running
machine is does not matter. ``--with-plugin NAME`` adds a transport plugin: ``plugins/ddb-bridge-NAME``
of the source tree if there is one, else the distribution of that name from the package index.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import click

from bridge.cli.common import handled
from bridge.errors import BridgeError, ConfigError

#: Lambda's limits for a zip uploaded directly: 50 MB zipped, 250 MB unzipped (layers included).
MAX_ZIPPED = 50 * 1024 * 1024
MAX_UNZIPPED = 250 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
DIST = "ddb-bridge"
# Only the command line and the demo need these; a handler never imports them (tests/unit/test_serverless_imports.py).
NOT_IN_LAMBDA = {"click", "rich", "moto"}


def platforms(arch: str, python: str) -> list[str]:
    """The wheel platform tags the runtime's glibc takes: Amazon Linux 2 (2.26) up to Python 3.11,
    Amazon Linux 2023 (2.34) from 3.12."""
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    tags = [f"manylinux2014_{machine}", f"manylinux_2_17_{machine}"]
    if tuple(int(p) for p in python.split(".")) >= (3, 12):
        tags += [f"manylinux_2_28_{machine}", f"manylinux_2_34_{machine}"]
    return tags


def requirements(dist: str) -> list[str]:
    """``dist``'s own requirements, without extras and what a handler never imports."""
    out = []
    for text in metadata.requires(dist) or []:
        spec, _, marker = text.partition(";")
        name = re.split(r"[\s<>=!~\[]", spec.strip(), maxsplit=1)[0]
        if "extra" in marker or name.lower() in NOT_IN_LAMBDA:
            continue
        out.append(spec.strip())
    return out


def _pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise BridgeError(f"pip install {' '.join(args[-3:])} failed: {last}")


def build(out: Path, arch: str, python: str, plugins: tuple[str, ...]) -> tuple[int, int]:
    """Write the zip; returns (zipped, unzipped) bytes. Bytecode is included when ``python`` is the
    running interpreter's version (bytecode is per version); else the modules compile at each cold start."""
    if not (ROOT / "setup.cfg").exists():
        raise ConfigError(f"package-lambda builds from the source tree; {ROOT} has no setup.cfg")
    target_flags = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    target_flags += [flag for tag in platforms(arch, python) for flag in ("--platform", tag)]
    with tempfile.TemporaryDirectory(prefix="bridge-lambda-") as tmp:
        site = Path(tmp) / "site"
        needs = requirements(DIST)
        # Our own code is pure Python: built from the tree, with its entry points, and no deps here.
        local = [ROOT]
        for name in plugins:
            path = ROOT / "plugins" / f"ddb-bridge-{name}"
            if path.is_dir():
                local.append(path)
                needs += requirements(f"ddb-bridge-{name}")
            else:
                needs.append(name)
        _pip(["--target", str(site), "--no-deps", "--no-compile", *map(str, local)])
        _pip(["--target", str(site), "--no-compile", *target_flags, *needs])
        for junk in ("bin", "__pycache__"):
            shutil.rmtree(site / junk, ignore_errors=True)
        if python == f"{sys.version_info.major}.{sys.version_info.minor}":
            # /var/task is read-only: without bytecode in the zip every cold start compiles every module
            # (about 0.7 s more, measured). Unchecked hashes: valid whatever the files' times in the zip.
            compileall.compile_dir(
                site, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, workers=0
            )
        return _zip(site, out)


def _zip(site: Path, out: Path) -> tuple[int, int]:
    unzipped = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(site.rglob("*")):
            if path.is_dir():
                continue
            info = zipfile.ZipInfo.from_file(path, path.relative_to(site).as_posix())
            info.external_attr = 0o644 << 16  # Lambda runs as another user: every file readable
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
            unzipped += path.stat().st_size
    return os.path.getsize(out), unzipped


@click.command("package-lambda")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="zip to write")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default="x86_64", show_default=True)
@click.option(
    "--python",
    "python",
    default=f"{sys.version_info.major}.{sys.version_info.minor}",
    show_default="the running interpreter's",
    help="Lambda runtime's Python version, e.g. 3.12",
)
@click.option("--with-plugin", "plugins", multiple=True, help="add a transport plugin (repeatable), e.g. redis")
@handled
def package_lambda(out: Path, arch: str, python: str, plugins: tuple[str, ...]) -> None:
    """Build the Lambda deployment zip of bridge.serverless (handlers and dependencies)."""
    zipped, unzipped = build(out, arch, python, plugins)
    click.echo(f"wrote {out}: {zipped / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped ({arch}, Python {python})")
    if zipped > MAX_ZIPPED or unzipped > MAX_UNZIPPED:
        raise BridgeError(
            f"{out} is over Lambda's limits (50 MB zipped, 250 MB unzipped): upload it through S3 as a layer"
            " split, or drop plugins"
        )
    click.echo("handlers: bridge.serverless.publish_handler, bridge.serverless.apply_handler")
