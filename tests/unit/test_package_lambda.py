"""``bridge package-lambda`` builds a zip whose handlers import in a bare interpreter from the zip alone.

Needs the package index (pip downloads manylinux wheels for the target); about 20-60 s. The zip is
unpacked and imported with ``python -I -S`` (no site-packages, no user paths, no environment) and only
the zip's contents on ``sys.path``, as Lambda's runtime would see them (x86_64, this Python version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from bridge.cli.admin import main
from bridge.cli.package_lambda import platforms

PROBE = """
import json, sys
sys.path[:] = [sys.argv[1]] + [p for p in sys.path if "site-packages" not in p]
from bridge.serverless import apply_handler, publish_handler
from bridge.plugin.manager import plugin_set
from bridge.errors import ConfigError
try:
    apply_handler({"Records": []}, None)
except ConfigError as exc:
    error = str(exc)
print(json.dumps({
    "schemes": sorted(plugin_set().transports),
    "error": error,
    "outside": sorted({m.__file__ for m in list(sys.modules.values())
                       if getattr(m, "__file__", None) and "site-packages" in m.__file__}),
}))
"""


def test_the_zip_imports_both_handlers_alone(tmp_path: Path) -> None:
    out = tmp_path / "bridge.zip"
    result = CliRunner().invoke(main, ["package-lambda", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MB zipped" in result.output
    root = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        zf.extractall(root)
    assert "bridge/serverless/handlers.py" in names
    # bytecode for this Python: /var/task is read-only, so without it every cold start compiles everything
    assert f"bridge/serverless/__pycache__/handlers.{sys.implementation.cache_tag}.pyc" in names
    keys = [n for n in names if n.endswith(".key") or (n.endswith(".pem") and not n.endswith("cacert.pem"))]
    assert keys == [], "no key material in the package (CA bundles only)"
    assert not any(n.startswith(("click/", "rich/", "moto/")) for n in names)
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(root)], capture_output=True, text=True, check=False, env={}
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert {"amqp", "kinesis", "sqs"} <= set(found["schemes"])  # entry points from the zip's metadata
    assert "target_table" in found["error"]  # pydantic's compiled core from the manylinux wheel runs
    assert found["outside"] == []


def test_platform_tags_follow_the_runtime_glibc() -> None:
    assert platforms("arm64", "3.11") == ["manylinux2014_aarch64", "manylinux_2_17_aarch64"]
    assert "manylinux_2_28_x86_64" in platforms("x86_64", "3.12")
