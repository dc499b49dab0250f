"""GPU injection by CDI spec edits, applied by noded itself (containerd 1.6 has no CDI).

NVIDIA's toolkit writes CDI specs (``nvidia-ctk cdi generate``; regenerate after
every MIG change, reference/mig.md).  noded looks the assigned GPU/MIG UUIDs up
by device name, so generate them with ``--device-name-strategy=uuid`` (names
``GPU-<uuid>`` / ``MIG-<uuid>``); qualified names (``nvidia.com/gpu=GPU-...``)
work too.  The edits of the requested devices plus the common edits of their
specs are merged into the OCI spec: env, device nodes (with cgroup allow
rules), bind mounts and hooks.  Specs are JSON, or YAML when PyYAML is present.

A MIG instance created after the specs were generated is in none of them, so
``device_edits`` can run a refresh command (noded: ``nvidia-ctk cdi generate``
into its own spec dir) once when a device is missing, and read the specs again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import msgspec

from tide.api.errors import FailedPrecondition

__all__ = [
    "CdiSpec",
    "ContainerEdits",
    "LinuxDevice",
    "device_edits",
    "known_devices",
    "load_cdi_specs",
    "plan_cdi_edits",
    "resolve_device_nodes",
]

log = logging.getLogger(__name__)
DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
_REFRESH_LOCK = threading.Lock()  # one refresh at a time; the others then re-read its output


class DeviceNode(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    path: str
    host_path: str = ""
    type: str = ""
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


class CdiMount(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    host_path: str
    container_path: str
    options: list[str] = []
    type: str = ""


class CdiHook(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    hook_name: str
    path: str
    args: list[str] = []
    env: list[str] = []
    timeout: int | None = None


class ContainerEdits(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    env: list[str] = []
    device_nodes: list[DeviceNode] = []
    mounts: list[CdiMount] = []
    hooks: list[CdiHook] = []


class CdiDevice(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    container_edits: ContainerEdits = ContainerEdits()


class CdiSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    cdi_version: str = ""
    kind: str  # "vendor/class", e.g. "nvidia.com/gpu"
    devices: list[CdiDevice] = []
    container_edits: ContainerEdits = ContainerEdits()


class LinuxDevice(msgspec.Struct, frozen=True, kw_only=True):
    """A device node as the OCI spec wants it (type and numbers resolved)."""

    path: str
    type: str
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: str = "rwm"


def load_cdi_specs(dirs: Iterable[str] = DEFAULT_CDI_DIRS) -> list[CdiSpec]:
    """Every readable spec in ``dirs`` (later dirs win on duplicate names, as in CDI)."""
    specs = []
    for d in dirs:
        for path in sorted(Path(d).glob("*")) if os.path.isdir(d) else []:
            try:
                specs.append(msgspec.convert(_load(path), type=CdiSpec))
            except (OSError, ValueError, msgspec.ValidationError) as e:
                log.warning("ignoring CDI spec %s: %s", path, e)
    return specs


def _load(path: Path) -> object:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as e:
            raise ValueError("YAML CDI specs need PyYAML; or generate them with --format=json") from e
        return yaml.safe_load(path.read_text())
    raise ValueError("not a .json/.yaml file")


def plan_cdi_edits(specs: list[CdiSpec], devices: list[str]) -> ContainerEdits:
    """Pure: the merged edits for ``devices``; FailedPrecondition names any device no spec has."""
    env: list[str] = []
    nodes: list[DeviceNode] = []
    mounts: list[CdiMount] = []
    hooks: list[CdiHook] = []
    used: list[CdiSpec] = []
    edit_lists: list[ContainerEdits] = []
    for wanted in devices:
        kind, _, name = wanted.rpartition("=")
        found = _find(specs, kind, name)
        if found is None:
            raise FailedPrecondition(
                f"device {wanted!r} is in no CDI spec; regenerate them "
                "(nvidia-ctk cdi generate --device-name-strategy=uuid) after MIG changes"
            )
        spec, device = found
        if spec not in used:
            used.append(spec)
        edit_lists.append(device.container_edits)
    # Common edits once per spec, after the devices' own.
    for edits in [*edit_lists, *(spec.container_edits for spec in used)]:
        env += edits.env
        nodes += edits.device_nodes
        mounts += edits.mounts
        hooks += edits.hooks
    return ContainerEdits(env=env, device_nodes=_dedupe(nodes), mounts=mounts, hooks=hooks)


def device_edits(
    devices: list[str], dirs: Sequence[str], *, refresh: Sequence[str] = (), simulated: bool = False
) -> ContainerEdits:
    """The merged edits for ``devices`` from the specs in ``dirs``.  Blocking: call it from a thread.

    ``refresh`` (a command) runs when a device is in no spec; ``simulated`` GPUs that no spec
    names get no edits at all (tide dev).  FailedPrecondition names a device still missing.
    """
    specs = load_cdi_specs(dirs)
    if simulated:
        return plan_cdi_edits(specs, known_devices(specs, devices))
    if refresh and known_devices(specs, devices) != devices:
        with _REFRESH_LOCK:
            specs = load_cdi_specs(dirs)  # a concurrent create may have refreshed them already
            if known_devices(specs, devices) != devices:
                _run_refresh(refresh)
                specs = load_cdi_specs(dirs)
    return plan_cdi_edits(specs, devices)


def _run_refresh(cmd: Sequence[str]) -> None:
    log.info("a device is in no CDI spec; regenerating: %s", " ".join(cmd))
    try:
        subprocess.run(list(cmd), check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as e:
        tail = e.stderr.decode(errors="replace").strip()[-300:]
        raise FailedPrecondition(
            f"regenerating the CDI specs failed ({cmd[0]}, exit {e.returncode}): {tail}"
        ) from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FailedPrecondition(f"regenerating the CDI specs failed ({cmd[0]}): {e}") from e


def known_devices(specs: list[CdiSpec], devices: list[str]) -> list[str]:
    """Pure: the ``devices`` some spec names, in order (simulated GPUs have none)."""
    return [d for d in devices if _find(specs, d.rpartition("=")[0], d.rpartition("=")[2]) is not None]


def _find(specs: list[CdiSpec], kind: str, name: str) -> tuple[CdiSpec, CdiDevice] | None:
    hit = None
    for spec in specs:
        if kind and spec.kind != kind:
            continue
        for device in spec.devices:
            if device.name == name:
                hit = (spec, device)  # later specs win
    return hit


def _dedupe(nodes: list[DeviceNode]) -> list[DeviceNode]:
    seen: dict[str, DeviceNode] = {}
    for node in nodes:
        seen.setdefault(node.path, node)
    return list(seen.values())


def resolve_device_nodes(
    nodes: list[DeviceNode], *, stat_fn: Callable[[str], os.stat_result] = os.stat
) -> list[LinuxDevice]:
    """Fill in type and major/minor from the host node when the spec leaves them out."""
    out = []
    for node in nodes:
        kind, major, minor, mode = node.type or "c", node.major, node.minor, node.file_mode
        if major is None or minor is None:  # CDI lets the spec leave them to the host node
            host = node.host_path or node.path
            try:
                st = stat_fn(host)
            except OSError as e:
                raise FailedPrecondition(f"CDI device node {host} is missing on this host: {e}") from e
            kind = node.type or ("b" if stat.S_ISBLK(st.st_mode) else "c")
            major = os.major(st.st_rdev) if major is None else major
            minor = os.minor(st.st_rdev) if minor is None else minor
            mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        out.append(
            LinuxDevice(
                path=node.path,
                type=kind,
                major=major,
                minor=minor,
                file_mode=mode,
                uid=node.uid,
                gid=node.gid,
                permissions=node.permissions or "rwm",
            )
        )
    return out
