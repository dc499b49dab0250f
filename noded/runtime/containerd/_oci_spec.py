"""The OCI runtime spec of a worker container, built by us (pure).

Choices, and why:

* **Network: the host's by default.**  Workers must reach the coordinator and
  noded on loopback and serve nothing to the outside, so a network namespace
  would buy isolation we do not need at the price of a CNI setup.  ``"none"``
  gives a fresh namespace with no interfaces up (for offline batch workers).
  With the host network, the host's /etc/hosts and /etc/resolv.conf are bound
  read-only.
* Fresh pid, ipc, uts and mount namespaces; hostname = worker id.
* ``noNewPrivileges``; a minimal capability set (``CAPS``: no NET_RAW, MKNOD,
  AUDIT_WRITE, SETFCAP or anything SYS_* but CHROOT); runc's masked and
  read-only /proc and /sys paths; no seccomp profile yet.
* Devices: deny all, then allow exactly the CDI device nodes of the assigned
  GPUs (runc adds the standard /dev/null, zero, full, tty, random, urandom,
  pts, ptmx itself).
* Limits in ``linux.resources``: memory limit, CPU quota over a 100 ms period,
  pids limit; ``cgroupsPath`` = ``<cgroup_parent>/<id>``.
* argv follows Kubernetes: ``command`` replaces the image's Entrypoint and
  ``args`` its Cmd; with ``command`` set and no ``args``, Cmd is dropped.
* env: base < image < spec < CDI < device visibility (an endpoint's env cannot
  widen what a worker sees).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from noded.runtime._common import BASE_ENV, device_env
from noded.runtime._protocol import WorkerSpec
from noded.runtime.containerd._cdi import ContainerEdits, LinuxDevice
from noded.runtime.fastworker import CONTAINER_DIR, INJECT_DIR, inject_env
from tide.api.errors import InvalidArgument

__all__ = ["CAPS", "plan_oci_spec"]

CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
]
_MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_CPU_PERIOD_US = 100_000


def _base_mounts(shm_bytes: int) -> list[dict[str, Any]]:
    def m(dst: str, typ: str, src: str, *opts: str) -> dict[str, Any]:
        return {"destination": dst, "type": typ, "source": src, "options": list(opts)}

    return [
        m("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        m("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ),
        m("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", f"size={shm_bytes}"),
        m("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        m("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        m("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
    ]


def _bind(source: str, target: str, *, read_only: bool, options: list[str] | None = None) -> dict[str, Any]:
    opts = options if options is not None else ["rbind", "nosuid", "nodev", "ro" if read_only else "rw"]
    return {"destination": target, "type": "bind", "source": source, "options": opts}


def plan_argv(spec: WorkerSpec, image_config: Mapping[str, Any]) -> list[str]:
    entrypoint = list(spec.command) or list(image_config.get("Entrypoint") or [])
    args = list(spec.args) or ([] if spec.command else list(image_config.get("Cmd") or []))
    argv = [*entrypoint, *args]
    if not argv:
        raise InvalidArgument(f"worker {spec.id}: neither the spec nor the image gives a command")
    return argv


def plan_env(
    spec: WorkerSpec, image_config: Mapping[str, Any], edits: ContainerEdits, *, fast_worker: bool = False
) -> list[str]:
    """With ``fast_worker``, the injected fast worker directory leads the image's PYTHONPATH
    unless the env says TIDE_FAST_WORKER=0 (``noded.runtime.fastworker``)."""
    env = dict(BASE_ENV)
    env.update(_split_env(image_config.get("Env") or []))
    env.update(spec.env)
    env.update(_split_env(edits.env))
    env.update(device_env(spec.devices))
    env = inject_env(env, CONTAINER_DIR, node_enabled=fast_worker)
    return [f"{k}={v}" for k, v in env.items()]


def _fast_worker_on(env: list[str]) -> bool:
    """Whether plan_env put the fast worker's directory first on PYTHONPATH."""
    return any(
        e == f"PYTHONPATH={CONTAINER_DIR}" or e.startswith(f"PYTHONPATH={CONTAINER_DIR}:") for e in env
    )


def _split_env(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = value
    return out


def _user(image_config: Mapping[str, Any]) -> dict[str, int]:
    """Numeric ``uid[:gid]`` from the image; names would need the image's /etc/passwd: root then."""
    uid, _, gid = str(image_config.get("User") or "").partition(":")
    if uid.isdigit():
        return {"uid": int(uid), "gid": int(gid) if gid.isdigit() else 0}
    return {"uid": 0, "gid": 0}


def _resources(spec: WorkerSpec, devices: list[LinuxDevice]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    rules += [
        {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": d.permissions}
        for d in devices
    ]
    res: dict[str, Any] = {"devices": rules}
    limits = spec.limits
    if limits.memory_bytes:
        res["memory"] = {"limit": limits.memory_bytes}
    if limits.cpus:
        res["cpu"] = {"quota": int(limits.cpus * _CPU_PERIOD_US), "period": _CPU_PERIOD_US}
    if limits.pids:
        res["pids"] = {"limit": limits.pids}
    return res


def plan_oci_spec(
    spec: WorkerSpec,
    image_config: Mapping[str, Any],
    *,
    edits: ContainerEdits,
    devices: list[LinuxDevice],
    cgroups_path: str,
    network: Literal["host", "none"] = "host",
    host_files: list[str] | None = None,
    shm_bytes: int = 1 << 30,
    fast_worker: bool = False,
) -> dict[str, Any]:
    """Pure: the runtime spec (JSON-ready) for ``spec`` on an image with config ``image_config``.

    ``devices`` are ``edits.device_nodes`` resolved against the host; ``host_files``
    are bound read-only with the host network (/etc/hosts, /etc/resolv.conf that exist).
    With ``fast_worker``, the fast worker's directory is bound read-only at CONTAINER_DIR and
    leads PYTHONPATH (issue 17; the image is unchanged).
    """
    env = plan_env(spec, image_config, edits, fast_worker=fast_worker)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    mounts = _base_mounts(shm_bytes)
    if network == "none":
        namespaces.append({"type": "network"})
    else:
        mounts += [_bind(p, p, read_only=True) for p in host_files or []]
    mounts += [_bind(m.source, m.target, read_only=m.read_only) for m in spec.mounts]
    mounts += [
        _bind(m.host_path, m.container_path, read_only=False, options=m.options or ["rbind", "ro"])
        for m in edits.mounts
    ]
    if _fast_worker_on(env):
        mounts.append(_bind(INJECT_DIR, CONTAINER_DIR, read_only=True))
    process = {
        "terminal": False,
        "user": _user(image_config),
        "args": plan_argv(spec, image_config),
        "env": env,
        "cwd": image_config.get("WorkingDir") or "/",
        "capabilities": {k: list(CAPS) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": True,
    }
    hooks: dict[str, list[dict[str, Any]]] = {}
    for h in edits.hooks:
        entry: dict[str, Any] = {"path": h.path, "args": h.args, "env": h.env}
        if h.timeout is not None:
            entry["timeout"] = h.timeout
        hooks.setdefault(h.hook_name, []).append(entry)
    linux_devices = [_linux_device(d) for d in devices]
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": spec.read_only_rootfs},
        "hostname": spec.id,
        "mounts": mounts,
        "hooks": hooks,
        "linux": {
            "resources": _resources(spec, devices),
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "devices": linux_devices,
            "maskedPaths": list(_MASKED),
            "readonlyPaths": list(_READONLY),
        },
    }


def _linux_device(d: LinuxDevice) -> dict[str, Any]:
    out: dict[str, Any] = {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor}
    for key, value in (("fileMode", d.file_mode), ("uid", d.uid), ("gid", d.gid)):
        if value is not None:
            out[key] = value
    return out
