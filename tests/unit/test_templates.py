"""deploy/aws: every CloudFormation template passes cfn-lint, and says what the handlers expect.

cfn-lint checks every property of plain AWS::Lambda::EventSourceMapping resources (a SAM transform would
hide them). On top, the templates are checked against the code: the handler names exist, every
BRIDGE_* variable is a setting of the function's config model, and each stream mapping has the
contract the handlers are written for (partial batch responses, bisect, an on-failure destination).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import ApplyConfig, PublishConfig

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "deploy" / "aws").glob("*.yaml"))


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tag)


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)  # type: ignore[no-any-return]


def resources(kind: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in TEMPLATES:
        for name, res in load(path)["Resources"].items():
            if res["Type"] == kind:
                found.append((f"{path.name}:{name}", res["Properties"]))
    return found


def test_there_are_a_source_and_a_target_template() -> None:
    assert {p.name for p in TEMPLATES} == {"source-stack.yaml", "target-stack.yaml"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_passes(path: Path) -> None:
    # cfn-lint's own entry point, run as its console script does (the package has no __main__)
    code = "import sys; from cfnlint.runner import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "name,props", resources("AWS::Lambda::Function"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_functions_name_real_handlers_and_real_settings(name: str, props: dict[str, Any]) -> None:
    module, _, attr = props["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), attr))
    model = PublishConfig if attr == "publish_handler" else ApplyConfig
    variables = props["Environment"]["Variables"]
    settings = {k.removeprefix("BRIDGE_").lower() for k in variables if k.startswith("BRIDGE_")} - {"disable_plugins"}
    assert settings <= set(model.model_fields), (
        f"{name}: not settings of {model.__name__}: {settings - set(model.model_fields)}"
    )
    assert variables["BRIDGE_QUARANTINE_DIR"].startswith("/tmp/")  # the only writable place in Lambda


@pytest.mark.parametrize(
    "name,props", resources("AWS::Lambda::EventSourceMapping"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_mappings_report_partial_failures(name: str, props: dict[str, Any]) -> None:
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    if "StartingPosition" in props:  # a stream, not a queue
        assert props["BisectBatchOnFunctionError"] is True
        assert props["StartingPosition"] == "TRIM_HORIZON"
        assert "OnFailure" in props["DestinationConfig"]
        for key in ("ParallelizationFactor", "MaximumRetryAttempts", "MaximumRecordAgeInSeconds"):
            assert key in props, f"{name}: {key}"
