"""Every package's public surface is its ``__all__`` (httpx's tests/test_exported_members.py).

The packages are discovered, not listed: every package under the root packages that
pyproject.toml's import-linter section names, so moving or adding one needs no edit here.
For each: ``__all__`` has no duplicates (ruff's RUF022 keeps it sorted), every name in it
resolves (lazy ``__getattr__`` names included), and every public name the ``__init__`` defines
or imports from its own modules is in it.  A package without ``__all__`` defines no public names.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
    "root_packages"
]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _packages() -> list[str]:
    """Every package under the roots; private ones (``noded.runtime.containerd._gen``) export nothing."""
    found: list[str] = []
    for root in ROOTS:
        package = importlib.import_module(root)
        found.append(root)
        found += [m.name for m in pkgutil.walk_packages(package.__path__, f"{root}.") if m.ispkg]
    return sorted(name for name in found if not any(_is_private(part) for part in name.split(".")))


def _assigned(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(_assigned(t) for t in target.elts))
    return set()


def _from_inside(node: ast.ImportFrom, package: str) -> bool:
    return node.level > 0 or (node.module or "").startswith(f"{package}.")


def _defined_public_names(package: ModuleType) -> set[str]:
    """Names bound at the top level of ``__init__``: definitions, assignments and imports from the
    package's own modules.  Names it imports from elsewhere for its own use (``typing.Any``,
    ``tide.api.errors.InvalidArgument``) are not exports; names imported under
    ``if TYPE_CHECKING:`` are lazy exports, which the resolve check covers."""
    assert package.__file__ is not None
    names: set[str] = set()
    for node in ast.parse(Path(package.__file__).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= set().union(*(_assigned(t) for t in node.targets))
        elif isinstance(node, ast.AnnAssign):
            names |= _assigned(node.target)
        elif isinstance(node, ast.ImportFrom) and _from_inside(node, package.__name__):
            names |= {alias.asname or alias.name for alias in node.names}
    return {name for name in names if not name.startswith("_")}


PACKAGES = _packages()


def test_discovers_every_root_package() -> None:
    assert set(ROOTS) <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_members(name: str) -> None:
    package = importlib.import_module(name)
    defined = _defined_public_names(package)
    exported: list[str] | None = getattr(package, "__all__", None)
    if exported is None:
        assert not defined, f"{name} defines public names without an __all__: {sorted(defined)}"
        return
    duplicates = sorted({n for n in exported if exported.count(n) > 1})
    assert not duplicates, f"{name}.__all__ lists these twice: {duplicates}"
    missing = [n for n in exported if not hasattr(package, n)]
    assert not missing, f"{name}.__all__ names what the package does not have: {missing}"
    unlisted = sorted(defined - set(exported))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"
