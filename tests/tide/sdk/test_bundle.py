"""Bundles are content-addressed: the same files give the same bytes, whatever order they were
written in, their mtimes or the directory they sit in; any content change changes the id."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tide.sdk import bundle_files, pack

_names = st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?\.py", fullmatch=True)
_trees = st.dictionaries(_names, st.binary(max_size=64), min_size=1, max_size=6)


def _write(root: Path, files: dict[str, bytes], order: list[str], mtime: int) -> None:
    for name in order:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[name])
        os.utime(p, (mtime, mtime))


def _clean(root: Path) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()


@settings(max_examples=40, deadline=None)
@given(files=_trees, seed=st.randoms(use_true_random=False), mtime=st.integers(0, 2**31))
def test_same_files_same_bundle(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], seed, mtime
) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    order = sorted(files)
    _write(a, files, order, 0)
    seed.shuffle(order)
    _write(b, files, order, mtime)
    one, two = pack(*bundle_files(a)), pack(*bundle_files(b))
    assert one.sha256 == two.sha256 and one.data == two.data
    assert one.sha256 == hashlib.sha256(one.data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(one.data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(files)
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" and m.isfile() for m in members)
    name = sorted(files)[0]
    (b / name).write_bytes(files[name] + b"#")
    assert pack(*bundle_files(b)).sha256 != one.sha256


def test_a_file_brings_the_local_modules_it_imports(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import helpers\nfrom pkg.sub import x\nimport json\n")
    (tmp_path / "helpers.py").write_text("import more\n")
    (tmp_path / "more.py").write_text("")
    (tmp_path / "unrelated.py").write_text("")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "sub.cpython-311.pyc").write_bytes(b"\0")
    root, files = bundle_files(tmp_path / "app.py")
    assert pack(root, files).files == ["app.py", "helpers.py", "more.py", "pkg/__init__.py", "pkg/sub.py"]


def test_over_the_limit_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="keep weights and data out"):
        pack(*bundle_files(tmp_path), limit=1024)
