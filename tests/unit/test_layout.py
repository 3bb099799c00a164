"""The folders are the data path, one direction: this test holds the import rules of docs/design.md.

Every ``import bridge...`` in every module of ``bridge/`` (at the top or inside a function) is checked
against the table below, which says what each package may import. A package's own modules may always
import each other. The table is the one drawn in docs/design.md; a test there keeps the two in step.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"

# The layers from the bottom up; each may import the packages named, and nothing else of ``bridge``.
BASE = {"bridge.errors", "bridge.change", "bridge.observe"}
ALLOWED: dict[str, set[str]] = {
    "bridge.errors": set(),
    "bridge.observe": {"bridge.errors"},
    "bridge.change": {"bridge.errors"},
    "bridge.config": {"bridge.errors"},
    # The stores of the publish side; AWS errors go through the one policy of bridge.aws.
    "bridge.state": {"bridge.errors", "bridge.observe", "bridge.change", "bridge.aws"},
    "bridge.transport": {"bridge.errors", "bridge.observe"},
    "bridge.plugin": {"bridge", "bridge.errors", "bridge.transport"},
    "bridge.envelope": BASE,
    "bridge.aws": {"bridge.errors", "bridge.observe", "bridge.transport"},
    # The plugin manager is built by wiring / the CLI and handed down (an Opener), never fetched.
    "bridge.deadletter": BASE | {"bridge.envelope", "bridge.transport"},
    "bridge.source": BASE | {"bridge.state", "bridge.aws"},
    "bridge.publish": BASE
    | {"bridge.source", "bridge.state", "bridge.envelope", "bridge.transport", "bridge.deadletter", "bridge.aws"},
    "bridge.apply": BASE | {"bridge.envelope", "bridge.transport", "bridge.deadletter", "bridge.aws"},
    "bridge.copy": BASE
    | {
        "bridge.source",
        "bridge.state",
        "bridge.publish",
        "bridge.envelope",
        "bridge.transport",
        "bridge.deadletter",
        "bridge.aws",
    },
    "bridge.testing": {"bridge.errors", "bridge.transport", "bridge.plugin"},
}
PRODUCT = set(ALLOWED)
# Assembly: builds running objects from settings; any product package, never cli, demo or bench.
ALLOWED["bridge.wiring"] = PRODUCT - {"bridge.testing"}
ALLOWED["bridge.serverless"] = ALLOWED["bridge.wiring"] | {"bridge.wiring"}
ALLOWED["bridge"] = {"bridge.plugin"}
# Around the product: free to use it, but the product never uses them.
EVERYTHING = {*ALLOWED, "bridge.demo", "bridge.bench", "bridge.cli"}
ALLOWED["bridge.demo"] = EVERYTHING - {"bridge.cli", "bridge.bench"}
ALLOWED["bridge.bench"] = EVERYTHING
ALLOWED["bridge.cli"] = EVERYTHING


def owner(module: str) -> str:
    """The package (row of the table) a dotted module name belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "bridge"
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def bridge_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bridge"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "bridge":
                continue
            if node.module == "bridge":  # from bridge import x: x may be a module, or a name of bridge itself
                found += [(node.lineno, f"bridge.{a.name}" if is_module(a.name) else "bridge") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def is_module(name: str) -> bool:
    return (BRIDGE / name).is_dir() or (BRIDGE / f"{name}.py").exists()


MODULES = sorted(BRIDGE.rglob("*.py"))


def test_every_package_has_a_row_and_a_docstring() -> None:
    packages = {owner(module_name(p)) for p in MODULES}
    assert packages - set(ALLOWED) == set(), "add the new package to ALLOWED here and to docs/design.md"
    for init in BRIDGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(ROOT)} needs a docstring saying what it holds and what it may import"
        assert "import" in doc.lower() or init.parent.name in {"cli", "bench", "testing"}, (
            f"{init.relative_to(ROOT)}: say what the package may import"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_data_path(path: Path) -> None:
    me = owner(module_name(path))
    allowed = ALLOWED[me] | {me}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({me} may import only {sorted(allowed)})"
        for line, target in bridge_imports(path)
        if owner(target) not in allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_no_top_level_module_left_but_the_shared_ones() -> None:
    """Top-level modules are the types every package shares and the assembly; the rest lives in packages."""
    top = {p.stem for p in BRIDGE.glob("*.py")} - {"__init__"}
    assert top == {"errors", "change", "config", "wiring"}


def test_design_doc_draws_the_same_rules() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    for package in ALLOWED:
        if package == "bridge":
            continue
        name = package.split(".", 1)[1]
        assert re.search(rf"\b{re.escape(name)}\b", design), f"docs/design.md does not mention {package}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bridge_import_names_a_module_that_exists(path: Path) -> None:
    """Imports inside functions run late: a moved module must not leave a stale one behind."""
    missing = []
    for line, target in bridge_imports(path):
        parts = target.split(".")[1:]
        if parts and not (BRIDGE.joinpath(*parts).is_dir() or BRIDGE.joinpath(*parts).with_suffix(".py").exists()):
            missing.append(f"{path.relative_to(ROOT)}:{line} imports {target}, which does not exist")
    assert not missing, "\n".join(missing)
