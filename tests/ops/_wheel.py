"""Build Tide's wheel offline, for the Ansible tests to install.

``pip wheel`` would need setuptools>=68 (and ``wheel`` on older setuptools) in an
isolated build environment, i.e. the network.  A pure-Python wheel is only a zip
with a dist-info directory, so this writes one from pyproject.toml: the packages
it includes, their data files, the dependencies and the console scripts.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import tomllib
import zipfile
from pathlib import Path

__all__ = ["build_wheel"]

_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _files(root: Path, include: list[str]) -> list[Path]:
    tops = sorted(
        p for p in root.iterdir() if p.is_dir() and any(fnmatch.fnmatch(p.name, i) for i in include)
    )
    out: list[Path] = []
    for top in tops:
        if not (top / "__init__.py").exists():
            continue
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not _SKIP_DIRS & set(rel.parts) and not path.name.endswith(_SKIP_SUFFIXES):
                out.append(path)
    return out


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(root: Path, out_dir: Path, *, marker: str = "") -> Path:
    """``<name>-<version>-py3-none-any.whl`` in ``out_dir``; ``marker`` changes its bytes
    (not its version), to model a rebuilt package."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    dist_info = f"{name}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    if marker:
        metadata.append(f"Summary: build {marker}")
    scripts = "".join(f"{k} = {v}\n" for k, v in project.get("scripts", {}).items())
    meta_files = {
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests.ops\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": f"[console_scripts]\n{scripts}".encode(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _files(root, include):
            arc, data = path.relative_to(root).as_posix(), path.read_bytes()
            zf.writestr(arc, data)
            record.append(_record_line(arc, data))
        for arc, data in meta_files.items():
            zf.writestr(arc, data)
            record.append(_record_line(arc, data))
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel
