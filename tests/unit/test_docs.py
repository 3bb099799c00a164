"""Every setting is documented in the README's configuration reference and the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ApplyConfig, PublishConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model,example", [(PublishConfig, "publish"), (ApplyConfig, "apply")])
def test_every_setting_is_documented(model: type, example: str) -> None:
    readme = (ROOT / "README.md").read_text()
    sample = (ROOT / "config" / f"{example}.example.yaml").read_text()
    for name in model.model_fields:
        assert f"`{name}`" in readme, f"{name} is missing from the README's configuration reference"
        assert f"{name}:" in sample, f"{name} is missing from config/{example}.example.yaml"
