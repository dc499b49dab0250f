"""No import cycles inside any of our packages, lazy (function-level) imports included.

A cycle is what the house keeps out by direction of ownership (the view fires a subscription
the cold-start tracker listens to; the store publishes a T1 segment): once two modules import
each other, neither can be read, tested or moved alone.  The packages are discovered from
pyproject.toml's import-linter roots, like tests/test_exported_members.py, so a new module is
covered without an edit here.  import-linter's layers contracts order the subpackages; this
covers the modules inside one package too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
    "root_packages"
]


def _cycles(graph: grimp.ImportGraph, root: str) -> list[tuple[str, str]]:
    """Each direct import (a -> b) inside ``root`` that b imports back, directly or not."""
    inside = sorted(m for m in graph.modules if m == root or m.startswith(root + "."))
    return [
        (module, imported)
        for module in inside
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if (imported == root or imported.startswith(root + "."))
        and graph.chain_exists(importer=imported, imported=module)
    ]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOTS)


@pytest.mark.parametrize("root", ROOTS)
def test_no_import_cycle_inside(graph: grimp.ImportGraph, root: str) -> None:
    cycles = _cycles(graph, root)
    assert not cycles, f"modules of {root} that import each other (break it by ownership): {cycles}"
