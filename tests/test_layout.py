"""The house has no arrow back up: data and models know nothing of the checks, the training run
or the sweep, and the sweep knows nothing of how a run trains (it reaches a run through Hydra's
launcher and the contract alone)."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "cifar_sweep"
# for each folder: the cifar_sweep modules it must never import
NEVER = {
    "data": ("cifar_sweep.checks", "cifar_sweep.train", "cifar_sweep.sweep", "cifar_sweep.models"),
    "models": ("cifar_sweep.checks", "cifar_sweep.train", "cifar_sweep.sweep", "cifar_sweep.data"),
    "sweep": ("cifar_sweep.train", "cifar_sweep.classifier", "cifar_sweep.data.datamodule"),
    "trackers": ("cifar_sweep.train", "cifar_sweep.classifier", "cifar_sweep.data"),
}


def imported(path: Path) -> list[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("folder", sorted(NEVER))
def test_a_lower_room_never_imports_a_higher_one(folder: str):
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((PACKAGE / folder).glob("*.py"))
        for name in imported(path)
        if name.startswith(NEVER[folder])
    ]
    assert wrong == []


def test_the_readme_code_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    code_map = readme[readme.index("## Code map") : readme.index("## Using it")]
    modules = [
        p for p in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks" / "campaign").glob("*.py")]
        if not p.name.startswith("__")
    ]  # fmt: skip
    missing = [
        str(p.relative_to(ROOT))
        for p in modules
        if f"`{p.stem}`" not in code_map and f"{p.stem}.py" not in code_map
    ]
    assert missing == []
