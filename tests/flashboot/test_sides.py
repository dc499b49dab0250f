"""The tree says who runs what: ``flashboot/host/`` (noded), ``flashboot/worker/`` (inside the
worker), and the format both share at the package root.  import-linter holds the two sides apart
(pyproject.toml); this holds the root below both (tests/test_import_cycles.py keeps every
package, flashboot included, free of import cycles)."""

from __future__ import annotations

import grimp
import pytest

SIDES = ("flashboot.host", "flashboot.worker")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("flashboot")


def test_the_shared_root_imports_neither_side(graph: grimp.ImportGraph) -> None:
    shared = sorted(graph.find_children("flashboot") - set(SIDES))
    assert shared, "the package root holds the shared format"
    offenders = [
        (module, side)
        for module in shared
        for side in SIDES
        if graph.chain_exists(importer=module, imported=side, as_packages=True)
    ]
    assert not offenders
