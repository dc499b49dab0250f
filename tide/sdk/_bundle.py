"""Content-addressed code bundles: what ``tide deploy`` uploads and noded runs.

A bundle is an uncompressed tar whose bytes depend only on the files' relative paths, contents
and executable bits: entries sorted by path, regular files only, mtime 0, owner 0:0 with no
names, mode 0644 or 0755, GNU format.  Its id is the SHA-256 of those bytes, so the same code
gives the same id on any machine (no compressor version in the way) and re-deploying unchanged
code is a no-op.

A directory is packed whole (less caches and virtualenvs); a single file is packed with the
local modules it imports (siblings, followed transitively), as Modal and Flash do.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

import msgspec

from tide.api.bundles import MAX_BUNDLE_BYTES

__all__ = ["MAX_BUNDLE_BYTES", "Bundle", "bundle_files", "pack"]

# Never packed: caches, VCS metadata, virtualenvs.  `.env` files are packed like any file (a
# secret belongs in `secrets=`, but silently dropping one is the surprise users complain of).
_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "node_modules",
    }
)
_SKIP_SUFFIXES = (".pyc", ".pyo")


class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    sha256: str
    data: bytes
    files: list[str]  # relative paths, sorted


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath, name)
            if not name.endswith(_SKIP_SUFFIXES) and p.is_file() and not p.is_symlink():
                yield p


def _local_modules(path: Path, root: Path) -> set[Path]:
    """Files of the modules and packages under ``root`` that ``path`` imports (top-level names)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return set()  # packed as is; the canary's import reports the error
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    found: set[Path] = set()
    for name in names:
        if (root / name / "__init__.py").is_file() or (root / name).is_dir():
            found.update(_walk(root / name))
        elif (root / f"{name}.py").is_file():
            found.add(root / f"{name}.py")
    return found


def bundle_files(target: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The root directory and the files a bundle of ``target`` (a .py file or a directory) holds."""
    t = Path(target).resolve()
    if t.is_dir():
        return t, sorted(_walk(t))
    if not t.is_file() or t.suffix != ".py":
        raise ValueError(f"{target}: give a Python file (app.py) or a directory holding it")
    root, todo, seen = t.parent, [t], {t}
    while todo:
        for dep in _local_modules(todo.pop(), root) - seen:
            seen.add(dep)
            if dep.suffix == ".py":
                todo.append(dep)
    return root, sorted(seen)


def pack(root: Path, files: Iterable[Path], *, limit: int = MAX_BUNDLE_BYTES) -> Bundle:
    """The deterministic tar of ``files`` (paths under ``root``) and its SHA-256."""
    rel = sorted({p.relative_to(root).as_posix() for p in files})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in rel:
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if os.access(root / name, os.X_OK) else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
            if buf.tell() > limit:
                raise ValueError(
                    f"the bundle is over {limit >> 20} MiB at {name}: keep weights and data out of the "
                    "code directory (load them at start-up, e.g. from a volume or the model cache)"
                )
    data = buf.getvalue()
    return Bundle(sha256=hashlib.sha256(data).hexdigest(), data=data, files=rel)
