"""The import graph: the layers of pyproject.toml's `[tool.importlinter]` contracts hold, and no module of
`outpost` or `sshd` takes part in an import cycle (lazy and TYPE_CHECKING imports count: they only hide one)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]


def ignored_imports() -> frozenset[tuple[str, str]]:
    """The contracts' `ignore_imports` ("a -> b"): the one list of known exceptions, for both checks."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = [line for contract in config["contracts"] for line in contract.get("ignore_imports", [])]
    return frozenset(
        (importer.strip(), imported.strip()) for importer, imported in (line.split("->") for line in lines)
    )


def import_cycle(packages: Iterable[str], ignored: frozenset[tuple[str, str]] = frozenset()) -> list[str] | None:
    """One cycle among the modules of `packages` (as a path that ends where it starts), or None."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    imports = {
        module: {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if (module, imported) not in ignored
        }
        for module in graph.modules
    }
    try:
        TopologicalSorter(imports).prepare()
    except CycleError as error:
        cycle: list[str] = error.args[1]
        return cycle
    return None


def test_the_project_has_no_import_cycle() -> None:
    assert import_cycle(["outpost", "sshd"], ignored_imports()) is None


def test_the_layer_contracts_hold() -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_nothing_below_the_composition_root_imports_it_or_the_ssh_daemon() -> None:
    """Also the leaf modules, which the contracts do not list one by one."""
    graph = grimp.build_graph("outpost", "sshd", cache_dir=None)
    below = {
        module for module in graph.modules if module.startswith("outpost.") and not module.startswith("outpost.cli")
    }
    reaching = {
        f"{importer} -> {imported}"
        for importer in below
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported == "sshd" or imported.startswith(("sshd.", "outpost.cli"))
    }
    assert not reaching


@pytest.mark.parametrize("lazy", [False, True], ids=["top-level", "inside-a-function"])
def test_a_cycle_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool) -> None:
    """The check is not blind: two modules of a tiny package that import each other are a cycle, however late."""
    package = tmp_path / "tinycycle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from tinycycle import second\n")
    second = "def later() -> None:\n    from tinycycle import first\n" if lazy else "from tinycycle import first\n"
    (package / "second.py").write_text(second)
    monkeypatch.syspath_prepend(str(tmp_path))
    cycle = import_cycle(["tinycycle"])
    assert cycle is not None and set(cycle) == {"tinycycle.first", "tinycycle.second"}


def test_an_acyclic_package_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "tinychain"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from tinychain import second\n")
    (package / "second.py").write_text("import json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycle(["tinychain"]) is None
