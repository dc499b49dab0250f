"""Generate containerd's gRPC stubs into ``noded/runtime/containerd/_gen/`` (ignored by git).

    python -m noded.runtime.containerd.gen_protos [--proto-root /usr/share/gocode/src] [--force]

Inputs are the ``.proto`` files of Debian's ``golang-github-containerd-containerd-dev``
(containerd's API plus the runc shim options); the tool is grpcio-tools.  The
files are copied under the path ``noded/runtime/containerd/_gen/...`` so the generated
modules import each other as ``noded.runtime.containerd._gen...`` (no top-level
``containerd`` package to clash with anything).  The gogoproto and fieldpath
options only steer Go code generation, so they are stripped rather than
shipped: that keeps ``gogoproto.*`` symbols out of protobuf's global pool,
where another library's copy would collide.  Wire names are untouched (the
``package`` lines stay), so ``/containerd.services.tasks.v1.Tasks/Create`` is
what goes on the wire.

Idempotent: a stamp of the inputs and the grpcio-tools version makes a second
run a no-op; ``--force`` regenerates.  Introspection is left out: it needs
``google/rpc/status.proto``, which is not ours to ship.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = "/usr/share/gocode/src"
CTRD = "github.com/containerd/containerd"
# The API files noded uses, relative to CTRD.
PROTOS = [
    *(f"api/types/{n}.proto" for n in ("descriptor", "metrics", "mount", "platform")),
    "api/types/task/task.proto",
    *(
        f"api/services/{n}/v1/{f}.proto"
        for n, f in (
            ("containers", "containers"),
            ("content", "content"),
            ("diff", "diff"),
            ("events", "events"),
            ("images", "images"),
            ("leases", "leases"),
            ("namespaces", "namespace"),
            ("snapshots", "snapshots"),
            ("tasks", "tasks"),
            ("version", "version"),
        )
    ),
    *(f"api/events/{n}.proto" for n in ("container", "content", "image", "namespace", "snapshot", "task")),
    "runtime/v2/runc/options/oci.proto",
]
GEN_PACKAGE = "noded/runtime/containerd/_gen"
OUT_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the noded package

_WEAK_IMPORT = re.compile(r'^\s*import\s+weak\s+"[^"]+";\s*$', re.M)
_GO_OPTION = re.compile(r"^\s*option\s+\((?:gogoproto|containerd\.plugin)\.[^;]*;\s*$", re.M)
_GO_FIELD_OPTIONS = re.compile(r"\s*\[\((?:gogoproto|containerd\.plugin)\.[^\]]*\]")
_GO_PACKAGE = re.compile(r"^\s*option\s+go_package\s*=[^;]*;\s*$", re.M)


class ProtoGenError(RuntimeError):
    """The inputs or the tool are missing."""


def rewrite(text: str) -> str:
    """Pure: strip Go-only options and point imports at our package path."""
    text = _WEAK_IMPORT.sub("", text)
    text = _GO_OPTION.sub("", text)
    text = _GO_FIELD_OPTIONS.sub("", text)
    text = _GO_PACKAGE.sub("", text)
    return text.replace(f'"{CTRD}/', f'"{GEN_PACKAGE}/')


def _stamp(proto_root: Path) -> str:
    h = hashlib.sha256(importlib.metadata.version("grpcio-tools").encode())
    h.update(Path(__file__).read_bytes())
    for rel in PROTOS:
        h.update((proto_root / CTRD / rel).read_bytes())
    return h.hexdigest()


def generate(proto_root: Path, *, force: bool = False) -> Path:
    """Generate the stubs (unless the stamp says they are current); return the _gen dir."""
    gen = OUT_ROOT / GEN_PACKAGE
    missing = [rel for rel in PROTOS if not (proto_root / CTRD / rel).is_file()]
    if missing:
        raise ProtoGenError(
            f"gen_protos: {len(missing)} .proto files missing under {proto_root}/{CTRD} "
            f"(first: {missing[0]}); install golang-github-containerd-containerd-dev"
        )
    stamp = _stamp(proto_root)
    if not force and (gen / "STAMP").is_file() and (gen / "STAMP").read_text() == stamp:
        return gen
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise ProtoGenError("gen_protos: grpcio-tools is not installed (pip install grpcio-tools)")
    well_known = Path(spec.origin).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        for rel in PROTOS:
            dst = src / GEN_PACKAGE / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(rewrite((proto_root / CTRD / rel).read_text()))
        out.mkdir()
        files = [str(Path(GEN_PACKAGE) / rel) for rel in PROTOS]
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"-I{well_known}"]
        cmd += [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
        subprocess.run(cmd, check=True, cwd=src)
        built = out / GEN_PACKAGE
        for d in [built, *(p for p in built.rglob("*") if p.is_dir())]:
            (d / "__init__.py").touch()
        (built / "STAMP").write_text(stamp)
        _replace_dir(built, gen)
    return gen


def _replace_dir(new: Path, old: Path) -> None:
    # Move the fresh tree next to the old one, then swap, so a reader never sees half a tree.
    staging = old.with_name(f".{old.name}.new.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(new, staging)
    trash = old.with_name(f".{old.name}.old.{os.getpid()}")
    if old.exists():
        old.rename(trash)
    staging.rename(old)
    shutil.rmtree(trash, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--proto-root", default=PROTO_ROOT, type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(generate(args.proto_root, force=args.force))
    except ProtoGenError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
