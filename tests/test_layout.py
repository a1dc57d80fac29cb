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
